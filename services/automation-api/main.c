/* main.c - automation-api: the guide's HTTP API, the job scheduler, and the run and tracks.v1
 * relays.
 *
 * Start-up order: config (exit 2 on a bad value), time zone, logging,
 * signals, Avro schemas, metrics, Kafka producer, connection pool, then the
 * background threads (playlist_ready waiter, scheduler, run relay, tracks
 * relay) and last the HTTP server. Shutdown (SIGTERM): stop HTTP intake
 * (running requests finish), stop the threads (each finishes its current
 * transaction), flush and close the producer. */
#include "api.h"
#include "api_playlists.h"
#include "api_status.h"
#include "api_tracks.h"
#include "api_trending.h"
#include "avro.h"
#include "cfg.h"
#include "connpool.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "pg.h"
#include "prodref.h"
#include "redis.h"
#include "runrelay.h"
#include "sched.h"
#include "service.h"
#include "sig.h"
#include "version.h"
#include "waiter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
        struct qz_service_cfg svc;
        const char *tz, *tracks_topic;
        struct api_config api;
        long max_body, threads, tick_ms, sweep_ms;
        bool scheduler, relays;
} cfg;

static const struct qz_cfg_entry cfg_table[] = {
    QZ_SERVICE_CFG_HTTP(cfg.svc, "127.0.0.1:8080"),
    QZ_SERVICE_CFG_KAFKA(cfg.svc),
    QZ_SERVICE_CFG_PG(cfg.svc),
    QZ_SERVICE_CFG_REDIS(cfg.svc),
    QZ_SERVICE_CFG_BASE(cfg.svc),
    {"JWT_SECRET", QZ_CFG_STR, "dev-jwt-secret", 0, 0, &cfg.api.jwt_secret,
     "HS256 secret of user/admin/service tokens"},
    {"WORKER_SECRET", QZ_CFG_STR, "dev-worker-secret", 0, 0, &cfg.api.worker_secret,
     "bearer secret of /api/automation/worker"},
    {"QOQNUZ_HTTP_THREADS", QZ_CFG_INT, "4", 1, 64, &cfg.threads,
     "HTTP worker threads (and pooled database connections)"},
    {"QOQNUZ_API_MAX_BODY", QZ_CFG_INT, "1048576", 1024, 64 << 20, &cfg.max_body,
     "largest request body in bytes (413 beyond)"},
    {"QOQNUZ_API_PLAYLIST_TIMEOUT_MS", QZ_CFG_INT, "10000", 100, 600000,
     &cfg.api.playlist_timeout_ms, "POST smart-playlists: wait for the builder, then 504"},
    {"QOQNUZ_API_ACK_TIMEOUT_MS", QZ_CFG_INT, "10000", 100, 120000, &cfg.api.ack_timeout_ms,
     "wait for the broker to acknowledge a playlist request before 503"},
    {"QOQNUZ_API_TRENDING_WAIT_MS", QZ_CFG_INT, "5000", 0, 600000, &cfg.api.trending_wait_ms,
     "POST trending: wait for calculate-trending to finish before answering 202"},
    {"QOQNUZ_API_TRENDING_CACHE_MS", QZ_CFG_INT, "1000", 0, 60000, &cfg.api.trending_cache_ms,
     "GET trending: reuse a rendered chart this long (0 = every request reads Redis)"},
    {"QOQNUZ_API_TRENDING_NAIVE", QZ_CFG_BOOL, "false", 0, 0, &cfg.api.trending_naive,
     "GET trending: build every answer from a Postgres query (benchmark baseline)"},
    {"QOQNUZ_API_POOL_WAIT_MS", QZ_CFG_INT, "2000", 1, 60000, &cfg.api.pool_wait_ms,
     "wait for a free database connection before 503"},
    {"QOQNUZ_MEDIA_DIR", QZ_CFG_STR, ".run/media", 0, 0, &cfg.api.media_dir,
     "folder for audio uploaded to POST /api/tracks (created if missing)"},
    {"QOQNUZ_PLAYLIST_REQUESTS_TOPIC", QZ_CFG_STR, "playlists.requests.v1", 0, 0,
     &cfg.api.playlists_topic, "where POST smart-playlists publishes"},
    {"QOQNUZ_TRACKS_TOPIC", QZ_CFG_STR, "tracks.v1", 0, 0, &cfg.tracks_topic,
     "where the tracks relay publishes"},
    {"QOQNUZ_SCHEDULER_ENABLED", QZ_CFG_BOOL, "true", 0, 0, &cfg.scheduler,
     "run the job scheduler in this replica"},
    {"QOQNUZ_SCHEDULER_TZ", QZ_CFG_STR, "UTC", 0, 0, &cfg.tz,
     "time zone of the cron schedules (e.g. UTC, Europe/Berlin)"},
    {"QOQNUZ_SCHEDULER_TICK_MS", QZ_CFG_INT, "1000", 50, 60000, &cfg.tick_ms,
     "how often the scheduler looks for due jobs"},
    {"QOQNUZ_RELAYS_ENABLED", QZ_CFG_BOOL, "true", 0, 0, &cfg.relays,
     "run the queued-run and tracks.v1 relays in this replica"},
    {"QOQNUZ_RELAY_SWEEP_MS", QZ_CFG_INT, "500", 50, 60000, &cfg.sweep_ms,
     "relays sweep this often besides waking on NOTIFY"},
    QZ_CFG_END,
};

