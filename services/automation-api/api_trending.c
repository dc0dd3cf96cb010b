/* api_trending.c - the trending endpoints: Redis read path, Postgres fallback, render cache,
 * recalculation. */
#include "api_trending.h"

#include "clock.h"
#include "connpool.h"
#include "json.h"
#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_SLOTS 64
#define MAX_GENRE   64

struct cache_entry {
        char key[MAX_GENRE + 16];
        char *body;
        size_t len;
        int64_t expires_ms; /* monotonic */
        const char *source; /* static */
};

struct trending_cache {
        pthread_mutex_t lock;
        struct cache_entry e[CACHE_SLOTS];
        unsigned next; /* round-robin replacement */
};

struct trending_cache *trending_cache_new(void)
{
        struct trending_cache *c = calloc(1, sizeof(*c));
        if (c)
                pthread_mutex_init(&c->lock, NULL);
        return c;
}

void trending_cache_free(struct trending_cache *c)
{
        if (!c)
                return;
        for (int i = 0; i < CACHE_SLOTS; i++)
                free(c->e[i].body);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

static bool cache_get(struct trending_cache *c, const char *key, struct qz_http_response *resp)
{
        bool hit = false;
        int64_t now = qz_clock_mono_ms();
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < CACHE_SLOTS; i++) {
                struct cache_entry *e = &c->e[i];
                if (!e->body || e->expires_ms <= now || strcmp(e->key, key) != 0)
                        continue;
                char *b = malloc(e->len + 1);
                if (b) {
                        memcpy(b, e->body, e->len + 1);
                        free(resp->body);
                        resp->body = b;
                        resp->body_len = e->len;
                        resp->content_type = "application/json";
                        resp->status = 200;
                        qz_http_add_header(resp, "X-Trending-Source", e->source);
                        hit = true;
                }
                break;
        }
        pthread_mutex_unlock(&c->lock);
        return hit;
}

static void cache_put(struct trending_cache *c, const char *key, const char *body, size_t len,
                      long ttl_ms, const char *source)
{
        char *copy = malloc(len + 1);
        if (!copy)
                return;
        memcpy(copy, body, len + 1);
        int64_t now = qz_clock_mono_ms();
        pthread_mutex_lock(&c->lock);
        struct cache_entry *slot = NULL;
        for (int i = 0; i < CACHE_SLOTS && !slot; i++)
                if (c->e[i].body && strcmp(c->e[i].key, key) == 0)
                        slot = &c->e[i];
        for (int i = 0; i < CACHE_SLOTS && !slot; i++)
                if (!c->e[i].body || c->e[i].expires_ms <= now)
                        slot = &c->e[i];
        if (!slot)
                slot = &c->e[c->next++ % CACHE_SLOTS];
        free(slot->body);
        snprintf(slot->key, sizeof(slot->key), "%s", key);
        slot->body = copy;
        slot->len = len;
        slot->expires_ms = now + ttl_ms;
        slot->source = source;
        pthread_mutex_unlock(&c->lock);
}

/* "1737158400000" (epoch ms) or an RFC 3339 string -> json string; NULL -> null. */
static json_t *time_value(const char *s)
{
        if (!s || !*s)
                return json_null();
        bool digits = true;
        for (const char *p = s; *p; p++)
                digits = digits && isdigit((unsigned char)*p);
        if (digits) {
                char buf[40];
                if (qz_time_format(strtoll(s, NULL, 10), buf, sizeof(buf)) == 0)
                        return json_string(buf);
        }
        return json_string(s);
}

static json_t *int_value(const char *s)
{
        return s ? json_integer(strtoll(s, NULL, 10)) : json_integer(0);
}

static json_t *genres_value(const char *s)
{
        json_t *a = NULL;
        if (s && s[0] == '[')
                a = json_loads(s, 0, NULL);
        if (json_is_array(a))
                return a;
        json_decref(a);
        a = json_array();
        while (s && *s) {
                size_t n = strcspn(s, ",");
                if (n > 0)
                        json_array_append_new(a, json_stringn(s, n));
                s += n + (s[n] == ',');
        }
        return a;
}

