/* ranker.c - plays into the window, the window into Redis and Postgres, rebuilds on assignment. */
#include "ranker.h"
#include "checkpoint.h"
#include "publish.h"
#include "rank.h"
#include "window.h"

#include "avro.h"
#include "catalog.h"
#include "clock.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "redis.h"
#include "sig.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define CATALOG_REFRESH_MS 5000
#define PARTIAL_TTL_MS     60000
#define LOCK_TTL_MS        5000
#define JOB_WAIT_S         20

struct ranker {
        struct ranker_config cfg;
        struct qz_pg *pg;
        struct qz_redis *redis;
        const struct qz_avro_registry *avro;
        const struct qz_avro_schema *schema;
        struct window *w;
        struct qz_catalog *cat;
        struct publish *pub;
        struct rank_merge merge;
        bool *owned;
        struct ckpt *ck;
        int64_t *next_off; /* per partition: the next offset to consume (what the window holds) */
        int64_t next_ckpt;
        int64_t newest_ts;       /* newest Kafka timestamp applied */
        int64_t oldest_unpub_ts; /* oldest Kafka timestamp applied since the last publish; 0 none */
        struct vis_bin *vis;     /* plays added since the last publish, by produce time */
        size_t nvis, capvis;
        int64_t next_publish, next_snapshot, next_catalog, next_ping;
        /* Skipping unchanged publishes: the ranking can only change when a play is added, the
         * hour (bucket) turns, the catalog or the owned partitions change. */
        bool dirty;
        int64_t pub_bucket;   /* the bucket of the last full publish */
        int64_t next_refresh; /* full rewrite due (even if unchanged) */
        char pub_calc[40];    /* meta.calculated_at as last written by this instance */
        atomic_bool redis_ok;
        /* the last merged top rows, for the job thread */
        pthread_mutex_t mu;
        pthread_cond_t cv;
        long job_req, rows_seq; /* the job asks the loop for a ranking newer than its request */
        struct publish_row *rows;
        size_t nrows;
        int64_t rows_calc_ms;
        bool have_rows;
        int64_t mono0; /* start, for a pinned "now" that moves */
        struct qz_metric *m_added, *m_dup, *m_old, *m_new, *m_invalid, *m_publish_s,
            *m_publish_fail, *m_fresh, *m_plays7, *m_pairs, *m_events, *m_bytes, *m_tracks,
            *m_rebuild_s, *m_rebuilt, *m_snap_fail, *m_held, *m_restore_s, *m_restored, *m_ckpt_s,
            *m_ckpt_fail, *m_ckpt_plays, *m_fresh_max, *m_visible;
};

/* Plays added since the last publish whose Kafka timestamps fall in one VIS_BIN_MS bin: at the
 * publish that makes them visible, each play's produce -> visible time is observed. */
#define VIS_BIN_MS 10
struct vis_bin {
        int64_t bin;
        uint32_t n;
};

static void vis_note(struct ranker *r, int64_t ts_ms)
{
        int64_t bin = ts_ms / VIS_BIN_MS;
        if (r->nvis > 0 && r->vis[r->nvis - 1].bin == bin) {
                r->vis[r->nvis - 1].n++;
                return;
        }
        if (r->nvis == r->capvis) {
                size_t cap = r->capvis ? r->capvis * 2 : 1024;
                void *n = cap <= (1u << 20) ? realloc(r->vis, cap * sizeof(*r->vis)) : NULL;
                if (!n) { /* bounded: the rest count as the last bin (the metric's only use) */
                        if (r->nvis > 0)
                                r->vis[r->nvis - 1].n++;
                        return;
                }
                r->vis = n;
                r->capvis = cap;
        }
        r->vis[r->nvis++] = (struct vis_bin){bin, 1};
}

static int64_t now_ms(const struct ranker *r)
{
        if (!r->cfg.fixed_now_ms)
                return qz_time_now_ms();
        return r->cfg.fixed_now_ms + (r->cfg.now_moves ? qz_clock_mono_ms() - r->mono0 : 0);
}

