/* main.c - playlist-builder: playlists.requests.v1 into smart playlists; its scheduled jobs.
 *
 * Start-up order: config (exit 2 on a bad value), logging, signals, Avro schemas, metrics,
 * Postgres handle (connects lazily, retries by itself), the producer (PlaylistGenerated, fan-out
 * requests, DLQ), the generator and request handler, the requests consumer, the jobs runner
 * (its own thread and Postgres handle), the health server, then the consume loop on this
 * thread. Shutdown: the loop finishes its batch and commits, jobs runner stop (a running job
 * finishes), consumer close, producer flush, HTTP stop. */
#include "avro.h"
#include "cfg.h"
#include "cleanup.h"
#include "fanout.h"
#include "gen.h"
#include "http.h"
#include "jobs.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "requests.h"
#include "rules.h"
#include "service.h"
#include "sig.h"
#include "similarity.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>

static struct {
        struct qz_service_cfg svc;
        const char *group_id, *requests_topic, *generated_topic, *dlq_topic, *variants, *ab_salt;
        long batch_size, batch_wait_ms, tracks, max_tracks, recency_days, content_weight_pct,
            active_days, sim_k, sim_window_days, sim_min_common, sim_shrink, sim_max_per_user,
            load_max_plays;
        bool jobs;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:9104"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_PG(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"QOQNUZ_PLAYLIST_GROUP_ID", QZ_CFG_STR, "playlist-builder", 0, 0, &cfg.group_id,
     "consumer group on the requests topic"},
    {"QOQNUZ_PLAYLIST_REQUESTS_TOPIC", QZ_CFG_STR, "playlists.requests.v1", 0, 0,
     &cfg.requests_topic, "PlaylistRequest topic (consumed; the fan-out job produces)"},
    {"QOQNUZ_PLAYLIST_GENERATED_TOPIC", QZ_CFG_STR, "playlists.generated.v1", 0, 0,
     &cfg.generated_topic, "PlaylistGenerated topic"},
    {"QOQNUZ_PLAYLIST_DLQ_TOPIC", QZ_CFG_STR, "plays.dlq.v1", 0, 0, &cfg.dlq_topic,
     "where undecodable requests go (RejectedEvent names the original topic)"},
    {"QOQNUZ_PLAYLIST_BATCH_SIZE", QZ_CFG_INT, "500", 1, 10000, &cfg.batch_size,
     "requests per consumer batch"},
    {"QOQNUZ_PLAYLIST_BATCH_WAIT_MS", QZ_CFG_INT, "100", 1, 60000, &cfg.batch_wait_ms,
     "longest wait to fill a batch"},
    {"QOQNUZ_PLAYLIST_TRACKS", QZ_CFG_INT, "50", 1, 500, &cfg.tracks,
     "tracks per playlist (a request's param limit overrides)"},
    {"QOQNUZ_PLAYLIST_MAX_TRACKS", QZ_CFG_INT, "200", 1, 500, &cfg.max_tracks,
     "largest param limit accepted"},
    {"QOQNUZ_PLAYLIST_RECENCY_DAYS", QZ_CFG_INT, "14", 1, 365, &cfg.recency_days,
     "recency decay: a play d days old weighs exp(-d / this)"},
    {"QOQNUZ_PLAYLIST_CONTENT_WEIGHT_PCT", QZ_CFG_INT, "50", 0, 100, &cfg.content_weight_pct,
     "weight of content similarity against CF (100 = equal)"},
    {"QOQNUZ_PLAYLIST_VARIANTS", QZ_CFG_STR, "cf:100", 0, 0, &cfg.variants,
     "A/B variants name:weight[,...]; cf = CF and content, guide = the guide's rules only"},
    {"QOQNUZ_PLAYLIST_AB_SALT", QZ_CFG_STR, "ab1", 0, 0, &cfg.ab_salt,
     "salt of the variant assignment (change it for a new experiment)"},
    {"QOQNUZ_PLAYLIST_LOAD_MAX_PLAYS", QZ_CFG_INT, "1000000", 1, 1000000000, &cfg.load_max_plays,
     "most plays one shared load reads (~300 bytes each); a batch over it loads its users in "
     "groups"},
    {"QOQNUZ_PLAYLIST_ACTIVE_DAYS", QZ_CFG_INT, "90", 1, 3650, &cfg.active_days,
     "generate-smart-playlists: users with a play in this many days"},
    {"QOQNUZ_PLAYLIST_JOBS", QZ_CFG_BOOL, "true", 0, 0, &cfg.jobs,
     "run the jobs runner (generate-smart-playlists, cleanup, similarities)"},
    {"QOQNUZ_SIMILARITY_K", QZ_CFG_INT, "50", 1, 1000, &cfg.sim_k, "neighbours kept per track"},
    {"QOQNUZ_SIMILARITY_WINDOW_DAYS", QZ_CFG_INT, "90", 1, 3650, &cfg.sim_window_days,
     "co-listening window"},
    {"QOQNUZ_SIMILARITY_MIN_COMMON", QZ_CFG_INT, "2", 1, 1000, &cfg.sim_min_common,
     "common listeners a CF pair needs"},
    {"QOQNUZ_SIMILARITY_SHRINK", QZ_CFG_INT, "3", 0, 1000, &cfg.sim_shrink,
     "CF shrinkage: cosine * c / (c + this)"},
    {"QOQNUZ_SIMILARITY_MAX_PER_USER", QZ_CFG_INT, "500", 1, 100000, &cfg.sim_max_per_user,
     "a user's most played tracks used for CF"},
    QZ_CFG_END,
};

