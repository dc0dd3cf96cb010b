/* main.c - trending-ranker: plays.v1 into exact 24 h / 7 d trending lists in Redis and
 * trending_tracks in Postgres.
 *
 * Start-up order: config (exit 2 on a bad value), logging, signals, Avro schemas, metrics,
 * Postgres and Redis handles (both reconnect by themselves), the ranker, the jobs runner
 * (calculate-trending), the consumer (whose assignment restores the window from the
 * checkpoint, else rebuilds it from play_history), the health server, then the consume loop on this
 * thread. Shutdown: the loop returns, consumer close, jobs runner stop, HTTP stop. */
#include "avro.h"
#include "cfg.h"
#include "http.h"
#include "jobs.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "ranker.h"
#include "redis.h"
#include "service.h"
#include "sig.h"
#include "version.h"

#include <stdio.h>
#include <unistd.h>

static struct {
        struct qz_service_cfg svc;
        const char *group_id, *topic, *instance;
        long nparts, bucket_s, now_ms, publish_ms, refresh_ms, snapshot_ms, checkpoint_ms, max_list,
            pg_top, batch_size, fetch_wait_ms, batch_wait_ms;
        bool jobs, now_moves;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:9103"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_PG(cfg.svc),
    QZ_SERVICE_CFG_REDIS(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"QOQNUZ_TRENDING_GROUP_ID", QZ_CFG_STR, "trending-ranker", 0, 0, &cfg.group_id,
     "consumer group (instances of one deployment share it)"},
    {"QOQNUZ_PLAYS_TOPIC", QZ_CFG_STR, "plays.v1", 0, 0, &cfg.topic, "input topic"},
    {"QOQNUZ_TRENDING_PARTITIONS", QZ_CFG_INT, "24", 1, 256, &cfg.nparts,
     "partitions of the plays topic (the rebuild maps users to them like the producer)"},
    {"QOQNUZ_TRENDING_BUCKET_S", QZ_CFG_INT, "3600", 60, 86400, &cfg.bucket_s,
     "window bucket width in seconds (must divide 24 h)"},
    {"QOQNUZ_TRENDING_NOW_MS", QZ_CFG_INT, "0", 0, 9000000000000L, &cfg.now_ms,
     "pin \"now\" (epoch ms) for tests; 0 = the clock"},
    {"QOQNUZ_TRENDING_NOW_MOVES", QZ_CFG_BOOL, "false", 0, 0, &cfg.now_moves,
     "with QOQNUZ_TRENDING_NOW_MS: \"now\" starts there and moves with the clock (tests)"},
    {"QOQNUZ_TRENDING_PUBLISH_MS", QZ_CFG_INT, "500", 50, 3600000, &cfg.publish_ms,
     "Redis publish interval"},
    {"QOQNUZ_TRENDING_REFRESH_MS", QZ_CFG_INT, "60000", 50, 86400000, &cfg.refresh_ms,
     "rewrite the unchanged lists at least this often (else only meta.calculated_at moves)"},
    {"QOQNUZ_TRENDING_SNAPSHOT_MS", QZ_CFG_INT, "60000", 100, 86400000, &cfg.snapshot_ms,
     "trending_tracks snapshot interval"},
    {"QOQNUZ_TRENDING_CHECKPOINT_MS", QZ_CFG_INT, "5000", 100, 3600000, &cfg.checkpoint_ms,
     "interval of the window + Kafka offsets checkpoint in Postgres"},
    {"QOQNUZ_TRENDING_MAX_LIST", QZ_CFG_INT, "1000", 1, 100000, &cfg.max_list,
     "length of each Redis list"},
    {"QOQNUZ_TRENDING_PG_TOP", QZ_CFG_INT, "100", 1, 100000, &cfg.pg_top,
     "rows kept in trending_tracks"},
    {"QOQNUZ_TRENDING_BATCH_SIZE", QZ_CFG_INT, "5000", 1, 100000, &cfg.batch_size,
     "plays per consumer batch"},
    {"QOQNUZ_TRENDING_FETCH_WAIT_MS", QZ_CFG_INT, "100", 1, 5000, &cfg.fetch_wait_ms,
     "longest a fetch waits at the broker for data (fetch.wait.max.ms): part of a play's lag"},
    {"QOQNUZ_TRENDING_BATCH_WAIT_MS", QZ_CFG_INT, "100", 1, 5000, &cfg.batch_wait_ms,
     "longest a partial batch waits for more plays before it is added"},
    {"QOQNUZ_TRENDING_INSTANCE", QZ_CFG_STR, "", 0, 0, &cfg.instance,
     "instance id for the merger lock; empty = host-pid"},
    {"QOQNUZ_TRENDING_JOBS", QZ_CFG_BOOL, "true", 0, 0, &cfg.jobs,
     "run the calculate-trending job runner"},
    QZ_CFG_END,
};

struct readiness {
        struct ranker *ranker;
        struct qz_pg *pg;
        struct qz_kafka_consumer *consumer;
        struct qz_jobs *jobs;
};