struct ranker *ranker_new(const struct ranker_config *cfg, struct qz_pg *pg, struct qz_redis *redis,
                          const struct qz_avro_registry *avro, struct qz_metrics *m)
{
        struct ranker *r = calloc(1, sizeof(*r));
        char prefix[300];
        if (!r)
                return NULL;
        r->mono0 = qz_clock_mono_ms();
        r->cfg = *cfg;
        r->pg = pg;
        r->redis = redis;
        r->avro = avro;
        r->schema = qz_avro_schema_get(avro, "PlayEvent");
        r->dirty = true;
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        snprintf(prefix, sizeof(prefix), "qoqnuz:trending:internal:tmp:%s:", cfg->instance_id);
        if (!(r->w = window_new(cfg->bucket_ms, cfg->nparts, now_ms(r))) ||
            !(r->cat = qz_catalog_new()) ||
            !(r->pub = publish_new(redis, prefix, (size_t)cfg->max_list)) ||
            !(r->owned = calloc((size_t)cfg->nparts, sizeof(bool))) ||
            !(r->next_off = calloc((size_t)cfg->nparts, sizeof(int64_t))) ||
            !(r->ck = ckpt_new(cfg->group_id, cfg->instance_id, cfg->nparts))) {
                ranker_free(r);
                return NULL;
        }
        const char *rs = "Plays read from plays.v1 by outcome";
        r->m_added = qz_metrics_counter(m, "qz_trending_plays_total", "result=\"added\"", rs);
        r->m_dup = qz_metrics_counter(m, "qz_trending_plays_total", "result=\"duplicate\"", rs);
        r->m_old = qz_metrics_counter(m, "qz_trending_plays_total", "result=\"too_old\"", rs);
        r->m_new = qz_metrics_counter(m, "qz_trending_plays_total", "result=\"too_new\"", rs);
        r->m_invalid = qz_metrics_counter(m, "qz_trending_plays_total", "result=\"invalid\"", rs);
        r->m_publish_s = qz_metrics_histogram(m, "qz_trending_publish_seconds", NULL,
                                              "Time to rank and swap the Redis lists", NULL, 0);
        r->m_publish_fail = qz_metrics_counter(m, "qz_trending_publish_failures_total", NULL,
                                               "Redis publishes that failed (retried next tick)");
        r->m_held = qz_metrics_counter(m, "qz_trending_merge_incomplete_total", NULL,
                                       "Publishes held back: a partition's partial was missing");
        r->m_fresh = qz_metrics_gauge(m, "qz_trending_freshness_lag_seconds", NULL,
                                      "Now minus the newest play (Kafka timestamp) reflected "
                                      "in the last Redis publish");
        r->m_fresh_max = qz_metrics_gauge(
            m, "qz_trending_freshness_max_lag_seconds", NULL,
            "At the last publish: now minus the oldest play (Kafka timestamp) it made visible");
        /* 50 ms apart up to 3 s (the p99 target is 2 s): a quantile read off the buckets is
         * within 50 ms of the plays' own */
        static const double vis_bounds[] = {
            0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
            0.85, 0.9, 0.95, 1,   1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5, 1.55, 1.6,
            1.65, 1.7, 1.75, 1.8, 1.85, 1.9, 1.95, 2,   2.05, 2.1, 2.15, 2.2, 2.25, 2.3, 2.35, 2.4,
            2.45, 2.5, 2.6,  2.7, 2.8,  2.9, 3,    3.5, 4,    5,   10,   30};
        r->m_visible = qz_metrics_histogram(
            m, "qz_trending_visible_seconds", NULL,
            "Per play: produce (Kafka timestamp) to the publish that made it visible in Redis",
            vis_bounds, sizeof(vis_bounds) / sizeof(vis_bounds[0]));
        r->m_plays7 = qz_metrics_gauge(m, "qz_trending_window_plays", NULL,
                                       "Plays inside the 7 d window (owned partitions)");
        r->m_pairs = qz_metrics_gauge(m, "qz_trending_window_pairs", NULL,
                                      "Distinct (track, user) pairs in the 7 d window");
        r->m_events = qz_metrics_gauge(m, "qz_trending_window_event_ids", NULL,
                                       "Event ids remembered for dedup");
        r->m_tracks = qz_metrics_gauge(m, "qz_trending_window_tracks", NULL, "Tracks interned");
        r->m_bytes =
            qz_metrics_gauge(m, "qz_trending_window_bytes", NULL, "Memory held by the window");
        r->m_rebuild_s = qz_metrics_gauge(m, "qz_trending_rebuild_seconds", NULL,
                                          "Duration of the last rebuild from play_history");
        r->m_rebuilt = qz_metrics_counter(m, "qz_trending_rebuilt_plays_total", NULL,
                                          "Plays loaded from play_history by rebuilds");
        r->m_snap_fail = qz_metrics_counter(m, "qz_trending_snapshot_failures_total", NULL,
                                            "trending_tracks writes that failed");
        r->m_restore_s = qz_metrics_gauge(m, "qz_trending_restore_seconds", NULL,
                                          "Duration of the last restore from the checkpoint");
        r->m_restored = qz_metrics_counter(m, "qz_trending_restored_plays_total", NULL,
                                           "Plays loaded from the checkpoint by restores");
        r->m_ckpt_s = qz_metrics_histogram(m, "qz_trending_checkpoint_seconds", NULL,
                                           "Time to save the checkpoint", NULL, 0);
        r->m_ckpt_fail = qz_metrics_counter(m, "qz_trending_checkpoint_failures_total", NULL,
                                            "Checkpoint saves that failed (retried)");
        r->m_ckpt_plays = qz_metrics_counter(m, "qz_trending_checkpoint_plays_total", NULL,
                                             "Plays written to the checkpoint");
        return r;
}

void ranker_free(struct ranker *r)
{
        if (!r)
                return;
        window_free(r->w);
        qz_catalog_free(r->cat);
        publish_free(r->pub);
        rank_merge_free(&r->merge);
        free(r->owned);
        free(r->next_off);
        free(r->vis);
        ckpt_free(r->ck);
        free(r->rows);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
}

bool ranker_redis_ok(struct ranker *r)
{
        return atomic_load(&r->redis_ok);
}

