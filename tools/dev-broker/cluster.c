/* cluster.c - the dev-broker's mock cluster: brokers, DESIGN.md's topics, fault controls. */
#include "devbroker.h"
#include "kafka.h"
#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DESIGN.md, "Topics and schemas". */
static const struct {
        const char *name;
        int partitions;
} topics[] = {
    {"plays.v1", 24},
    {"plays.dlq.v1", 3},
    {"tracks.v1", 6},
    {"analysis.tasks.v1", 12},
    {"analysis.tasks.retry.v1", 12},
    {"analysis.tasks.dlq.v1", 3},
    {"analysis.results.v1", 6},
    {"playlists.requests.v1", 24},
    {"playlists.generated.v1", 6},
    {"automation.commands.v1", 3},
};

/* The hosting handle has no bootstrap.servers on purpose; its warning about
 * that is noise. Everything else goes to the JSON log. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
        if (strcmp(fac, "CONFWARN") != 0)
                qz_kafka_log_cb(rk, level, fac, buf);
}

/* "127.0.0.1:1234,127.0.0.1:1235" -> host[]/port[]; brokers are listed in id order. */
static int parse_bootstraps(struct db_cluster *c, char *errstr, size_t errstr_size)
{
        const char *s = c->bootstraps;
        for (int i = 0; i < c->nbrokers; i++) {
                const char *end = strchr(s, ',');
                size_t len = end ? (size_t)(end - s) : strlen(s);
                const char *colon = memrchr(s, ':', len);
                if (!colon || (size_t)(colon - s) >= sizeof(c->host[i])) {
                        snprintf(errstr, errstr_size, "unexpected mock bootstraps '%s'",
                                 c->bootstraps);
                        return -1;
                }
                memcpy(c->host[i], s, (size_t)(colon - s));
                c->host[i][colon - s] = '\0';
                c->port[i] = atoi(colon + 1);
                c->up[i] = true;
                if (!end && i + 1 < c->nbrokers) {
                        snprintf(errstr, errstr_size, "mock bootstraps '%s' lists %d brokers",
                                 c->bootstraps, i + 1);
                        return -1;
                }
                s = end ? end + 1 : s + len;
        }
        return 0;
}

int db_cluster_start(struct db_cluster *c, int nbrokers, char *errstr, size_t errstr_size)
{
        rd_kafka_conf_t *conf = NULL;
        char rderr[256];

        memset(c, 0, sizeof(*c));
        if (nbrokers < 1 || nbrokers > DB_MAX_BROKERS) {
                snprintf(errstr, errstr_size, "broker count %d out of range 1..%d", nbrokers,
                         DB_MAX_BROKERS);
                return -1;
        }
        c->nbrokers = nbrokers;
        conf = rd_kafka_conf_new();
        /* The handle only hosts the mock cluster; it never connects anywhere. */
        if (rd_kafka_conf_set(conf, "client.id", "dev-broker", rderr, sizeof(rderr)) !=
            RD_KAFKA_CONF_OK) {
                snprintf(errstr, errstr_size, "%s", rderr);
                goto fail;
        }
        rd_kafka_conf_set_log_cb(conf, log_cb);
        c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, rderr, sizeof(rderr));
        if (!c->rk) {
                snprintf(errstr, errstr_size, "rd_kafka_new: %s", rderr);
                goto fail;
        }
        conf = NULL; /* now owned by rk */
        c->mc = rd_kafka_mock_cluster_new(c->rk, nbrokers);
        if (!c->mc) {
                snprintf(errstr, errstr_size, "rd_kafka_mock_cluster_new failed");
                goto fail;
        }
        snprintf(c->bootstraps, sizeof(c->bootstraps), "%s",
                 rd_kafka_mock_cluster_bootstraps(c->mc));
        if (parse_bootstraps(c, errstr, errstr_size) != 0)
                goto fail;
        for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
                rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
                    c->mc, topics[i].name, topics[i].partitions, nbrokers < 3 ? nbrokers : 3);
                if (err) {
                        snprintf(errstr, errstr_size, "create topic %s: %s", topics[i].name,
                                 rd_kafka_err2str(err));
                        goto fail;
                }
        }
        return 0;
