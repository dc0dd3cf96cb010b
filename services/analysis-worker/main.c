/* main.c - analysis-worker: the background_tasks relay, the analysis threads, and the task jobs.
 *
 * Start-up order: config (exit 2 on a bad value), logging, signals, Avro
 * schemas, metrics, the relay's Postgres handle (lazy, retries by itself),
 * the producer (relay + DLQ), the analysis thread pool (one consumer and
 * one Postgres handle per thread), the job runner, the health server; then
 * the relay loop on this thread (LISTEN background_task_queued, else poll).
 * Shutdown: the relay finishes its pass, the threads finish their batch and
 * commit, the job runner stops, the producer flushes, HTTP stops. */
#include "analysis/analysis.h"
#include "avro.h"
#include "cfg.h"
#include "clock.h"
#include "http.h"
#include "jobs.h"
#include "kafka.h"
#include "log.h"
#include "maint.h"
#include "metrics.h"
#include "pg.h"
#include "relay.h"
#include "service.h"
#include "sig.h"
#include "version.h"
#include "worker.h"

#include <stdio.h>
#include <time.h>

static struct {
        struct qz_service_cfg svc;
        const char *group_id, *tasks_topic, *retry_topic, *dlq_topic, *results_topic, *tmp_dir;
        long threads, batch, max_seconds, fetch_timeout_ms, fetch_max_bytes, retry_base_ms,
            retry_max_ms, republish_age_ms, poll_ms, relay_batch, stuck_ms, completed_h, failed_h,
            genre_k;
        bool relay;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:9105"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_PG(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"QOQNUZ_ANALYSIS_GROUP_ID", QZ_CFG_STR, "analysis-worker", 0, 0, &cfg.group_id,
     "consumer group of the analysis threads"},
    {"QOQNUZ_ANALYSIS_TASKS_TOPIC", QZ_CFG_STR, "analysis.tasks.v1", 0, 0, &cfg.tasks_topic,
     "first attempts"},
    {"QOQNUZ_ANALYSIS_RETRY_TOPIC", QZ_CFG_STR, "analysis.tasks.retry.v1", 0, 0, &cfg.retry_topic,
     "retries (published once not_before has passed)"},
    {"QOQNUZ_ANALYSIS_DLQ_TOPIC", QZ_CFG_STR, "analysis.tasks.dlq.v1", 0, 0, &cfg.dlq_topic,
     "failed tasks with their error history"},
    {"QOQNUZ_ANALYSIS_RESULTS_TOPIC", QZ_CFG_STR, "analysis.results.v1", 0, 0, &cfg.results_topic,
     "TrackFeatures of completed tasks"},
    {"QOQNUZ_ANALYSIS_THREADS", QZ_CFG_INT, "2", 1, 64, &cfg.threads,
     "analysis threads (one consumer each)"},
    {"QOQNUZ_ANALYSIS_BATCH", QZ_CFG_INT, "4", 1, 1000, &cfg.batch,
     "task messages per offset commit"},
    {"QOQNUZ_ANALYSIS_MAX_SECONDS", QZ_CFG_INT, "60", 5, 3600, &cfg.max_seconds,
     "seconds of audio decoded per track"},
    {"QOQNUZ_ANALYSIS_FETCH_TIMEOUT_MS", QZ_CFG_INT, "20000", 100, 600000, &cfg.fetch_timeout_ms,
     "http(s) audio download time limit"},
    {"QOQNUZ_ANALYSIS_FETCH_MAX_BYTES", QZ_CFG_INT, "209715200", 1024, 4294967296,
     &cfg.fetch_max_bytes, "audio file size limit (download and local)"},
    {"QOQNUZ_ANALYSIS_TMP_DIR", QZ_CFG_STR, "/tmp", 0, 0, &cfg.tmp_dir, "download folder"},
    {"QOQNUZ_ANALYSIS_RETRY_BASE_MS", QZ_CFG_INT, "10000", 1, 86400000, &cfg.retry_base_ms,
     "backoff after attempt n: base * 2^(n-1)"},
    {"QOQNUZ_ANALYSIS_RETRY_MAX_MS", QZ_CFG_INT, "600000", 1, 86400000, &cfg.retry_max_ms,
     "backoff cap"},
    {"QOQNUZ_ANALYSIS_REPUBLISH_AGE_MS", QZ_CFG_INT, "300000", 100, 86400000, &cfg.republish_age_ms,
     "republish a pending task published this long ago"},
    {"QOQNUZ_ANALYSIS_RELAY", QZ_CFG_BOOL, "true", 0, 0, &cfg.relay,
     "run the background_tasks relay in this instance"},
    {"QOQNUZ_ANALYSIS_RELAY_POLL_MS", QZ_CFG_INT, "500", 10, 60000, &cfg.poll_ms,
     "relay poll interval without a notification"},
    {"QOQNUZ_ANALYSIS_RELAY_BATCH", QZ_CFG_INT, "500", 1, 100000, &cfg.relay_batch,
     "rows per relay transaction"},
    {"QOQNUZ_ANALYSIS_STUCK_MS", QZ_CFG_INT, "1800000", 1000, 604800000, &cfg.stuck_ms,
     "reset-stuck-tasks: processing longer than this"},
    {"QOQNUZ_ANALYSIS_KEEP_COMPLETED_H", QZ_CFG_INT, "168", 0, 87600, &cfg.completed_h,
     "cleanup-background-tasks: keep completed tasks (hours)"},
    {"QOQNUZ_ANALYSIS_KEEP_FAILED_H", QZ_CFG_INT, "720", 0, 87600, &cfg.failed_h,
     "cleanup-background-tasks: keep failed tasks (hours)"},
    {"QOQNUZ_ANALYSIS_GENRE_K", QZ_CFG_INT, "7", 1, 100, &cfg.genre_k, "genre kNN neighbours"},
    QZ_CFG_END,
};