static int play_from_event(const json_t *ev, struct window_play *p)
{
        const char *s;
        char err[128];
        if (qz_json_get_uuid(ev, "event_id", true, &s, err, sizeof(err)) != 0 ||
            uuid_parse(s, p->event_id) != 0 ||
            qz_json_get_uuid(ev, "user_id", true, &s, err, sizeof(err)) != 0 ||
            uuid_parse(s, p->user_id) != 0 ||
            qz_json_get_uuid(ev, "track_id", true, &s, err, sizeof(err)) != 0 ||
            uuid_parse(s, p->track_id) != 0 ||
            qz_json_get_int(ev, "played_at", true, &p->played_at_ms, err, sizeof(err)) != 0)
                return -1;
        return 0;
}

static void count(struct ranker *r, enum window_result res)
{
        if (res == WINDOW_ADDED)
                r->dirty = true;
        qz_metric_inc(res == WINDOW_ADDED       ? r->m_added
                      : res == WINDOW_DUPLICATE ? r->m_dup
                      : res == WINDOW_TOO_OLD   ? r->m_old
                                                : r->m_new);
}

static void tick(struct ranker *r);

int ranker_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                    struct qz_kafka_batch *batch)
{
        struct ranker *r = opaque;
        window_advance(r->w, now_ms(r));
        for (size_t i = 0; i < n; i++) {
                const struct qz_avro_schema *s = NULL;
                json_t *ev = NULL;
                struct window_play p;
                char err[256];
                if (msgs[i].partition < 0 || msgs[i].partition >= r->cfg.nparts) {
                        qz_metric_inc(r->m_invalid);
                        continue;
                }
                /* the checkpoint's offset: every message up to here is in the window (or was
                 * invalid, and would be again) */
                r->next_off[msgs[i].partition] = msgs[i].offset + 1;
                /* The stats-aggregator sends undecodable plays to the DLQ; here they are
                 * only counted, so one bad message is not queued twice. */
                if (qz_avro_decode_json(r->avro, msgs[i].value, msgs[i].value_len, &s, &ev, err,
                                        sizeof(err)) != 0 ||
                    s != r->schema || play_from_event(ev, &p) != 0) {
                        qz_metric_inc(r->m_invalid);
                        json_decref(ev);
                        continue;
                }
                json_decref(ev);
                enum window_result res = window_add(r->w, msgs[i].partition, &p, true);
                count(r, res);
                if (res == WINDOW_ADDED && msgs[i].timestamp_ms > 0)
                        vis_note(r, msgs[i].timestamp_ms);
                if (msgs[i].timestamp_ms > r->newest_ts)
                        r->newest_ts = msgs[i].timestamp_ms;
                if (msgs[i].timestamp_ms > 0 &&
                    (r->oldest_unpub_ts == 0 || msgs[i].timestamp_ms < r->oldest_unpub_ts))
                        r->oldest_unpub_ts = msgs[i].timestamp_ms;
        }
        (void)batch;
        tick(r);
        /* The effect lives in memory; durability is the checkpoint (plays + offsets), else
         * play_history (rebuild) plus Kafka. */
        return 0;
}

void ranker_idle_cb(void *opaque)
{
        struct ranker *r = opaque;
        char err[256];
        int64_t mono = qz_clock_mono_ms();
        /* a ping per second notices Postgres coming back; more would only cost CPU */
        if (mono >= r->next_ping) {
                qz_pg_ping(r->pg, err, sizeof(err));
                r->next_ping = mono + 1000;
        }
        tick(r);
}

/* ---- merge ----------------------------------------------------------- */

static bool owns_all(const struct ranker *r)
{
        for (int p = 0; p < r->cfg.nparts; p++)
                if (!r->owned[p])
                        return false;
        return true;
}

static void write_partials(struct ranker *r)
{
        for (int p = 0; p < r->cfg.nparts; p++) {
                uint8_t *buf = NULL;
                size_t len = 0;
                char key[300], ttl[16];
                if (!r->owned[p] || rank_partial_encode(r->w, p, r->newest_ts, &buf, &len) != 0)
                        continue;
                snprintf(key, sizeof(key), "qoqnuz:trending:internal:partial:%s:%d",
                         r->cfg.group_id, p);
                snprintf(ttl, sizeof(ttl), "%d", PARTIAL_TTL_MS);
                const char *argv[] = {"SET", key, (const char *)buf, "PX", ttl};
                size_t lens[] = {3, strlen(key), len, 2, strlen(ttl)};
                qz_redis_append_argv(r->redis, 5, argv, lens);
                free(buf);
        }
}

/* true when this instance holds (or just took) the merger lock */
static bool take_lock(struct ranker *r)
{
        char key[300], ttl[16], err[256];
        redisReply *rep = NULL;
        snprintf(key, sizeof(key), "qoqnuz:trending:internal:merger:%s", r->cfg.group_id);
        snprintf(ttl, sizeof(ttl), "%d", LOCK_TTL_MS);
        /* take it if free, or extend it if ours: one script, so no race between GET and SET */
        const char *argv[] = {
            "EVAL",
            "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0",
            "1",
            key,
            r->cfg.instance_id,
            ttl};
        if (qz_redis_command_argv(r->redis, REDIS_REPLY_INTEGER, &rep, err, sizeof(err), 6, argv,
                                  NULL) != 0)
                return false;
        bool mine = rep->integer == 1;
        freeReplyObject(rep);
        return mine;
}