static const char *hval(const redisReply *r, size_t i)
{
        if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
            r->element[i]->type != REDIS_REPLY_STRING)
                return NULL;
        return r->element[i]->str;
}

static const char *hash_field(const redisReply *h, const char *name)
{
        for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
                if (h->element[i]->type == REDIS_REPLY_STRING &&
                    strcmp(h->element[i]->str, name) == 0)
                        return hval(h, i + 1);
        return NULL;
}

enum {
        F_TITLE,
        F_ARTIST_ID,
        F_ARTIST_NAME,
        F_ALBUM_ID,
        F_ALBUM_TITLE,
        F_DURATION,
        F_P24,
        F_P7,
        F_L24,
        F_L7,
        F_CALC,
        F_GENRES,
        F_COUNT
};
static const char *const track_fields[F_COUNT] = {"title",
                                                  "artist_id",
                                                  "artist_name",
                                                  "album_id",
                                                  "album_title",
                                                  "duration_ms",
                                                  "play_count_24h",
                                                  "play_count_7d",
                                                  "unique_listeners_24h",
                                                  "unique_listeners_7d",
                                                  "calculated_at",
                                                  "genres"};

/* Renders the answer from Redis. 1 = done (*out malloc'd), 0 = Redis holds no
 * chart (fall back), -1 = Redis failed (fall back). */
static int from_redis(struct qz_redis *r, const char *genre, long limit, char **out)
{
        char err[256], key[MAX_GENRE + 32];
        redisReply **rep = NULL, **rows = NULL;
        size_t nrep = 0, nrows = 0;
        json_t *body = NULL;
        int rc = -1;
        if (genre)
                snprintf(key, sizeof(key), "qoqnuz:trending:genre:%s", genre);
        else
                snprintf(key, sizeof(key), "qoqnuz:trending:global");
        char stop[24];
        snprintf(stop, sizeof(stop), "%ld", limit - 1);
        const char *zargv[] = {"ZREVRANGE", key, "0", stop, "WITHSCORES"};
        const char *margv[] = {"HGETALL", "qoqnuz:trending:meta"};
        qz_redis_append_argv(r, 5, zargv, NULL);
        qz_redis_append_argv(r, 2, margv, NULL);
        if (qz_redis_exec(r, &rep, &nrep, err, sizeof(err)) != 0) {
                qz_debug("trending: redis: %s", err);
                goto done;
        }
        const redisReply *z = rep[0], *meta = rep[1];
        if (z->type != REDIS_REPLY_ARRAY || meta->type != REDIS_REPLY_ARRAY)
                goto done;
        if (meta->elements == 0) {
                rc = 0; /* the ranker has not written a chart yet */
                goto done;
        }
        size_t n = z->elements / 2;
        for (size_t i = 0; i < n; i++) {
                char tkey[128];
                snprintf(tkey, sizeof(tkey), "qoqnuz:trending:track:%s", z->element[2 * i]->str);
                const char *argv[2 + F_COUNT] = {"HMGET", tkey};
                for (int f = 0; f < F_COUNT; f++)
                        argv[2 + f] = track_fields[f];
                qz_redis_append_argv(r, 2 + F_COUNT, argv, NULL);
        }
        if (n > 0 && qz_redis_exec(r, &rows, &nrows, err, sizeof(err)) != 0) {
                qz_debug("trending: redis: %s", err);
                goto done;
        }
        const char *meta_calc = hash_field(meta, "calculated_at");
        json_t *tracks = json_array();
        body = json_pack("{s:o, s:I, s:o}", "tracks", tracks, "total", (json_int_t)0,
                         "calculated_at", time_value(meta_calc));
        for (size_t i = 0; i < n; i++) {
                const redisReply *h = rows[i];
                const char *title = hval(h, F_TITLE);
                if (!title)
                        continue; /* hash expired or not written yet: skip the row */
                const char *album_id = hval(h, F_ALBUM_ID);
                const char *calc = hval(h, F_CALC) ? hval(h, F_CALC) : meta_calc;
                json_t *albums = album_id && *album_id ? json_pack("{s:s, s:s?}", "id", album_id,
                                                                   "title", hval(h, F_ALBUM_TITLE))
                                                       : json_null();
                json_t *t = json_pack(
                    "{s:s, s:s, s:o, s:o, s:{s:s?, s:s?}, s:o, s:{s:f, s:o, s:o, s:o, s:o, s:o}}",
                    "id", z->element[2 * i]->str, "title", title, "duration_ms",
                    int_value(hval(h, F_DURATION)), "genres", genres_value(hval(h, F_GENRES)),
                    "artists", "id", hval(h, F_ARTIST_ID), "name", hval(h, F_ARTIST_NAME), "albums",
                    albums, "trending_data", "trend_score",
                    strtod(z->element[2 * i + 1]->str, NULL), "play_count_24h",
                    int_value(hval(h, F_P24)), "play_count_7d", int_value(hval(h, F_P7)),
                    "unique_listeners_24h", int_value(hval(h, F_L24)), "unique_listeners_7d",
                    int_value(hval(h, F_L7)), "calculated_at", time_value(calc));
                if (t)
                        json_array_append_new(tracks, t);
        }
        json_object_set_new(body, "total", json_integer((json_int_t)json_array_size(tracks)));
        *out = json_dumps(body, JSON_COMPACT);
        rc = *out ? 1 : -1;
done:
        json_decref(body);
        qz_redis_replies_free(rep, nrep);
        qz_redis_replies_free(rows, nrows);
        return rc;
}