/* Postgres is reported but not required: without it Redis keeps updating. */
static bool ready_cb(void *opaque, json_t *checks)
{
        struct readiness *r = opaque;
        bool redis = ranker_redis_ok(r->ranker), kafka = qz_kafka_consumer_ready(r->consumer);
        bool jobs = !r->jobs || qz_jobs_ready(r->jobs);
        json_object_set_new(checks, "redis", json_string(redis ? "ok" : "not published yet"));
        json_object_set_new(checks, "kafka", json_string(kafka ? "ok" : "not in the group yet"));
        json_object_set_new(checks, "postgres",
                            json_string(qz_pg_ready(r->pg) ? "ok" : "unreachable (degraded)"));
        json_object_set_new(checks, "jobs", json_string(jobs ? "ok" : "not ready"));
        return redis && kafka && jobs;
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct qz_pg *pg = NULL;
        struct qz_redis *redis = NULL;
        struct ranker *ranker = NULL;
        struct qz_jobs *jobs = NULL;
        struct qz_kafka_consumer *consumer = NULL;
        struct qz_http_server *http = NULL;
        char err[512], instance[128];
        int rc = 1;

        qz_service_init("trending-ranker", "plays.v1 into trending lists", argc, argv, cfg_table,
                        &cfg.svc);
        if ((86400 % cfg.bucket_s) != 0) {
                fprintf(stderr,
                        "configuration error: QOQNUZ_TRENDING_BUCKET_S: bad value '%ld': must "
                        "divide 86400\n",
                        cfg.bucket_s);
                return 2;
        }
        if (cfg.instance[0]) {
                snprintf(instance, sizeof(instance), "%s", cfg.instance);
        } else {
                char host[64] = "host";
                gethostname(host, sizeof(host) - 1);
                snprintf(instance, sizeof(instance), "%s-%d", host, (int)getpid());
        }

        if (qz_service_open(&cfg.svc, "trending-ranker", &avro, &metrics, &pg) != 0)
                goto fail;
        if (!(redis = qz_redis_new(&cfg.svc.redis, 2000)))
                goto fail;
        struct ranker_config rc_ = {.nparts = (int)cfg.nparts,
                                    .bucket_ms = cfg.bucket_s * 1000,
                                    .fixed_now_ms = cfg.now_ms,
                                    .now_moves = cfg.now_moves,
                                    .publish_ms = cfg.publish_ms,
                                    .refresh_ms = cfg.refresh_ms,
                                    .snapshot_ms = cfg.snapshot_ms,
                                    .checkpoint_ms = cfg.checkpoint_ms,
                                    .max_list = cfg.max_list,
                                    .pg_top = cfg.pg_top,
                                    .group_id = cfg.group_id,
                                    .instance_id = instance,
                                    .topic = cfg.topic};
        if (!(ranker = ranker_new(&rc_, pg, redis, avro, metrics))) {
                qz_error("ranker: out of memory");
                goto fail;
        }
        struct qz_job_def defs[] = {{"calculate-trending", ranker_job_calculate, ranker}};
        if (cfg.jobs) {
                struct qz_jobs_config jc = {.brokers = cfg.svc.brokers,
                                            .pg_dsn = cfg.svc.pg_dsn,
                                            .service = "trending-ranker",
                                            .avro = avro,
                                            .metrics = metrics,
                                            .defs = defs,
                                            .ndefs = 1};
                if (qz_jobs_start(&jc, &jobs, err, sizeof(err)) != 0) {
                        qz_error("jobs: %s", err);
                        goto fail;
                }
        }
        const char *topics[] = {cfg.topic};
        struct qz_kafka_consumer_config cc = {.brokers = cfg.svc.brokers,
                                              .group_id = cfg.group_id,
                                              .topics = topics,
                                              .ntopics = 1,
                                              .service = "trending-ranker",
                                              .batch_size = (size_t)cfg.batch_size,
                                              .batch_wait_ms = (int)cfg.batch_wait_ms,
                                              /* freshness: plays reach Redis within 2 s */
                                              .fetch_wait_max_ms = (int)cfg.fetch_wait_ms,
                                              .metrics = metrics,
                                              .idle_cb = ranker_idle_cb,
                                              .idle_opaque = ranker,
                                              .idle_interval_ms = 250,
                                              .assign_cb = ranker_assign_cb,
                                              .revoke_cb = ranker_revoke_cb,
                                              .rebalance_opaque = ranker};
        if (qz_kafka_consumer_new(&cc, &consumer, err, sizeof(err)) != 0) {
                qz_error("kafka consumer: %s", err);
                goto fail;
        }
        struct readiness readiness = {ranker, pg, consumer, jobs};
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .threads = 1,
                                     .metrics = metrics,
                                     .ready_cb = ready_cb,
                                     .ready_opaque = &readiness};
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "group", cfg.group_id,
                                           "topic", cfg.topic, "instance", instance, NULL)))
                goto fail;

        if (qz_kafka_consumer_run(consumer, ranker_batch_cb, ranker, err, sizeof(err)) != 0) {
                qz_error("consumer stopped: %s", err);
                goto fail;
        }
        qz_info("stopping");
        rc = 0;
fail:
        qz_kafka_consumer_close(consumer);
        qz_jobs_stop(jobs);
        qz_http_stop(http);
        ranker_free(ranker);
        qz_redis_free(redis);
        qz_pg_free(pg);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