/* Sums every partition into r->merge: local ones from the window, the others from their
 * partials. 1 = complete, 0 = some partition is missing (do not publish), -1 = Redis error. */
static int merge_all(struct ranker *r)
{
        rank_merge_reset(&r->merge, window_ntracks(r->w));
        r->merge.newest_ms = r->newest_ts;
        for (int p = 0; p < r->cfg.nparts; p++) {
                size_t n;
                const struct window_counts *c = window_part_counts(r->w, p, &n);
                if (!r->owned[p])
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (c[i].plays_7d && rank_merge_add(&r->merge, (uint32_t)i, &c[i]) != 0)
                                return -1;
        }
        if (owns_all(r))
                return 1;
        int complete = 1;
        for (int p = 0; p < r->cfg.nparts; p++) {
                if (r->owned[p])
                        continue;
                char key[300];
                snprintf(key, sizeof(key), "qoqnuz:trending:internal:partial:%s:%d",
                         r->cfg.group_id, p);
                const char *argv[] = {"GET", key};
                qz_redis_append_argv(r->redis, 2, argv, NULL);
        }
        redisReply **rep = NULL;
        size_t nrep = 0;
        char err[256];
        if (qz_redis_exec(r->redis, &rep, &nrep, err, sizeof(err)) != 0)
                return -1;
        for (size_t i = 0; i < nrep; i++) {
                int64_t bucket = 0;
                if (rep[i]->type != REDIS_REPLY_STRING ||
                    rank_partial_decode(r->w, &r->merge, (const uint8_t *)rep[i]->str, rep[i]->len,
                                        &bucket) != 0 ||
                    bucket != window_cur_bucket(r->w)) {
                        complete = 0;
                        break;
                }
        }
        qz_redis_replies_free(rep, nrep);
        return complete;
}

/* ---- publish ----------------------------------------------------------- */

static void keep_rows(struct ranker *r, const struct rank_item *items, size_t n, int64_t calc,
                      long seq)
{
        size_t k = n < (size_t)r->cfg.pg_top ? n : (size_t)r->cfg.pg_top;
        struct publish_row *rows = calloc(k ? k : 1, sizeof(*rows));
        if (!rows)
                return;
        for (size_t i = 0; i < k; i++) {
                memcpy(rows[i].id, window_track_id(r->w, items[i].track), 16);
                rows[i].score = items[i].score;
                rows[i].c = items[i].c;
        }
        pthread_mutex_lock(&r->mu);
        free(r->rows);
        r->rows = rows;
        r->nrows = k;
        r->rows_calc_ms = calc;
        r->have_rows = true;
        if (seq > r->rows_seq)
                r->rows_seq = seq;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
}

static int snapshot(struct ranker *r, struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        pthread_mutex_lock(&r->mu);
        if (!r->have_rows) {
                pthread_mutex_unlock(&r->mu);
                snprintf(errstr, errstr_size, "no complete ranking yet");
                return -1;
        }
        size_t n = r->nrows;
        int64_t calc = r->rows_calc_ms;
        struct publish_row *rows = malloc((n ? n : 1) * sizeof(*rows));
        if (rows)
                memcpy(rows, r->rows, n * sizeof(*rows));
        pthread_mutex_unlock(&r->mu);
        if (!rows) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        int rc = publish_pg(pg, rows, n, calc, errstr, errstr_size);
        free(rows);
        return rc;
}

/* Saves the journal of the partitions in mask with their offsets. */
static int checkpoint(struct ranker *r, const bool *mask)
{
        char err[512];
        long n = 0;
        int fenced = 0;
        int64_t t0 = qz_clock_mono_ns();
        if (ckpt_save(r->ck, r->pg, r->w, mask, r->next_off, &n, &fenced, err, sizeof(err)) != 0) {
                qz_metric_inc(r->m_ckpt_fail);
                qz_warn("checkpoint: %s", err);
                return -1;
        }
        qz_metric_observe(r->m_ckpt_s, (double)(qz_clock_mono_ns() - t0) / 1e9);
        qz_metric_add(r->m_ckpt_plays, (double)n);
        if (fenced)
                qz_warn("checkpoint: %d partition(s) claimed by another instance", fenced);
        return 0;
}

static void maybe_snapshot(struct ranker *r, int64_t mono)
{
        char err[512];
        if (mono < r->next_snapshot)
                return;
        /* Postgres down: Redis keeps updating; the snapshot retries next interval */
        if (snapshot(r, r->pg, err, sizeof(err)) != 0) {
                qz_metric_inc(r->m_snap_fail);
                qz_warn("trending_tracks snapshot: %s", err);
                r->next_snapshot = mono + 1000;
        } else {
                r->next_snapshot = mono + r->cfg.snapshot_ms;
        }
}

