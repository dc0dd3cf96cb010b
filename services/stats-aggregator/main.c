/* main.c - stats-aggregator: plays.v1 into play_history and user_listening_stats; the reconcile
 * job.
 *
 * Start-up order: config (exit 2 on a bad value), logging, signals, Avro
 * schemas, metrics, Postgres handle (connects lazily, retries by itself),
 * DLQ producer, consumer, job runner (aggregate-listening-history on its own
 * thread and Postgres handle), renderer (render.h: stats JSON of dirty users,
 * own thread and handle), health server, then the consume loop on this
 * thread. Shutdown: the loop finishes its batch and commits, renderer stop (a
 * running pass finishes first; marks left are durable), job runner stop (a
 * running reconcile finishes first), consumer close, producer flush, HTTP
 * stop.
 *
 * "stats-aggregator reconcile" runs the reconcile once and prints its result
 * (operators, the benchmark). */
#include "avro.h"
#include "cfg.h"
#include "history.h"
#include "http.h"
#include "jobs.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "reconcile.h"
#include "render.h"
#include "service.h"
#include "sig.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

static struct {
        struct qz_service_cfg svc;
        const char *group_id, *topic, *dlq_topic;
        long batch_size, batch_wait_ms, render_interval_ms;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:9102"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_PG(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"QOQNUZ_STATS_GROUP_ID", QZ_CFG_STR, "stats-aggregator", 0, 0, &cfg.group_id,
     "consumer group"},
    {"QOQNUZ_PLAYS_TOPIC", QZ_CFG_STR, "plays.v1", 0, 0, &cfg.topic, "input topic"},
    {"QOQNUZ_PLAYS_DLQ_TOPIC", QZ_CFG_STR, "plays.dlq.v1", 0, 0, &cfg.dlq_topic,
     "where undecodable plays go"},
    {"QOQNUZ_STATS_BATCH_SIZE", QZ_CFG_INT, "10000", 1, 100000, &cfg.batch_size,
     "plays per transaction"},
    {"QOQNUZ_STATS_BATCH_WAIT_MS", QZ_CFG_INT, "200", 1, 60000, &cfg.batch_wait_ms,
     "longest wait to fill a batch"},
    {"QOQNUZ_STATS_RENDER_INTERVAL_MS", QZ_CFG_INT, "1000", 10, 600000, &cfg.render_interval_ms,
     "how often dirty users' stats JSON is rendered (the stats lag is about this)"},
    QZ_CFG_END,
};

struct readiness {
        struct qz_pg *pg;
        struct qz_kafka_consumer *consumer;
        struct qz_jobs *jobs;
};

static bool ready_cb(void *opaque, json_t *checks)
{
        struct readiness *r = opaque;
        bool pg = qz_pg_ready(r->pg), kafka = qz_kafka_consumer_ready(r->consumer);
        bool jobs = qz_jobs_ready(r->jobs);
        json_object_set_new(checks, "postgres", json_string(pg ? "ok" : "unreachable"));
        json_object_set_new(checks, "kafka", json_string(kafka ? "ok" : "not in the group yet"));
        json_object_set_new(checks, "jobs", json_string(jobs ? "ok" : "not in the group yet"));
        return pg && kafka && jobs;
}

/* "stats-aggregator reconcile": one aggregate-listening-history pass, now. */
static int reconcile_once(void)
{
        char err[512];
        struct reconcile_result r = {0};
        struct qz_pg_opts po = {.dsn = cfg.svc.pg_dsn,
                                .application_name = "stats-aggregator-reconcile"};
        struct qz_pg *pg = qz_pg_new(&po, err, sizeof(err));
        int rc = 1;
        if (pg && reconcile_run(pg, &r, err, sizeof(err)) == 0) {
                printf("reconciled %ld users in %.3f s; %ld rows differed from the incremental "
                       "state\n",
                       r.users, r.seconds, r.differed);
                rc = 0;
        } else {
                qz_error("reconcile: %s", err);
        }
        qz_pg_free(pg);
        return rc;
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct qz_pg *pg = NULL;
        struct qz_kafka_producer *dlq = NULL;
        struct qz_kafka_consumer *consumer = NULL;
        struct history *history = NULL;
        struct qz_http_server *http = NULL;
        struct qz_jobs *jobs = NULL;
        struct render *render = NULL;
        char err[512];
        int rc = 1;

        bool reconcile = argc > 1 && strcmp(argv[1], "reconcile") == 0;
        qz_service_init("stats-aggregator",
                        "plays.v1 into Postgres; `stats-aggregator reconcile` runs the reconcile "
                        "once",
                        reconcile ? 1 : argc, argv, cfg_table, &cfg.svc);
        if (reconcile)
                return reconcile_once();

        if (qz_service_open(&cfg.svc, "stats-aggregator", &avro, &metrics, &pg) != 0)
                goto fail;

        struct qz_kafka_producer_config pc = {
            .brokers = cfg.svc.brokers, .client_id = "stats-aggregator-dlq", .metrics = metrics};
        if (qz_kafka_producer_new(&pc, &dlq, err, sizeof(err)) != 0) {
                qz_error("kafka producer: %s", err);
                goto fail;
        }
        const char *topics[] = {cfg.topic};
        struct qz_kafka_consumer_config cc = {.brokers = cfg.svc.brokers,
                                              .group_id = cfg.group_id,
                                              .topics = topics,
                                              .ntopics = 1,
                                              .service = "stats-aggregator",
                                              .batch_size = (size_t)cfg.batch_size,
                                              .batch_wait_ms = (int)cfg.batch_wait_ms,
                                              .dlq_producer = dlq,
                                              .avro = avro,
                                              .dlq_topic = cfg.dlq_topic,
                                              .metrics = metrics,
                                              .idle_cb = qz_service_pg_idle_cb,
                                              .idle_opaque = pg};
        if (qz_kafka_consumer_new(&cc, &consumer, err, sizeof(err)) != 0) {
                qz_error("kafka consumer: %s", err);
                goto fail;
        }
        if (!(history = history_new(pg, avro, metrics)))
                goto fail;
        static const struct qz_job_def job_defs[] = {
            {"aggregate-listening-history", reconcile_job, NULL},
        };
        struct qz_jobs_config jc = {.brokers = cfg.svc.brokers,
                                    .pg_dsn = cfg.svc.pg_dsn,
                                    .service = "stats-aggregator",
                                    .avro = avro,
                                    .metrics = metrics,
                                    .defs = job_defs,
                                    .ndefs = 1};
        if (qz_jobs_start(&jc, &jobs, err, sizeof(err)) != 0) {
                qz_error("jobs: %s", err);
                goto fail;
        }

        if (!(render = render_start(cfg.svc.pg_dsn, cfg.render_interval_ms, metrics, err,
                                    sizeof(err)))) {
                qz_error("render: %s", err);
                goto fail;
        }

        struct readiness readiness = {pg, consumer, jobs};
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .threads = 1,
                                     .metrics = metrics,
                                     .ready_cb = ready_cb,
                                     .ready_opaque = &readiness};
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "group", cfg.group_id,
                                           "topic", cfg.topic, NULL)))
                goto fail;

        if (qz_kafka_consumer_run(consumer, history_batch_cb, history, err, sizeof(err)) != 0) {
                qz_error("consumer stopped: %s", err);
                goto fail;
        }
        qz_info("stopping: last batch committed");
        rc = 0;
fail:
        render_stop(render);
        qz_jobs_stop(jobs);
        qz_kafka_consumer_close(consumer);
        qz_kafka_producer_close(dlq, 5000);
        qz_http_stop(http);
        history_free(history);
        qz_pg_free(pg);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
