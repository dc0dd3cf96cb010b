/* service.h - what every service's main() shares: common settings, start-up, the "up" line.
 *
 * A service's config table starts with the QZ_SERVICE_CFG_* rows it needs
 * (they fill a struct qz_service_cfg), then its own rows, then QZ_CFG_END.
 * main() calls qz_service_init() (help, config, logging, signals), builds its
 * modules, and starts its HTTP server with qz_service_http_start(), which logs
 * the one "up" line with the version and the bound address. */
#ifndef QZ_SERVICE_H
#define QZ_SERVICE_H

#include "cfg.h"
#include "http.h"
#include "log.h"

#define QZ_DEFAULT_BROKERS   "127.0.0.1:59092"
#define QZ_DEFAULT_PG_DSN    "postgresql://qoqnuz:qoqnuz@127.0.0.1:55432/qoqnuz"
#define QZ_DEFAULT_REDIS_URL "redis://127.0.0.1:56379/0"

/* The settings shared by the services (DESIGN.md, "Configuration"). */
struct qz_service_cfg {
        struct qz_addr http_addr;
        const char *brokers;
        const char *pg_dsn;
        struct qz_redis_url redis;
        const char *schema_dir;
        enum qz_log_level log_level;
};

#define QZ_SERVICE_CFG_HTTP(c, addr)                                                               \
        {                                                                                          \
                "QOQNUZ_HTTP_ADDR", QZ_CFG_ADDR, addr, 0, 0, &(c).http_addr,                       \
                    "listen address: the service's API, /healthz, /readyz, /metrics"               \
        }
#define QZ_SERVICE_CFG_KAFKA(c)                                                                    \
        {                                                                                          \
                "QOQNUZ_KAFKA_BROKERS", QZ_CFG_STR, QZ_DEFAULT_BROKERS, 0, 0, &(c).brokers,        \
                    "Kafka bootstrap servers"                                                      \
        }
#define QZ_SERVICE_CFG_PG(c)                                                                       \
        {                                                                                          \
                "QOQNUZ_PG_DSN", QZ_CFG_PG_DSN, QZ_DEFAULT_PG_DSN, 0, 0, &(c).pg_dsn,              \
                    "Postgres connection string"                                                   \
        }
#define QZ_SERVICE_CFG_REDIS(c)                                                                    \
        {                                                                                          \
                "QOQNUZ_REDIS_URL", QZ_CFG_REDIS, QZ_DEFAULT_REDIS_URL, 0, 0, &(c).redis,          \
                    "Redis, redis://[:password@]host[:port][/db]"                                  \
        }
/* Schema folder and log level: every service has both. */
#define QZ_SERVICE_CFG_BASE(c)                                                                     \
        {                                                                                          \
            "QOQNUZ_SCHEMA_DIR", QZ_CFG_STR,           "schemas", 0, 0,                            \
            &(c).schema_dir,     "Avro schemas folder"},                                           \
        {                                                                                          \
                "QOQNUZ_LOG_LEVEL", QZ_CFG_LOGLEVEL, "info", 0, 0, &(c).log_level,                 \
                    "debug, info, warn or error"                                                   \
        }
#define QZ_CFG_END                                                                                 \
        {                                                                                          \
                NULL, 0, NULL, 0, 0, NULL, NULL                                                    \
        }

/* `--help`/`-h` prints purpose and the settings table and exits 0; any other
 * argument exits 2. Then loads the table (exit 2 with one line naming a bad
 * variable), starts JSON logging as `name` at c->log_level, installs the
 * signal handlers. Returns only when the service should start. */
void qz_service_init(const char *name, const char *purpose, int argc, char **argv,
                     const struct qz_cfg_entry *table, const struct qz_service_cfg *c);

/* qz_http_start, then the "up" line: version, the bound address, and the
 * given key/value string pairs (NULL-terminated). NULL (logged) on failure. */
struct qz_http_server *qz_service_http_start(const struct qz_http_options *ho, ...)
    __attribute__((sentinel));

struct qz_avro_registry;
struct qz_metrics;
struct qz_pg;

/* Loads the Avro schemas (c->schema_dir), creates the metrics registry and,
 * when pg is not NULL, the Postgres handle named app_name, connecting early so
 * /readyz is right from the start (an unreachable Postgres only logs; the
 * handle retries by itself). 0, or -1 after logging what failed; whatever was
 * created is left in the out pointers for the caller's cleanup. */
int qz_service_open(const struct qz_service_cfg *c, const char *app_name,
                    struct qz_avro_registry **avro, struct qz_metrics **metrics, struct qz_pg **pg);

/* A consume-loop idle hook (qz_kafka_consumer_config.idle_cb) that pings the
 * struct qz_pg given as its opaque, so a Postgres that came back is noticed
 * (and readiness turns true) without waiting for traffic. */
void qz_service_pg_idle_cb(void *pg);

#endif