/* Redis now reflects every play consumed so far: the worst lag of those made visible. */
static void published_since(struct ranker *r)
{
        int64_t now = qz_time_now_ms();
        if (r->oldest_unpub_ts > 0)
                qz_metric_set(r->m_fresh_max, (double)(now - r->oldest_unpub_ts) / 1000.0);
        r->oldest_unpub_ts = 0;
        for (size_t i = 0; i < r->nvis; i++) {
                double lag = (double)(now - r->vis[i].bin * VIS_BIN_MS) / 1000.0;
                for (uint32_t k = 0; k < r->vis[i].n; k++)
                        qz_metric_observe(r->m_visible, lag);
        }
        r->nvis = 0;
}

/* The ranking is unchanged since the last full publish: only meta.calculated_at moves (the
 * lists are current as of it). Compare-and-set on the value this instance wrote last, so a
 * Redis that restarted, was flushed or was written by someone else gets a full publish.
 * 1 = refreshed, 0 = a full publish is needed, -1 = Redis error. */
static int refresh_meta(struct ranker *r, int64_t now)
{
        char calc[40], err[256];
        redisReply *rep = NULL;
        qz_time_format(now, calc, sizeof(calc));
        const char *argv[] = {"EVAL",
                              "if redis.call('HGET', KEYS[1], 'calculated_at') == ARGV[1] then "
                              "redis.call('HSET', KEYS[1], 'calculated_at', ARGV[2]) return 1 end "
                              "return 0",
                              "1",
                              "qoqnuz:trending:meta",
                              r->pub_calc,
                              calc};
        if (qz_redis_command_argv(r->redis, REDIS_REPLY_INTEGER, &rep, err, sizeof(err), 6, argv,
                                  NULL) != 0) {
                qz_warn("redis: refreshing meta: %s", err);
                return -1;
        }
        int ok = rep->integer == 1;
        freeReplyObject(rep);
        if (ok)
                snprintf(r->pub_calc, sizeof(r->pub_calc), "%s", calc);
        return ok;
}

static void tick(struct ranker *r)
{
        int64_t mono = qz_clock_mono_ms(), now = now_ms(r);
        char err[512];
        if (mono >= r->next_ckpt) {
                /* Postgres down: the journal keeps growing and the next try writes it all */
                r->next_ckpt = mono + (checkpoint(r, r->owned) == 0 ? r->cfg.checkpoint_ms : 1000);
        }
        pthread_mutex_lock(&r->mu);
        long req = r->job_req;
        bool job = req > r->rows_seq;
        pthread_mutex_unlock(&r->mu);
        if (mono < r->next_publish && !job)
                return;
        r->next_publish = mono + r->cfg.publish_ms;
        window_advance(r->w, now);
        if (mono >= r->next_catalog) {
                long changed = 0;
                if (qz_catalog_refresh(r->cat, r->pg, &changed, err, sizeof(err)) != 0)
                        qz_warn("catalog refresh: %s", err);
                if (changed > 0)
                        r->dirty = true; /* titles, genres: the hashes and genre lists */
                r->next_catalog = mono + CATALOG_REFRESH_MS;
        }
        struct window_stats st;
        window_stats(r->w, &st);
        qz_metric_set(r->m_plays7, (double)st.plays_7d);
        qz_metric_set(r->m_pairs, (double)st.pairs);
        qz_metric_set(r->m_events, (double)st.event_ids);
        qz_metric_set(r->m_tracks, (double)st.tracks);
        qz_metric_set(r->m_bytes, (double)st.bytes);

        bool all = owns_all(r);
        if (all && !job && !r->dirty && r->cfg.refresh_ms > 0 && mono < r->next_refresh &&
            window_cur_bucket(r->w) == r->pub_bucket) {
                int m = refresh_meta(r, now);
                if (m == 1) {
                        atomic_store(&r->redis_ok, true);
                        pthread_mutex_lock(&r->mu);
                        r->rows_calc_ms = now; /* the same rows, current as of now */
                        pthread_mutex_unlock(&r->mu);
                        if (r->newest_ts > 0)
                                qz_metric_set(r->m_fresh,
                                              (double)(qz_time_now_ms() - r->newest_ts) / 1000.0);
                        published_since(r);
                        maybe_snapshot(r, mono);
                        return;
                }
                if (m < 0) {
                        atomic_store(&r->redis_ok, false);
                        return;
                }
                /* m == 0: Redis lost or changed the lists: publish them in full below */
        }
        if (!all) {
                write_partials(r);
                if (qz_redis_exec(r->redis, NULL, NULL, err, sizeof(err)) != 0) {
                        qz_warn("redis: writing partials: %s", err);
                        atomic_store(&r->redis_ok, false);
                        return;
                }
                if (!take_lock(r)) {
                        atomic_store(&r->redis_ok, qz_redis_ping(r->redis, err, sizeof(err)) == 0);
                        /* another instance merges and publishes; a job that landed here
                         * needs the merged ranking too */
                        struct rank_item *items = NULL;
                        size_t n = 0;
                        if (job && merge_all(r) == 1 &&
                            rank_build(&r->merge, r->w, &items, &n) == 0)
                                keep_rows(r, items, n, now, req);
                        free(items);
                        return;
                }
        }
        int64_t t0 = qz_clock_mono_ns();
        int m = merge_all(r);
        if (m <= 0) {
                if (m == 0)
                        qz_metric_inc(r->m_held);
                atomic_store(&r->redis_ok, m == 0);
                return;
        }
        struct rank_item *items = NULL;
        size_t n = 0;
        if (rank_build(&r->merge, r->w, &items, &n) != 0)
                return;
        keep_rows(r, items, n, now, req);
        int64_t bucket = window_cur_bucket(r->w);
        if (publish_redis(r->pub, r->w, r->cat, items, n, now, "stream", err, sizeof(err)) != 0) {
                r->dirty = true;
                qz_metric_inc(r->m_publish_fail);
                qz_warn("redis publish: %s", err);
                atomic_store(&r->redis_ok, false);
        } else {
                atomic_store(&r->redis_ok, true);
                r->dirty = false;
                r->pub_bucket = bucket;
                r->next_refresh = mono + r->cfg.refresh_ms;
                qz_time_format(now, r->pub_calc, sizeof(r->pub_calc));
                qz_metric_observe(r->m_publish_s, (double)(qz_clock_mono_ns() - t0) / 1e9);
                if (r->merge.newest_ms > 0)
                        qz_metric_set(r->m_fresh,
                                      (double)(qz_time_now_ms() - r->merge.newest_ms) / 1000.0);
                published_since(r);
        }
        free(items);
        maybe_snapshot(r, mono);
}