fail:
        if (conf)
                rd_kafka_conf_destroy(conf);
        db_cluster_stop(c);
        return -1;
}

int db_cluster_target(const struct db_cluster *c, const char **host, int *port)
{
        for (int i = 0; i < c->nbrokers; i++) {
                if (c->up[i]) {
                        *host = c->host[i];
                        *port = c->port[i];
                        return 0;
                }
        }
        return -1;
}

void db_cluster_stop(struct db_cluster *c)
{
        if (c->mc)
                rd_kafka_mock_cluster_destroy(c->mc);
        c->mc = NULL;
        if (c->rk)
                rd_kafka_destroy(c->rk);
        c->rk = NULL;
}

/* Parses a decimal int in [min, max]; -1 on anything else. */
static int parse_int(const char *s, long min, long max, long *out)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max)
                return -1;
        *out = v;
        return 0;
}

void db_control_exec(struct db_cluster *c, const char *line, char *reply, size_t reply_size)
{
        char cmd[32] = "", a[256] = "", b[32] = "", d[32] = "", extra[2] = "";
        long broker, partition, ms;
        rd_kafka_resp_err_t err;
        int n = sscanf(line, "%31s %255s %31s %31s %1s", cmd, a, b, d, extra);

        if (n >= 1 && strcmp(cmd, "ping") == 0 && n == 1) {
                snprintf(reply, reply_size, "ok");
                return;
        }
        if ((strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) && n == 2) {
                if (parse_int(a, 1, c->nbrokers, &broker) != 0)
                        goto bad_broker;
                bool up = strcmp(cmd, "up") == 0;
                err = up ? rd_kafka_mock_broker_set_up(c->mc, (int32_t)broker)
                         : rd_kafka_mock_broker_set_down(c->mc, (int32_t)broker);
                if (err)
                        goto rd_error;
                c->up[broker - 1] = up;
                qz_log_kv(QZ_LOG_INFO, up ? "broker up" : "broker down", "broker", a, NULL);
                snprintf(reply, reply_size, "ok");
                return;
        }
        if (strcmp(cmd, "leader") == 0 && n == 4) {
                if (parse_int(b, 0, INT32_MAX, &partition) != 0) {
                        snprintf(reply, reply_size, "error: bad partition '%s'", b);
                        return;
                }
                if (parse_int(d, 1, c->nbrokers, &broker) != 0) {
                        snprintf(a, sizeof(a), "%s", d);
                        goto bad_broker;
                }
                err = rd_kafka_mock_partition_set_leader(c->mc, a, (int32_t)partition,
                                                         (int32_t)broker);
                if (err)
                        goto rd_error;
                qz_log_kv(QZ_LOG_INFO, "leader moved", "topic", a, "partition", b, "broker", d,
                          NULL);
                snprintf(reply, reply_size, "ok");
                return;
        }
        if (strcmp(cmd, "rtt") == 0 && n == 3) {
                if (parse_int(a, 1, c->nbrokers, &broker) != 0)
                        goto bad_broker;
                if (parse_int(b, 0, 600000, &ms) != 0) {
                        snprintf(reply, reply_size, "error: bad rtt '%s' (0..600000 ms)", b);
                        return;
                }
                err = rd_kafka_mock_broker_set_rtt(c->mc, (int32_t)broker, (int)ms);
                if (err)
                        goto rd_error;
                qz_log_kv(QZ_LOG_INFO, "broker rtt set", "broker", a, "rtt_ms", b, NULL);
                snprintf(reply, reply_size, "ok");
                return;
        }
        snprintf(reply, reply_size,
                 "error: unknown command (down B | up B | leader TOPIC PARTITION B | rtt B MS | "
                 "ping)");
        return;
bad_broker:
        snprintf(reply, reply_size, "error: bad broker '%s' (1..%d)", a, c->nbrokers);
        return;
rd_error:
        snprintf(reply, reply_size, "error: %s", rd_kafka_err2str(err));
}