struct readiness {
        struct qz_pg *pg;
        struct qz_kafka_consumer *consumer;
        struct qz_kafka_producer *producer;
        struct qz_jobs *jobs;
};

static bool ready_cb(void *opaque, json_t *checks)
{
        struct readiness *r = opaque;
        bool pg = qz_pg_ready(r->pg), kc = qz_kafka_consumer_ready(r->consumer),
             kp = qz_kafka_producer_ready(r->producer), jobs = !r->jobs || qz_jobs_ready(r->jobs);
        json_object_set_new(checks, "postgres", json_string(pg ? "ok" : "unreachable"));
        json_object_set_new(checks, "kafka", json_string(kc ? "ok" : "not in the group yet"));
        json_object_set_new(checks, "producer", json_string(kp ? "ok" : "no broker"));
        json_object_set_new(checks, "jobs", json_string(jobs ? "ok" : "not ready"));
        return pg && kc && kp && jobs;
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct qz_pg *pg = NULL;
        struct qz_kafka_producer *producer = NULL;
        struct qz_kafka_consumer *consumer = NULL;
        struct pl_gen *gen = NULL;
        struct pl_requests *requests = NULL;
        struct qz_jobs *jobs = NULL;
        struct qz_http_server *http = NULL;
        char err[512];
        int rc = 1;

        qz_service_init("playlist-builder", "smart playlists from playlists.requests.v1", argc,
                        argv, cfg_table, &cfg.svc);
        if (pl_rules_variant(cfg.variants, cfg.ab_salt, "x", NULL, 0, err, sizeof(err)) != 0) {
                fprintf(stderr, "configuration error: QOQNUZ_PLAYLIST_VARIANTS: %s\n", err);
                return 2;
        }

        if (qz_service_open(&cfg.svc, "playlist-builder", &avro, &metrics, &pg) != 0)
                goto fail;

        struct qz_kafka_producer_config pc = {
            .brokers = cfg.svc.brokers, .client_id = "playlist-builder", .metrics = metrics};
        if (qz_kafka_producer_new(&pc, &producer, err, sizeof(err)) != 0) {
                qz_error("kafka producer: %s", err);
                goto fail;
        }
        struct pl_gen_cfg gc = {.target = cfg.tracks,
                                .max_target = cfg.max_tracks,
                                .recency_days = (double)cfg.recency_days,
                                .content_weight = (double)cfg.content_weight_pct / 100.0,
                                .variants = cfg.variants,
                                .ab_salt = cfg.ab_salt,
                                .load_max_plays = cfg.load_max_plays};
        if (!(gen = pl_gen_new(pg, &gc, err, sizeof(err)))) {
                qz_error("generator: %s", err);
                goto fail;
        }
        struct pl_requests_cfg rc_cfg = {.pg = pg,
                                         .gen = gen,
                                         .avro = avro,
                                         .producer = producer,
                                         .generated_topic = cfg.generated_topic,
                                         .metrics = metrics};
        if (!(requests = pl_requests_new(&rc_cfg, err, sizeof(err)))) {
                qz_error("requests: %s", err);
                goto fail;
        }
        const char *topics[] = {cfg.requests_topic};
        struct qz_kafka_consumer_config cc = {.brokers = cfg.svc.brokers,
                                              .group_id = cfg.group_id,
                                              .topics = topics,
                                              .ntopics = 1,
                                              .service = "playlist-builder",
                                              .batch_size = (size_t)cfg.batch_size,
                                              .batch_wait_ms = (int)cfg.batch_wait_ms,
                                              .dlq_producer = producer,
                                              .avro = avro,
                                              .dlq_topic = cfg.dlq_topic,
                                              .metrics = metrics,
                                              .idle_cb = qz_service_pg_idle_cb,
                                              .idle_opaque = pg};
        if (qz_kafka_consumer_new(&cc, &consumer, err, sizeof(err)) != 0) {
                qz_error("kafka consumer: %s", err);
                goto fail;
        }

        struct pl_fanout_cfg fan = {.producer = producer,
                                    .avro = avro,
                                    .requests_topic = cfg.requests_topic,
                                    .active_days = (int)cfg.active_days};
        struct pl_similarity_cfg sim = {.k = cfg.sim_k,
                                        .window_days = cfg.sim_window_days,
                                        .min_common = cfg.sim_min_common,
                                        .shrink = (double)cfg.sim_shrink,
                                        .max_per_user = cfg.sim_max_per_user};
        const struct qz_job_def defs[] = {
            {"generate-smart-playlists", pl_fanout_job, &fan},
            {"cleanup-expired-playlists", pl_cleanup_job, NULL},
            {"compute-track-similarities", pl_similarity_job, &sim},
        };
        if (cfg.jobs) {
                struct qz_jobs_config jc = {.brokers = cfg.svc.brokers,
                                            .pg_dsn = cfg.svc.pg_dsn,
                                            .service = "playlist-builder",
                                            .avro = avro,
                                            .metrics = metrics,
                                            .defs = defs,
                                            .ndefs = sizeof(defs) / sizeof(defs[0])};
                if (qz_jobs_start(&jc, &jobs, err, sizeof(err)) != 0) {
                        qz_error("jobs: %s", err);
                        goto fail;
                }
        }

        struct readiness readiness = {pg, consumer, producer, jobs};
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .threads = 1,
                                     .metrics = metrics,
                                     .ready_cb = ready_cb,
                                     .ready_opaque = &readiness};
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "group", cfg.group_id,
                                           "topic", cfg.requests_topic, "variants", cfg.variants,
                                           NULL)))
                goto fail;

        if (qz_kafka_consumer_run(consumer, pl_requests_batch_cb, requests, err, sizeof(err)) !=
            0) {
                qz_error("consumer stopped: %s", err);
                goto fail;
        }
        qz_info("stopping: last batch committed");
        rc = 0;
fail:
        qz_jobs_stop(jobs);
        qz_kafka_consumer_close(consumer);
        qz_kafka_producer_close(producer, 5000);
        qz_http_stop(http);
        pl_requests_free(requests);
        pl_gen_free(gen);
        qz_pg_free(pg);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