int ranker_job_calculate(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                         struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        struct ranker *r = opaque;
        struct timespec until;
        int waited = 0;
        (void)run_id;
        (void)params;
        /* a ranking merged after this request: the loop thread owns the window, so ask it */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += JOB_WAIT_S;
        pthread_mutex_lock(&r->mu);
        long req = ++r->job_req;
        while (r->rows_seq < req && waited == 0)
                waited = pthread_cond_timedwait(&r->cv, &r->mu, &until);
        bool fresh = r->rows_seq >= req;
        pthread_mutex_unlock(&r->mu);
        if (!fresh) {
                snprintf(errstr, errstr_size,
                         "no complete ranking within %d s (partials of other instances missing?)",
                         JOB_WAIT_S);
                return -1;
        }
        if (snapshot(r, pg, errstr, errstr_size) != 0)
                return -1;
        pthread_mutex_lock(&r->mu);
        res->processed = (long)r->nrows;
        pthread_mutex_unlock(&r->mu);
        res->expected = res->processed;
        snprintf(res->message, sizeof(res->message), "%ld tracks written to trending_tracks",
                 res->processed);
        return 0;
}

/* ---- assignment: rebuild from play_history --------------------------------- */

/* A binary timestamptz: big-endian int64 microseconds since 2000-01-01 UTC. */
static int64_t pg_timestamptz_ms(const uint8_t *b)
{
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
                u = u << 8 | b[i];
        int64_t us = (int64_t)u;
        int64_t ms = us / 1000 - (us % 1000 < 0); /* floor */
        return ms + 946684800000LL;
}

#define FETCH_ROWS     50000
#define STR_(x)        #x
#define STR(x)         STR_(x)
#define FETCH_SQL      "FETCH " STR(FETCH_ROWS) " FROM trending_rebuild"
#define PREFETCH_AHEAD 8 /* plays: enough misses in flight to cover memory latency */

/* The planner's estimate of the rows a rebuild reads (0 when unknown): sizing the window's
 * tables up front saves growing them step by step, which at 10M plays costs more than
 * filling them (each doubling rehashes everything and faults in fresh memory). */
static double rebuild_estimate(struct ranker *r, const char *const *params)
{
        char err[256];
        double rows = 0;
        PGresult *res = qz_pg_query(r->pg,
                                    "EXPLAIN (FORMAT JSON) SELECT 1 FROM play_history "
                                    "WHERE played_at >= $1::timestamptz",
                                    1, params, err, sizeof(err));
        if (!res)
                return 0;
        json_t *plan = PQntuples(res) == 1 ? json_loads(PQgetvalue(res, 0, 0), 0, NULL) : NULL;
        json_t *v = json_object_get(json_object_get(json_array_get(plan, 0), "Plan"), "Plan Rows");
        if (json_is_number(v))
                rows = json_number_value(v);
        json_decref(plan);
        PQclear(res);
        return rows > 0 && rows < 4e9 ? rows : 0;
}