/* The zone must exist: a typo would silently run every job in UTC. */
static void tz_set_or_exit(const char *tz)
{
        char path[512];
        snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
        if (strcmp(tz, "UTC") != 0 &&
            (!*tz || strstr(tz, "..") || tz[0] == '/' || access(path, R_OK) != 0)) {
                fprintf(stderr,
                        "configuration error: QOQNUZ_SCHEDULER_TZ: bad value '%s': not a time "
                        "zone in /usr/share/zoneinfo\n",
                        tz);
                exit(2);
        }
        setenv("TZ", tz, 1);
        tzset();
}

struct health {
        struct qz_pg *pg;
        struct qz_redis *redis;
        struct prodref *producer;
        struct waiter *waiter;
        volatile bool redis_ok; /* written by the main loop only */
};

static bool ready_cb(void *opaque, json_t *checks)
{
        struct health *h = opaque;
        bool pg = qz_pg_ready(h->pg), kafka = prodref_ready(h->producer);
        json_object_set_new(checks, "postgres", json_string(pg ? "ok" : "unreachable"));
        json_object_set_new(checks, "kafka", json_string(kafka ? "ok" : "no broker reachable"));
        /* Redis is not required: trending falls back to Postgres */
        json_object_set_new(
            checks, "redis",
            json_string(h->redis_ok ? "ok" : "unreachable (serving from postgres)"));
        json_object_set_new(checks, "playlist_ready",
                            json_string(waiter_ready(h->waiter) ? "ok" : "not listening"));
        return pg && kafka;
}