static const char *pg_sql =
    "SELECT json_build_object('tracks', coalesce(json_agg(x.j ORDER BY x.trend_score DESC, "
    "x.track_id), '[]'::json), 'total', count(*), 'calculated_at', max(x.calc))::text "
    "FROM (SELECT tt.track_id, tt.trend_score, " API_TS(
        "tt.calculated_at") " AS calc, " API_TRACK_JSONB
                            " || jsonb_build_object('trending_data', jsonb_build_object("
                            "'trend_score', tt.trend_score, 'play_count_24h', tt.play_count_24h, "
                            "'play_count_7d', tt.play_count_7d, 'unique_listeners_24h', "
                            "tt.unique_listeners_24h, "
                            "'unique_listeners_7d', tt.unique_listeners_7d, "
                            "'calculated_at', " API_TS(
                                "tt.calculated_at") ")) AS j FROM trending_tracks tt JOIN tracks t "
                                                    "ON t.id = tt.track_id AND t.deleted_at IS "
                                                    "NULL "
                                                    "JOIN artists ar ON ar.id = t.artist_id LEFT "
                                                    "JOIN albums al ON al.id = t.album_id "
                                                    "WHERE $2::text IS NULL OR $2::text = ANY "
                                                    "(t.genres) "
                                                    "ORDER BY tt.trend_score DESC, tt.track_id "
                                                    "LIMIT $1::int) x";