static int rebuild(struct ranker *r, const bool *want)
{
        PGconn *conn = qz_pg_conn(r->pg);
        char err[512], lower[40], n_s[32], secs[32];
        int64_t t0 = qz_clock_mono_ms(), now = now_ms(r);
        long loaded = 0;
        /* the oldest bucket of the 7 d window */
        int64_t lo = (window_cur_bucket(r->w) - WINDOW_7D_MS / r->cfg.bucket_ms) * r->cfg.bucket_ms;
        (void)now;
        qz_time_format(lo, lower, sizeof(lower));
        const char *params[] = {lower};
        PGresult *res = NULL;
        struct window_play *batch = malloc(FETCH_ROWS * sizeof(*batch));
        int *batch_part = malloc(FETCH_ROWS * sizeof(*batch_part));
        if (!batch || !batch_part) {
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        /* users spread evenly over partitions (murmur2 of the key); 5% over the estimate
         * so a slightly low one does not end in a doubling right at the end. Asked before
         * the transaction: a failed EXPLAIN only loses the hint. */
        double est = rebuild_estimate(r, params) * 1.05 / r->cfg.nparts;
        if (qz_pg_begin(r->pg, err, sizeof(err)) != 0)
                goto fail;
        for (int p = 0; est > 0 && p < r->cfg.nparts; p++)
                if (want[p] && window_reserve(r->w, p, (size_t)est, false) != 0) {
                        /* a hint only: the tables grow as needed */
                        qz_warn("rebuild: cannot size the window for %.0f plays per partition",
                                est);
                        break;
                }
        if (!(res = qz_pg_query(r->pg,
                                /* binary rows: uuids as 16 bytes and the timestamp as
                                 * an int64, no text formatting or parsing on either side */
                                "DECLARE trending_rebuild NO SCROLL CURSOR FOR "
                                "SELECT event_id, user_id, track_id, played_at "
                                "FROM play_history WHERE played_at >= $1::timestamptz",
                                1, params, err, sizeof(err))))
                goto fail_tx;
        PQclear(res);
        /* Pipelined: the next FETCH is sent before this one's rows are added, and its
         * rows are read off the socket while adding (PQconsumeInput), so Postgres produces
         * them while this thread fills the window. */
        if (!PQsendQueryParams(conn, FETCH_SQL, 0, NULL, NULL, NULL, NULL, 1)) {
                snprintf(err, sizeof(err), "fetch: %s", PQerrorMessage(conn));
                goto fail_tx;
        }
        for (;;) {
                PGresult *extra;
                res = PQgetResult(conn);
                while ((extra = PQgetResult(conn)))
                        PQclear(extra);
                if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
                        snprintf(err, sizeof(err), "fetch: %s", PQerrorMessage(conn));
                        PQclear(res);
                        goto fail_tx;
                }
                int rows = PQntuples(res);
                if (rows > 0 && !PQsendQueryParams(conn, FETCH_SQL, 0, NULL, NULL, NULL, NULL, 1)) {
                        snprintf(err, sizeof(err), "fetch: %s", PQerrorMessage(conn));
                        PQclear(res);
                        goto fail_tx;
                }
                /* decode the chunk, then add it with the slots of the play PREFETCH_AHEAD
                 * rows on already on their way into the cache */
                int nb = 0;
                for (int i = 0; i < rows; i++) {
                        char user[37];
                        if ((i & 4095) == 0)
                                PQconsumeInput(conn);
                        if (PQgetlength(res, i, 0) != 16 || PQgetlength(res, i, 1) != 16 ||
                            PQgetlength(res, i, 2) != 16 || PQgetlength(res, i, 3) != 8)
                                continue;
                        struct window_play *p = &batch[nb];
                        memcpy(p->user_id, PQgetvalue(res, i, 1), 16);
                        /* the producer keys plays by the user id's canonical text */
                        uuid_unparse_lower(p->user_id, user);
                        int part = rd_kafka_msg_partitioner_murmur2(NULL, user, 36, r->cfg.nparts,
                                                                    NULL, NULL);
                        if (!want[part])
                                continue;
                        memcpy(p->event_id, PQgetvalue(res, i, 0), 16);
                        memcpy(p->track_id, PQgetvalue(res, i, 2), 16);
                        p->played_at_ms = pg_timestamptz_ms((const uint8_t *)PQgetvalue(res, i, 3));
                        batch_part[nb++] = part;
                }
                for (int i = 0; i < nb; i++) {
                        if ((i & 4095) == 0)
                                PQconsumeInput(conn);
                        if (i + 2 * PREFETCH_AHEAD < nb)
                                window_prefetch_ids(r->w, &batch[i + 2 * PREFETCH_AHEAD]);
                        if (i + PREFETCH_AHEAD < nb)
                                window_prefetch(r->w, batch_part[i + PREFETCH_AHEAD],
                                                &batch[i + PREFETCH_AHEAD]);
                        /* not journaled: the first checkpoint after a rebuild writes the
                         * window's state instead (ckpt_mark_full) */
                        if (window_add(r->w, batch_part[i], &batch[i], false) == WINDOW_ADDED)
                                loaded++;
                }
                PQclear(res);
                if (rows == 0)
                        break;
        }
        if (qz_pg_commit(r->pg, err, sizeof(err)) != 0)
                goto fail;
        snprintf(n_s, sizeof(n_s), "%ld", loaded);
        snprintf(secs, sizeof(secs), "%.3f", (qz_clock_mono_ms() - t0) / 1000.0);
        qz_metric_add(r->m_rebuilt, (double)loaded);
        qz_metric_set(r->m_rebuild_s, (qz_clock_mono_ms() - t0) / 1000.0);
        qz_log_kv(QZ_LOG_INFO, "rebuilt window from play_history", "plays", n_s, "seconds", secs,
                  "since", lower, NULL);
        free(batch);
        free(batch_part);
        return 0;
fail_tx : {
        char ignore[64];
        qz_pg_rollback(r->pg, ignore, sizeof(ignore));
}
fail:
        free(batch);
        free(batch_part);
        qz_log_kv(QZ_LOG_ERROR, "rebuild from play_history failed; retrying", "error", err, NULL);
        return -1;
}