int main(int argc, char **argv)
{
        struct qz_avro_registry *avro = NULL;
        struct qz_metrics *metrics = NULL;
        struct prodref *producer = NULL;
        struct connpool *pool = NULL;
        struct waiter *waiter = NULL;
        struct sched *sched = NULL;
        struct runrelay *runrelay = NULL;
        struct outbox *outbox = NULL;
        struct qz_http_server *http = NULL;
        struct trending_cache *tcache = NULL;
        struct health health = {0};
        char err[512];
        int rc = 1;

        qz_service_init("automation-api", "the automation HTTP API and job scheduler", argc, argv,
                        cfg_table, &cfg.svc);
        tz_set_or_exit(cfg.tz);

        /* one level, like mkdir: a missing parent is a configuration mistake to see in the
         * upload's error log, not something to paper over */
        if (mkdir(cfg.api.media_dir, 0755) != 0 && errno != EEXIST)
                qz_warn("media folder %s: %s (uploads will fail)", cfg.api.media_dir,
                        strerror(errno));
        if (qz_avro_registry_load(cfg.svc.schema_dir, &avro, err, sizeof(err)) != 0) {
                qz_error("schemas: %s", err);
                goto fail;
        }
        if (!(metrics = qz_metrics_new()) || !(tcache = trending_cache_new()))
                goto fail;
        struct qz_kafka_producer_config pc = {
            .brokers = cfg.svc.brokers, .client_id = "automation-api", .metrics = metrics};
        if (!(producer = prodref_new(&pc, err, sizeof(err)))) {
                qz_error("kafka producer: %s", err);
                goto fail;
        }
        struct qz_pg_opts po = {.dsn = cfg.svc.pg_dsn,
                                .application_name = "automation-api",
                                .statement_timeout_ms = 30000};
        if (!(pool =
                  connpool_new((size_t)cfg.threads, &po, &cfg.svc.redis, 500, err, sizeof(err))) ||
            !(health.pg = qz_pg_new(&po, err, sizeof(err))) ||
            !(health.redis = qz_redis_new(&cfg.svc.redis, 500))) {
                qz_error("connections: %s", err);
                goto fail;
        }
        qz_pg_connect(health.pg, err, sizeof(err)); /* early, for readiness; retried later */
        health.producer = producer;
        if (!(waiter = waiter_start(&po, err, sizeof(err))) ||
            (cfg.scheduler &&
             !(sched = sched_start(&po, cfg.tick_ms, metrics, err, sizeof(err)))) ||
            (cfg.relays && !(runrelay = runrelay_start(&po, cfg.sweep_ms, producer, avro, metrics,
                                                       err, sizeof(err)))) ||
            (cfg.relays && !(outbox = outbox_start(&po, cfg.tracks_topic, cfg.sweep_ms, producer,
                                                   avro, metrics, err, sizeof(err))))) {
                qz_error("%s", err);
                goto fail;
        }
        health.waiter = waiter;

        struct api api = {.cfg = cfg.api,
                          .pool = pool,
                          .producer = producer,
                          .avro = avro,
                          .metrics = metrics,
                          .waiter = waiter,
                          .trending = tcache};
        const struct qz_http_route routes[] = {
            {"GET", "/api/automation/smart-playlists", api_playlists_get_cb, &api},
            {"POST", "/api/automation/smart-playlists", api_playlists_post_cb, &api},
            {"GET", "/api/automation/trending", api_trending_get_cb, &api},
            {"POST", "/api/automation/trending", api_trending_post_cb, &api},
            {"GET", "/api/automation/worker", api_worker_get_cb, &api},
            {"POST", "/api/automation/worker", api_worker_post_cb, &api},
            {"GET", "/api/automation/trigger", api_trigger_get_cb, &api},
            {"POST", "/api/automation/trigger", api_trigger_post_cb, &api},
            {"GET", "/api/automation/jobs", api_jobs_list_cb, &api},
            {"GET", "/api/automation/jobs/{name}", api_jobs_get_cb, &api},
            {"PATCH", "/api/automation/jobs/{name}", api_jobs_patch_cb, &api},
            {"GET", "/api/automation/jobs/{name}/runs", api_jobs_runs_cb, &api},
            {"POST", "/api/tracks", api_tracks_post_cb, &api},
        };
        struct qz_http_options ho = {.addr = cfg.svc.http_addr,
                                     .routes = routes,
                                     .nroutes = sizeof(routes) / sizeof(routes[0]),
                                     .max_body = (size_t)cfg.max_body,
                                     .threads = (unsigned)cfg.threads,
                                     .metrics = metrics,
                                     .ready_cb = ready_cb,
                                     .ready_opaque = &health};
        if (!(http = qz_service_http_start(&ho, "brokers", cfg.svc.brokers, "scheduler",
                                           cfg.scheduler ? "on" : "off", "tz", cfg.tz, NULL)))
                goto fail;

        int tick = 0;
        while (!qz_sig_stop_requested()) {
                usleep(200 * 1000);
                if (++tick % 5 != 0)
                        continue;
                /* once a second: keep readiness current */
                qz_pg_ping(health.pg, err, sizeof(err));
                health.redis_ok = qz_redis_ping(health.redis, err, sizeof(err)) == 0;
                /* An idempotent producer that hit a fatal error cannot go on: replace it
                 * (requests meanwhile got 503, the relays retry their sweep). */
                int renewed = prodref_renew_if_broken(producer, err, sizeof(err));
                if (renewed > 0)
                        qz_error("kafka producer hit a fatal error: replaced it");
                else if (renewed < 0)
                        qz_error("kafka producer hit a fatal error; a new one failed: %s "
                                 "(retrying)",
                                 err);
        }
        qz_info("stopping: closing HTTP intake, then the scheduler and relays");
        rc = 0;
fail:
        qz_http_stop(http);
        sched_stop(sched);
        runrelay_stop(runrelay);
        outbox_stop(outbox);
        waiter_stop(waiter);
        prodref_free(producer, 10000);
        connpool_free(pool);
        qz_pg_free(health.pg);
        qz_redis_free(health.redis);
        trending_cache_free(tcache);
        qz_metrics_free(metrics);
        qz_avro_registry_free(avro);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}