static bool genre_ok(const char *g)
{
        size_t n = strlen(g);
        if (n == 0 || n > MAX_GENRE)
                return false;
        for (const char *p = g; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

void api_trending_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                         void *opaque)
{
        struct api *a = opaque;
        long limit;
        if (!api_query_int(req, resp, API_PLAIN, "limit", 50, 1, 100, &limit))
                return;
        const char *genre = qz_http_query(req, "genre");
        if (genre && !genre_ok(genre)) {
                api_error(resp, 400, API_PLAIN, "bad_request",
                          "genre must be 1 to %d printable characters", MAX_GENRE);
                return;
        }
        char key[MAX_GENRE + 16];
        snprintf(key, sizeof(key), "%ld|%s", limit, genre ? genre : "");
        if (a->cfg.trending_cache_ms > 0 && cache_get(a->trending, key, resp))
                return;

        struct connpool_slot *s = connpool_acquire(a->pool, a->cfg.pool_wait_ms);
        if (!s) {
                api_error(resp, 503, API_PLAIN, "unavailable", "server busy");
                qz_http_add_header(resp, "Retry-After", "1");
                return;
        }
        char *body = NULL;
        const char *source = "redis";
        if (a->cfg.trending_naive || from_redis(s->redis, genre, limit, &body) != 1) {
                char err[512], lim[24];
                snprintf(lim, sizeof(lim), "%ld", limit);
                const char *v[] = {lim, genre};
                PGresult *res = qz_pg_query(s->pg, pg_sql, 2, v, err, sizeof(err));
                if (!res) {
                        api_pg_failed(resp, API_PLAIN, s->pg, "trending", err);
                        connpool_release(a->pool, s);
                        return;
                }
                body = strdup(PQgetvalue(res, 0, 0));
                PQclear(res);
                source = "postgres";
        }
        connpool_release(a->pool, s);
        if (!body) {
                api_error(resp, 500, API_PLAIN, "internal", "out of memory");
                return;
        }
        size_t len = strlen(body);
        /* a fallback answer is cached too: a Redis outage must not become a Postgres storm */
        if (a->cfg.trending_cache_ms > 0)
                cache_put(a->trending, key, body, len, a->cfg.trending_cache_ms, source);
        free(resp->body);
        resp->body = body;
        resp->body_len = len;
        resp->content_type = "application/json";
        resp->status = 200;
        qz_http_add_header(resp, "X-Trending-Source", source);
}

int api_wait_run(struct qz_pg *pg, const char *run_id, long wait_ms, char *status, char *message,
                 size_t message_size, char *errstr, size_t errstr_size)
{
        int64_t deadline = qz_clock_mono_ms() + wait_ms;
        const char *v[] = {run_id};
        for (;;) {
                PGresult *res = qz_pg_query(pg,
                                            "SELECT status, coalesce(message, '') FROM "
                                            "automation_job_runs WHERE run_id = $1::uuid",
                                            1, v, errstr, errstr_size);
                if (!res)
                        return -1;
                snprintf(status, 16, "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "missing");
                snprintf(message, message_size, "%s", PQntuples(res) ? PQgetvalue(res, 0, 1) : "");
                PQclear(res);
                if (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
                    strcmp(status, "missing") == 0 || qz_clock_mono_ms() >= deadline)
                        return 0;
                usleep(100 * 1000);
        }
}

void api_trending_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                          void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        if (!api_auth(a, req, resp, true, API_SUCCESS, &who))
                return;
        struct connpool_slot *s = connpool_acquire(a->pool, a->cfg.pool_wait_ms);
        if (!s) {
                api_error(resp, 503, API_SUCCESS, "unavailable", "server busy");
                return;
        }
        char err[512], run_id[QZ_UUID_STR_LEN + 1], status[16], msg[512];
        PGresult *res =
            qz_pg_query(s->pg, "SELECT calculate_trending_tracks()", 0, NULL, err, sizeof(err));
        if (!res) {
                api_pg_failed(resp, API_SUCCESS, s->pg, "queueing calculate-trending", err);
                goto done;
        }
        snprintf(run_id, sizeof(run_id), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (api_wait_run(s->pg, run_id, a->cfg.trending_wait_ms, status, msg, sizeof(msg), err,
                         sizeof(err)) != 0) {
                api_pg_failed(resp, API_SUCCESS, s->pg, "calculate-trending status", err);
                goto done;
        }
        if (strcmp(status, "succeeded") == 0) {
                qz_http_reply_json_new(resp, 200,
                                       json_pack("{s:b, s:s, s:s, s:s}", "success", 1, "message",
                                                 "Trending tracks calculated successfully",
                                                 "run_id", run_id, "status", status));
        } else if (strcmp(status, "failed") == 0) {
                qz_http_reply_json_new(resp, 500,
                                       json_pack("{s:b, s:{s:s, s:s}, s:s, s:s}", "success", 0,
                                                 "error", "code", "job_failed", "message",
                                                 *msg ? msg : "calculate-trending failed", "run_id",
                                                 run_id, "status", status));
        } else {
                /* still queued/running: accepted, the run finishes by itself */
                qz_http_reply_json_new(
                    resp, 202,
                    json_pack("{s:b, s:s, s:s, s:s}", "success", 1, "message",
                              "Trending calculation queued; it has not finished yet", "run_id",
                              run_id, "status", status));
        }
done:
        connpool_release(a->pool, s);
}
