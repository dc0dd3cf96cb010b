/* devbroker.h - the dev-broker's parts: the mock cluster, the bootstrap forwarder, the control
 * port.
 *
 * Everything runs on the main thread's poll() loop except the mock cluster,
 * which librdkafka runs on its own thread (its control functions are
 * thread-safe). Each part owns its sockets and frees them in its _free(). */
#ifndef QZ_DEVBROKER_H
#define QZ_DEVBROKER_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#define DB_MAX_BROKERS 8

/* The mock cluster plus what the dev-broker remembers about it (brokers' ids
 * are 1..nbrokers; the mock has no "is up" getter, so up[] mirrors control). */
struct db_cluster {
        rd_kafka_t *rk; /* owns the mock cluster */
        rd_kafka_mock_cluster_t *mc;
        int nbrokers;
        char bootstraps[512];
        char host[DB_MAX_BROKERS][64];
        int port[DB_MAX_BROKERS];
        bool up[DB_MAX_BROKERS];
};

int db_cluster_start(struct db_cluster *c, int nbrokers, char *errstr, size_t errstr_size);
/* The address new bootstrap connections go to: the first broker marked up. */
int db_cluster_target(const struct db_cluster *c, const char **host, int *port);
void db_cluster_stop(struct db_cluster *c);

/* Executes one control line ("down 2", "leader plays.v1 0 3", ...) and writes
 * "ok" or "error: ..." (no newline) into reply. */
void db_control_exec(struct db_cluster *c, const char *line, char *reply, size_t reply_size);

/* Listening socket on host:port (SO_REUSEADDR, non-blocking). -1 on error. */
int db_listen(const char *host, int port, char *errstr, size_t errstr_size);

/* A poll() participant: fill() appends its pollfds, handle() reacts to the
 * revents of exactly the slots it filled (same order). */
struct db_proxy;
int db_proxy_new(int listen_fd, struct db_cluster *c, struct db_proxy **out);
size_t db_proxy_fill(struct db_proxy *p, struct pollfd *pfds, size_t max);
void db_proxy_handle(struct db_proxy *p, const struct pollfd *pfds, size_t n);
void db_proxy_free(struct db_proxy *p);

struct db_control;
int db_control_new(int listen_fd, struct db_cluster *c, struct db_control **out);
size_t db_control_fill(struct db_control *ctl, struct pollfd *pfds, size_t max);
void db_control_handle(struct db_control *ctl, const struct pollfd *pfds, size_t n);
void db_control_free(struct db_control *ctl);

#endif