struct readiness {
        struct qz_pg *pg;
        struct worker_pool *pool;
        struct qz_jobs *jobs;
        struct qz_kafka_producer *producer;
};

static bool ready_cb(void *opaque, json_t *checks)
{
        struct readiness *r = opaque;
        bool pg = qz_pg_ready(r->pg), workers = worker_pool_ready(r->pool),
             jobs = qz_jobs_ready(r->jobs), prod = qz_kafka_producer_ready(r->producer);
        json_object_set_new(checks, "postgres", json_string(pg ? "ok" : "unreachable"));
        json_object_set_new(checks, "workers", json_string(workers ? "ok" : "not ready"));
        json_object_set_new(checks, "jobs", json_string(jobs ? "ok" : "not ready"));
        json_object_set_new(checks, "kafka", json_string(prod ? "ok" : "no broker"));
        return pg && workers && jobs && prod;
}

/* One relay round: fail exhausted rows, send due tasks, send outcomes;
 * loops while a pass filled its batch. */
static void relay_round(struct relay *relay)
{
        char err[512];
        long n = 0;
        if (relay_fail_exhausted(relay, &n, err, sizeof(err)) != 0)
                qz_warn("relay: %s", err);
        for (int i = 0; i < 100 && !qz_sig_stop_requested(); i++) {
                long a = 0, b = 0;
                if (relay_tasks_once(relay, &a, err, sizeof(err)) != 0)
                        qz_warn("relay tasks: %s", err);
                if (relay_outcomes_once(relay, &b, err, sizeof(err)) != 0)
                        qz_warn("relay outcomes: %s", err);
                if (a < cfg.relay_batch && b < cfg.relay_batch)
                        break;
        }
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct qz_pg *pg = NULL;
        struct qz_kafka_producer *producer = NULL;
        struct worker_pool *pool = NULL;
        struct qz_jobs *jobs = NULL;
        struct relay *relay = NULL;
        struct qz_http_server *http = NULL;
        char err[512];
        int rc = 1;

        qz_service_init("analysis-worker", "background_tasks relay and audio analysis", argc, argv,
                        cfg_table, &cfg.svc);

        if (qz_service_open(&cfg.svc, "analysis-worker-relay", &avro, &metrics, &pg) != 0)
                goto fail;
        qz_pg_listen(pg, "background_task_queued", err, sizeof(err));

        struct qz_kafka_producer_config pc = {
            .brokers = cfg.svc.brokers, .client_id = "analysis-worker", .metrics = metrics};
        if (qz_kafka_producer_new(&pc, &producer, err, sizeof(err)) != 0) {
                qz_error("kafka producer: %s", err);
                goto fail;
        }
        struct relay_config rcfg = {.tasks_topic = cfg.tasks_topic,
                                    .retry_topic = cfg.retry_topic,
                                    .dlq_topic = cfg.dlq_topic,
                                    .results_topic = cfg.results_topic,
                                    .service = "analysis-worker",
                                    .republish_age_ms = cfg.republish_age_ms,
                                    .batch = cfg.relay_batch,
                                    .produce_timeout_ms = 10000};
        if (!(relay = relay_new(&rcfg, pg, producer, avro, metrics, err, sizeof(err)))) {
                qz_error("relay: %s", err);
                goto fail;
        }
        struct worker_config wc = {.brokers = cfg.svc.brokers,
                                   .pg_dsn = cfg.svc.pg_dsn,
                                   .group_id = cfg.group_id,
                                   .tasks_topic = cfg.tasks_topic,
                                   .retry_topic = cfg.retry_topic,
                                   .dlq_topic = cfg.dlq_topic,
                                   .service = "analysis-worker",
                                   .threads = (int)cfg.threads,
                                   .batch_size = (int)cfg.batch,
                                   .analysis = {.max_seconds = (int)cfg.max_seconds,
                                                .fetch_timeout_ms = cfg.fetch_timeout_ms,
                                                .fetch_max_bytes = cfg.fetch_max_bytes,
                                                .retry_base_ms = cfg.retry_base_ms,
                                                .retry_max_ms = cfg.retry_max_ms,
                                                .genre_k = (int)cfg.genre_k,
                                                .tmp_dir = cfg.tmp_dir,
                                                .claim_published_only = true},
                                   .avro = avro,
                                   .dlq_producer = producer,
                                   .metrics = metrics};
        if (worker_pool_start(&wc, &pool, err, sizeof(err)) != 0) {
                qz_error("analysis threads: %s", err);
                goto fail;
        }
        static struct maint_config mc;
        mc = (struct maint_config){.stuck_ms = cfg.stuck_ms,
                                   .completed_ms = cfg.completed_h * 3600000L,
                                   .failed_ms = cfg.failed_h * 3600000L};
        const struct qz_job_def defs[] = {
            {"reset-stuck-tasks", maint_reset_stuck_job, &mc},
            {"cleanup-background-tasks", maint_cleanup_job, &mc},
        };
        struct qz_jobs_config jc = {.brokers = cfg.svc.brokers,
                                    .pg_dsn = cfg.svc.pg_dsn,
                                    .service = "analysis-worker",
                                    .avro = avro,
                                    .metrics = metrics,
                                    .defs = defs,
                                    .ndefs = 2};
        if (qz_jobs_start(&jc, &jobs, err, sizeof(err)) != 0) {
                qz_error("jobs: %s", err);
                goto fail;
        }
        struct readiness readiness = {pg, pool, jobs, producer};
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .threads = 1,
                                     .metrics = metrics,
                                     .ready_cb = ready_cb,
                                     .ready_opaque = &readiness};
        char threads[16];
        snprintf(threads, sizeof(threads), "%ld", cfg.threads);
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "group", cfg.group_id,
                                           "threads", threads, "relay", cfg.relay ? "on" : "off",
                                           NULL)))
                goto fail;

        while (!qz_sig_stop_requested() && !worker_pool_failed(pool)) {
                long wait = cfg.poll_ms;
                if (cfg.relay) {
                        relay_round(relay);
                        wait = relay_next_due_ms(relay, cfg.poll_ms);
                        if (wait < 10)
                                wait = 10;
                }
                PGnotify *nt = NULL;
                if (qz_pg_notify_wait(pg, (int)wait, &nt, err, sizeof(err)) < 0) {
                        qz_pg_ping(pg, err, sizeof(err));
                        struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
                        nanosleep(&ts, NULL);
                }
                if (nt)
                        PQfreemem(nt);
        }
        if (worker_pool_failed(pool)) {
                qz_error("an analysis thread stopped: exiting");
                goto fail;
        }
        qz_info("stopping: finishing in-flight tasks");
        rc = 0;
fail:
        worker_pool_stop(pool);
        qz_jobs_stop(jobs);
        relay_free(relay);
        qz_kafka_producer_close(producer, 5000);
        qz_http_stop(http);
        qz_pg_free(pg);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