/* Restores want[] from the checkpoint, rebuilds the partitions without one from
 * play_history, and sets each partition's start offset in parts. */
static int load(struct ranker *r, const bool *want, rd_kafka_topic_partition_list_t *parts)
{
        char err[512], n_s[32], secs[32];
        int64_t *off = calloc((size_t)r->cfg.nparts, sizeof(int64_t));
        bool *rebuild_want = calloc((size_t)r->cfg.nparts, sizeof(bool));
        bool any = false;
        long restored = 0;
        int rc = -1, nrestored = 0;
        int64_t t0 = qz_clock_mono_ms();
        if (!off || !rebuild_want)
                goto done;
        if (ckpt_restore(r->ck, r->pg, r->w, want, off, &restored, err, sizeof(err)) != 0) {
                qz_log_kv(QZ_LOG_ERROR, "restore from checkpoint failed; retrying", "error", err,
                          NULL);
                goto done;
        }
        for (int p = 0; p < r->cfg.nparts; p++) {
                if (!want[p])
                        continue;
                if (off[p] == CKPT_NO_OFFSET) {
                        rebuild_want[p] = any = true;
                        /* Handover: the rebuild holds what play_history has; replaying the
                         * topic from its earliest retained offset adds what it lacks, and
                         * event-id dedup drops the overlap. */
                        r->next_off[p] = RD_KAFKA_OFFSET_BEGINNING;
                } else {
                        r->next_off[p] = off[p];
                        nrestored++;
                }
        }
        if (nrestored > 0) {
                double s = (qz_clock_mono_ms() - t0) / 1000.0;
                char np[16];
                snprintf(n_s, sizeof(n_s), "%ld", restored);
                snprintf(secs, sizeof(secs), "%.3f", s);
                snprintf(np, sizeof(np), "%d", nrestored);
                qz_metric_add(r->m_restored, (double)restored);
                qz_metric_set(r->m_restore_s, s);
                qz_log_kv(QZ_LOG_INFO, "restored window from checkpoint", "partitions", np, "plays",
                          n_s, "seconds", secs, NULL);
        }
        if (any && rebuild(r, rebuild_want) != 0)
                goto done;
        for (int p = 0; p < r->cfg.nparts; p++)
                if (rebuild_want[p])
                        ckpt_mark_full(r->ck, p);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *tp = &parts->elems[i];
                if (strcmp(tp->topic, r->cfg.topic) == 0 && tp->partition >= 0 &&
                    tp->partition < r->cfg.nparts && want[tp->partition])
                        tp->offset = r->next_off[tp->partition];
        }
        rc = 0;
done:
        free(off);
        free(rebuild_want);
        return rc;
}

void ranker_assign_cb(void *opaque, rd_kafka_topic_partition_list_t *parts)
{
        struct ranker *r = opaque;
        bool *want = calloc((size_t)r->cfg.nparts, sizeof(bool));
        bool any = false;
        if (!want)
                return;
        window_advance(r->w, now_ms(r));
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *tp = &parts->elems[i];
                if (strcmp(tp->topic, r->cfg.topic) != 0 || tp->partition < 0 ||
                    tp->partition >= r->cfg.nparts)
                        continue;
                window_drop_part(r->w, tp->partition);
                window_part_activate(r->w, tp->partition);
                r->owned[tp->partition] = true;
                want[tp->partition] = true;
                any = true;
        }
        /* Postgres down at assignment: retry until it answers (the partitions must not be
         * consumed without their state, or the lists would be low until the next restart). */
        while (any && load(r, want, parts) != 0) {
                for (int p = 0; p < r->cfg.nparts; p++)
                        if (want[p]) {
                                window_drop_part(r->w, p);
                                window_part_activate(r->w, p);
                        }
                if (qz_sig_stop_requested())
                        break;
                sleep(1);
        }
        free(want);
        r->dirty = true;
        r->next_publish = 0;
        r->next_ckpt = 0; /* a rebuild's plays reach the checkpoint right away */
}

void ranker_revoke_cb(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
        struct ranker *r = opaque;
        bool *mask = calloc((size_t)r->cfg.nparts, sizeof(bool));
        for (int i = 0; mask && i < parts->cnt; i++) {
                const rd_kafka_topic_partition_t *tp = &parts->elems[i];
                if (strcmp(tp->topic, r->cfg.topic) == 0 && tp->partition >= 0 &&
                    tp->partition < r->cfg.nparts && r->owned[tp->partition])
                        mask[tp->partition] = true;
        }
        /* a last save, so the next owner starts from here (a fenced one is skipped) */
        if (mask)
                checkpoint(r, mask);
        free(mask);
        for (int i = 0; i < parts->cnt; i++) {
                const rd_kafka_topic_partition_t *tp = &parts->elems[i];
                if (strcmp(tp->topic, r->cfg.topic) != 0 || tp->partition < 0 ||
                    tp->partition >= r->cfg.nparts)
                        continue;
                window_drop_part(r->w, tp->partition);
                r->owned[tp->partition] = false;
        }
        r->dirty = true;
}
