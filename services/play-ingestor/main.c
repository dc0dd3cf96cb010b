/* main.c - play-ingestor: players' play events over HTTP into plays.v1.
 *
 * Start-up order: config (exit 2 on a bad value), logging, signals, Avro
 * schemas, metrics, track catalog (loads from Postgres in the background;
 * Postgres down does not stop plays), Kafka producer, HTTP server. Shutdown:
 * stop HTTP intake (running requests finish), flush and close the producer,
 * stop the catalog loader. */
#include "avro.h"
#include "trackset.h"
#include "cfg.h"
#include "http.h"
#include "ingest.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "sig.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct {
        struct qz_service_cfg svc;
        struct ingest_config ingest;
        long max_body, threads, conn_timeout_s, catalog_refresh_s, linger_ms, queue_max;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:8081"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"JWT_SECRET", QZ_CFG_STR, "dev-jwt-secret", 0, 0, &cfg.ingest.jwt_secret,
     "HS256 secret of player tokens"},
    {"QOQNUZ_PLAYS_TOPIC", QZ_CFG_STR, "plays.v1", 0, 0, &cfg.ingest.topic, "output topic"},
    {"QOQNUZ_INGEST_MAX_BATCH", QZ_CFG_INT, "500", 1, 10000, &cfg.ingest.max_items,
     "most plays in one request"},
    {"QOQNUZ_INGEST_MAX_BODY", QZ_CFG_INT, "1048576", 1024, 64 << 20, &cfg.max_body,
     "largest request body in bytes (413 beyond)"},
    {"QOQNUZ_INGEST_ACK_TIMEOUT_MS", QZ_CFG_INT, "10000", 100, 120000, &cfg.ingest.ack_timeout_ms,
     "wait for broker acks before answering 503"},
    {"QOQNUZ_INGEST_HORIZON_DAYS", QZ_CFG_INT, "365", 1, 3650, &cfg.ingest.horizon_days,
     "oldest played_at accepted (offline plays, imports)"},
    {"QOQNUZ_INGEST_MAX_FUTURE_S", QZ_CFG_INT, "300", 0, 86400, &cfg.ingest.max_future_s,
     "how far played_at may be ahead of our clock"},
    {"QOQNUZ_INGEST_ACK_ON_ENQUEUE", QZ_CFG_BOOL, "false", 0, 0, &cfg.ingest.ack_on_enqueue,
     "answer 202 once plays are queued in the producer, not after the broker's ack "
     "(lower latency; plays can be lost)"},
    {"QOQNUZ_INGEST_LINGER_MS", QZ_CFG_INT, "1", 1, 1000, &cfg.linger_ms,
     "producer linger.ms: how long records wait to fill a batch (1: lowest ack latency)"},
    {"QOQNUZ_INGEST_QUEUE_MAX", QZ_CFG_INT, "100000", 1000, 10000000, &cfg.queue_max,
     "producer queue bound in records (429 beyond)"},
    QZ_SERVICE_CFG_PG(cfg.svc),
    {"QOQNUZ_INGEST_CATALOG_REFRESH_S", QZ_CFG_INT, "30", 0, 86400, &cfg.catalog_refresh_s,
     "reload the known-track set this often (0 = no unknown-track counting)"},
    {"QOQNUZ_HTTP_THREADS", QZ_CFG_INT, "64", 1, 256, &cfg.threads,
     "HTTP worker threads (each waits for its request's broker ack)"},
    {"QOQNUZ_HTTP_CONN_TIMEOUT_S", QZ_CFG_INT, "30", 1, 3600, &cfg.conn_timeout_s,
     "close idle or slow client connections after this many seconds"},
    QZ_CFG_END,
};

static struct qz_kafka_producer *producer_new(struct qz_metrics *metrics)
{
        struct qz_kafka_producer_config pc = {.brokers = cfg.svc.brokers,
                                              .client_id = "play-ingestor",
                                              .linger_ms = (int)cfg.linger_ms,
                                              .queue_max_messages = (int)cfg.queue_max,
                                              .metrics = metrics};
        struct qz_kafka_producer *p = NULL;
        char err[512];
        if (qz_kafka_producer_new(&pc, &p, err, sizeof(err)) != 0)
                qz_error("kafka producer: %s", err);
        return p;
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct qz_kafka_producer *producer = NULL;
        struct trackset *catalog = NULL;
        struct ingest *in = NULL;
        struct qz_http_server *http = NULL;
        char err[512];
        int rc = 1;

        qz_service_init("play-ingestor", "POST /v1/plays into Kafka", argc, argv, cfg_table,
                        &cfg.svc);

        if (qz_service_open(&cfg.svc, NULL, &avro, &metrics, NULL) != 0)
                goto fail;
        if (cfg.catalog_refresh_s > 0) {
                struct trackset_config cc = {.pg_dsn = cfg.svc.pg_dsn,
                                             .refresh_s = cfg.catalog_refresh_s};
                catalog = trackset_new(&cc, metrics, err, sizeof(err));
                if (!catalog) {
                        qz_error("catalog: %s", err);
                        goto fail;
                }
        }
        if (!(producer = producer_new(metrics)))
                goto fail;
        in = ingest_new(&cfg.ingest, avro, metrics, catalog, producer, err, sizeof(err));
        if (!in) {
                qz_error("%s", err);
                goto fail;
        }
        producer = NULL; /* now owned by in */

        const struct qz_http_route routes[] = {{"POST", "/v1/plays", ingest_plays_cb, in}};
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .routes = routes,
                                     .nroutes = 1,
                                     .max_body = (size_t)cfg.max_body,
                                     .threads = (unsigned)cfg.threads,
                                     .conn_timeout_s = (unsigned)cfg.conn_timeout_s,
                                     .metrics = metrics,
                                     .ready_cb = ingest_ready_cb,
                                     .ready_opaque = in};
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "topic",
                                           cfg.ingest.topic, "ack",
                                           cfg.ingest.ack_on_enqueue ? "enqueue" : "broker", NULL)))
                goto fail;

        while (!qz_sig_stop_requested()) {
                usleep(200 * 1000);
                /* An idempotent producer that hit a fatal error cannot go on:
                 * replace it; requests meanwhile got 503 and will retry. */
                if (ingest_producer_broken(in)) {
                        qz_error("kafka producer hit a fatal error: recreating it");
                        struct qz_kafka_producer *fresh = producer_new(metrics);
                        if (fresh)
                                ingest_producer_swap(in, fresh);
                }
        }
        qz_info("stopping: closing HTTP intake, then flushing the producer");
        rc = 0;
fail:
        qz_http_stop(http); /* running requests finish first */
        ingest_free(in);    /* flushes and closes the producer */
        qz_kafka_producer_close(producer, 0);
        trackset_free(catalog);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
