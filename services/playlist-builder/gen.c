/* gen.c - builds one playlist for a request: candidate pools from SQL, then the rules. */
#include "gen.h"
#include "catalog.h"

#include "clock.h"
#include "json.h"
#include "log.h"
#include "pg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DAY_MS    86400000LL
#define MAX_POOLS 12

/* The user's seed tracks for similarity: their last 90 days of plays, recency-weighted. */
#define SEEDS_SQL                                                                                  \
        "seeds AS (SELECT h.track_id AS id, "                                                      \
        "sum(exp(-date_part('epoch', $2::timestamptz - h.played_at) / 86400.0 / $3::float8)) "     \
        "AS w FROM play_history h WHERE h.user_id = $1::uuid "                                     \
        "AND h.played_at >= $2::timestamptz - interval '90 days' "                                 \
        "AND h.played_at < $2::timestamptz GROUP BY h.track_id ORDER BY w DESC, h.track_id "       \
        "LIMIT 50)"
#define TODAY_SQL "(($2::timestamptz AT TIME ZONE 'UTC')::date)"
/* "Not played by the user lately" as NOT IN over an uncorrelated subquery: Postgres reads the
 * user's plays once into a hash (a hashed SubPlan) instead of probing play_history, whose index
 * is (user_id, played_at), once per candidate track. play_history.track_id is NOT NULL, so NOT
 * IN means NOT EXISTS here. */
#define NOT_RECENT_SQL(track)                                                                      \
        track " NOT IN (SELECT r.track_id FROM play_history r WHERE r.user_id = $1::uuid "         \
              "AND r.played_at >= $2::timestamptz - interval '30 days' "                           \
              "AND r.played_at < $2::timestamptz)"

static const struct {
        const char *name, *sql;
} statements[] = {
    {"pl_profile",
     "WITH p AS (SELECT t.artist_id, t.genres FROM play_history h JOIN tracks t ON t.id = "
     "h.track_id WHERE h.user_id = $1::uuid AND h.played_at < $2::timestamptz), "
     "g AS (SELECT x.g, count(*) AS c FROM p, unnest(p.genres) AS x(g) GROUP BY x.g "
     "ORDER BY c DESC, x.g COLLATE \"C\" LIMIT 5), "
     "a AS (SELECT artist_id, count(*) AS c FROM p GROUP BY artist_id "
     "ORDER BY c DESC, artist_id LIMIT 10) "
     "SELECT (SELECT count(*) FROM play_history WHERE user_id = $1::uuid "
     "AND played_at < $2::timestamptz), "
     "(SELECT coalesce(array_agg(g ORDER BY c DESC, g COLLATE \"C\"), '{}') FROM g)::text, "
     "(SELECT coalesce(array_agg(artist_id ORDER BY c DESC, artist_id), '{}') FROM a)::text, "
     "EXISTS (SELECT 1 FROM users WHERE id = $1::uuid)"},
    /* daily_mix 60%: plays of the last 30 days, each weighted by recency (a skip half). */
    {"pl_recent",
     "SELECT t.id, t.artist_id, sum(CASE WHEN h.completed THEN 1.0 ELSE 0.5 END * "
     "exp(-date_part('epoch', $2::timestamptz - h.played_at) / 86400.0 / $3::float8)) AS s "
     "FROM play_history h JOIN tracks t ON t.id = h.track_id AND t.deleted_at IS NULL "
     "WHERE h.user_id = $1::uuid AND h.played_at >= $2::timestamptz - interval '30 days' "
     "AND h.played_at < $2::timestamptz GROUP BY t.id, t.artist_id "
     "ORDER BY s DESC, t.id LIMIT $4::int"},
    /* daily_mix 40% (cf variant): CF and content neighbours of the seeds, not played lately. */
    {"pl_neighbours",
     "WITH " SEEDS_SQL ", nb AS (SELECT s.similar_track_id AS id, sum(seeds.w * s.score * "
     "CASE s.kind WHEN 'cf' THEN 1.0 ELSE $4::float8 END) AS sc FROM seeds "
     "JOIN track_similarities s ON s.track_id = seeds.id GROUP BY s.similar_track_id) "
     "SELECT t.id, t.artist_id, nb.sc FROM nb JOIN tracks t ON t.id = nb.id "
     "AND t.deleted_at IS NULL WHERE " NOT_RECENT_SQL(
         "nb.id") " ORDER BY nb.sc DESC, t.id LIMIT $5::int"},
    /* daily_mix 40% (guide rules, and after the neighbours): favourite artists' tracks. */
    {"pl_artist_tracks",
     "SELECT t.id, t.artist_id, t.popularity / 100.0 + 0.5 * (11 - array_position($3::uuid[], "
     "t.artist_id)) / 10.0 AS s FROM tracks t WHERE t.deleted_at IS NULL "
     "AND t.artist_id = ANY ($3::uuid[]) AND (t.released_at IS NULL OR t.released_at <= " TODAY_SQL
     ") AND " NOT_RECENT_SQL("t.id") " ORDER BY s DESC, t.id LIMIT $4::int"},
    /* Popular tracks in some genres ($3 NULL = all), excluding the user's plays per $4:
     * 'none', 'recent' (30 days) or 'ever'. Daily_mix genre pool and every fallback. */
    {"pl_popular",
     "SELECT t.id, t.artist_id, t.popularity::float8 FROM tracks t "
     "WHERE t.deleted_at IS NULL AND ($3::text[] IS NULL OR t.genres && $3::text[]) "
     "AND (t.released_at IS NULL OR t.released_at <= " TODAY_SQL ") "
     "AND ($4::text = 'none' OR t.id NOT IN (SELECT h.track_id FROM play_history h "
     "WHERE h.user_id = $1::uuid AND h.played_at < $2::timestamptz "
     "AND ($4::text = 'ever' OR h.played_at >= $2::timestamptz - interval '30 days'))) "
     "ORDER BY t.popularity DESC, t.id LIMIT $5::int"},
    /* discovery_weekly: never played, top-5 genres, released in the last 90 days; popularity
     * and the seeds' similarity (affinity) come back for scoring in C. */
    {"pl_discovery",
     "WITH " SEEDS_SQL ", aff AS (SELECT s.similar_track_id AS id, sum(seeds.w * s.score * "
     "CASE s.kind WHEN 'cf' THEN 1.0 ELSE $5::float8 END) AS a FROM seeds "
     "JOIN track_similarities s ON s.track_id = seeds.id GROUP BY s.similar_track_id) "
     "SELECT t.id, t.artist_id, t.popularity::float8, coalesce(aff.a, 0) FROM tracks t "
     "LEFT JOIN aff ON aff.id = t.id WHERE t.deleted_at IS NULL AND t.genres && $4::text[] "
     "AND t.released_at >= " TODAY_SQL " - 90 AND t.released_at <= " TODAY_SQL " "
     "AND t.id NOT IN (SELECT h.track_id FROM play_history h WHERE h.user_id = $1::uuid "
     "AND h.played_at < $2::timestamptz)"},
    /* new_for_you: releases of the last 30 days by the top-10 artists, newest first. */
    {"pl_new_for_you", "SELECT t.id, t.artist_id, (t.released_at - (" TODAY_SQL " - 30))::float8 + "
                       "t.popularity / 1000.0 AS s FROM tracks t WHERE t.deleted_at IS NULL "
                       "AND t.artist_id = ANY ($1::uuid[]) AND t.released_at >= " TODAY_SQL " - 30 "
                       "AND t.released_at <= " TODAY_SQL " ORDER BY s DESC, t.id LIMIT $3::int"},
    /* forgotten_favorites: 3+ plays, none in the last 60 days; most played first. */
    {"pl_forgotten",
     "SELECT t.id, t.artist_id, count(*)::float8 + "
     "extract(epoch FROM max(h.played_at)) / 1e10 AS s FROM play_history h "
     "JOIN tracks t ON t.id = h.track_id AND t.deleted_at IS NULL "
     "WHERE h.user_id = $1::uuid AND h.played_at < $2::timestamptz GROUP BY t.id, t.artist_id "
     "HAVING count(*) >= 3 AND max(h.played_at) < $2::timestamptz - interval '60 days' "
     "ORDER BY s DESC, t.id LIMIT $3::int"},
    /* mood / activity / tempo: track_features ranges (tracks.mood / energy_level when the
     * features row is missing); $1 the user's genres for affinity. */
    {"pl_features", "SELECT t.id, t.artist_id, t.popularity / 100.0 + "
                    "CASE WHEN t.genres && $1::text[] THEN 0.5 ELSE 0 END AS s FROM tracks t "
                    "LEFT JOIN track_features f ON f.track_id = t.id WHERE t.deleted_at IS NULL "
                    "AND ($2::text IS NULL OR lower(coalesce(f.mood, t.mood)) = lower($2::text) "
                    "OR lower($2::text) = ANY (SELECT lower(x) FROM unnest(f.mood_tags) AS x)) "
                    "AND ($3::float8 IS NULL OR coalesce(f.energy, t.energy_level) >= $3::float8) "
                    "AND ($4::float8 IS NULL OR coalesce(f.energy, t.energy_level) <= $4::float8) "
                    "AND ($5::float8 IS NULL OR f.tempo >= $5::float8) "
                    "AND ($6::float8 IS NULL OR f.tempo <= $6::float8) "
                    "AND ($7::float8 IS NULL OR f.valence >= $7::float8) "
                    "AND ($8::float8 IS NULL OR f.valence <= $8::float8) "
                    "AND ($9::float8 IS NULL OR f.danceability >= $9::float8) "
                    "AND ($10::float8 IS NULL OR f.instrumentalness >= $10::float8) "
                    "ORDER BY s DESC, t.id LIMIT $11::int"},
    {"pl_decade",
     "SELECT t.id, t.artist_id, t.popularity / 100.0 + "
     "CASE WHEN t.genres && $1::text[] THEN 0.5 ELSE 0 END AS s FROM tracks t "
     "WHERE t.deleted_at IS NULL AND t.released_at >= $2::date AND t.released_at < $3::date "
     "ORDER BY s DESC, t.id LIMIT $4::int"},
    /* artist_radio: the artist's tracks; then neighbours of them by other artists. */
    {"pl_artist",
     "SELECT t.id, t.artist_id, t.popularity::float8 FROM tracks t WHERE t.deleted_at IS NULL "
     "AND t.artist_id = $1::uuid ORDER BY t.popularity DESC, t.id LIMIT $2::int"},
    {"pl_artist_similar",
     "SELECT t.id, t.artist_id, sum(s.score * CASE s.kind WHEN 'cf' THEN 1.0 ELSE $2::float8 "
     "END) AS sc FROM tracks a JOIN track_similarities s ON s.track_id = a.id "
     "JOIN tracks t ON t.id = s.similar_track_id AND t.deleted_at IS NULL "
     "WHERE a.artist_id = $1::uuid AND t.artist_id <> $1::uuid GROUP BY t.id, t.artist_id "
     "ORDER BY sc DESC, t.id LIMIT $3::int"},
    {"pl_artist_info",
     "SELECT (SELECT coalesce(array_agg(g ORDER BY c DESC, g), '{}') FROM (SELECT x.g, "
     "count(*) AS c FROM tracks t, unnest(t.genres) AS x(g) WHERE t.artist_id = $1::uuid "
     "AND t.deleted_at IS NULL GROUP BY x.g ORDER BY c DESC, x.g LIMIT 3) q)::text "
     "FROM artists WHERE id = $1::uuid"},
    /* track_radio: the seed track, its neighbours. */
    {"pl_track_info",
     "SELECT id, artist_id, genres::text FROM tracks WHERE id = $1::uuid AND deleted_at IS NULL"},
    {"pl_track_similar",
     "SELECT t.id, t.artist_id, sum(s.score * CASE s.kind WHEN 'cf' THEN 1.0 ELSE $2::float8 "
     "END) AS sc FROM track_similarities s JOIN tracks t ON t.id = s.similar_track_id "
     "AND t.deleted_at IS NULL WHERE s.track_id = $1::uuid GROUP BY t.id, t.artist_id "
     "ORDER BY sc DESC, t.id LIMIT $3::int"},
};

/* A user's profile as of one instant. A batch builds all its requests as of one now, so the
 * four types of one user share one profile query (exact: same user, same instant). */
#define PROFILE_CACHE 64
struct profile {
        char user_id[40];
        int64_t now_ms;
        long nplays;
        bool user_known;
        char genres[1024], artists[512];
};

struct pl_gen {
        struct qz_pg *pg;
        struct pl_gen_cfg cfg;
        struct pl_catalog *cat; /* the batch path's catalog (pl_gen_build_batch) */
        struct profile cache[PROFILE_CACHE];
        size_t cache_next; /* round robin: the oldest entry goes */
};

/* Everything one build needs: the request, the user's profile, the pools. */
struct build {
        struct pl_gen *g;
        const struct pl_request *rq;
        struct pl_cat_batch *mb;      /* non-NULL: pools from memory (catalog.c), not SQL */
        const struct pl_cat_user *mu; /* the request's user in mb */
        int64_t now_ms;
        char now[40];
        char tau[32], cw[32], limit[24];
        size_t target;
        long nplays;
        bool user_known;
        char genres[1024]; /* text[] literal of the top 5 genres */
        char artists[512]; /* uuid[] literal of the top 10 artists */
        size_t ngenres, nartists;
        char variant[32];
        struct pl_pool pools[MAX_POOLS];
        size_t npools;
        double shares[MAX_POOLS];
        size_t nshared;
        const char *exclude_mode; /* the fallbacks' exclusion of played tracks */
        json_t *meta_params;
        json_t *meta;
        char fallback_reason[256];
};

static const struct {
        const char *name;
        int64_t ttl_ms;
} types[] = {
    {"daily_mix", DAY_MS},   {"discovery_weekly", 7 * DAY_MS},
    {"new_for_you", DAY_MS}, {"forgotten_favorites", 7 * DAY_MS},
    {"mood", DAY_MS},        {"activity", DAY_MS},
    {"tempo", DAY_MS},       {"genre_mix", DAY_MS},
    {"decade", DAY_MS},      {"artist_radio", DAY_MS},
    {"track_radio", DAY_MS},
};

bool pl_gen_type_known(const char *type)
{
        return pl_gen_ttl_ms(type) > 0;
}

int64_t pl_gen_ttl_ms(const char *type)
{
        for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
                if (strcmp(types[i].name, type) == 0)
                        return types[i].ttl_ms;
        return 0;
}

struct pl_gen *pl_gen_new(struct qz_pg *pg, const struct pl_gen_cfg *cfg, char *errstr,
                          size_t errstr_size)
{
        struct pl_gen *g = calloc(1, sizeof(*g));
        if (!g) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        g->pg = pg;
        g->cfg = *cfg;
        if (!(g->cat = pl_catalog_new())) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (pl_rules_variant(cfg->variants, cfg->ab_salt, "x", NULL, 0, errstr, errstr_size) != 0)
                goto fail;
        for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++)
                if (qz_pg_prepare(pg, statements[i].name, statements[i].sql, errstr, errstr_size) !=
                        0 &&
                    !qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)))
                        goto fail; /* a bad statement is a bug; an absent server is not */
        return g;
fail:
        pl_catalog_free(g->cat);
        free(g);
        return NULL;
}

void pl_gen_free(struct pl_gen *g)
{
        if (g)
                pl_catalog_free(g->cat);
        free(g);
}

void pl_playlist_free(struct pl_playlist *p)
{
        if (!p)
                return;
        free(p->items);
        json_decref(p->metadata);
        memset(p, 0, sizeof(*p));
}

/* ---- helpers ---- */

static int query(struct build *b, const char *stmt, int n, const char *const *v, PGresult **out,
                 char *errstr, size_t errstr_size)
{
        /* pl_discovery's best plan depends on the user's genres and history size: Postgres's
         * generic plan for it (chosen after five runs of a prepared statement) was 3x slower
         * (bench/playlists), so it is planned per call. */
        if (strcmp(stmt, "pl_discovery") == 0)
                for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++)
                        if (strcmp(statements[i].name, stmt) == 0) {
                                *out = qz_pg_query(b->g->pg, statements[i].sql, n, v, errstr,
                                                   errstr_size);
                                return *out ? 0 : -1;
                        }
        *out = qz_pg_query_prepared(b->g->pg, stmt, n, v, errstr, errstr_size);
        return *out ? 0 : -1;
}

static struct pl_pool *add_pool(struct build *b, const char *name)
{
        if (b->npools == MAX_POOLS)
                return NULL;
        struct pl_pool *p = &b->pools[b->npools++];
        memset(p, 0, sizeof(*p));
        p->name = name;
        return p;
}

/* Loads (id, artist_id, score) rows into a new pool. */
static int load_pool(struct build *b, const char *name, const char *stmt, int n,
                     const char *const *v, char *errstr, size_t errstr_size)
{
        PGresult *res;
        struct pl_pool *p = add_pool(b, name);
        if (!p) {
                snprintf(errstr, errstr_size, "too many pools");
                return -1;
        }
        if (query(b, stmt, n, v, &res, errstr, errstr_size) != 0)
                return -1;
        int rows = PQntuples(res);
        for (int i = 0; i < rows; i++)
                if (pl_pool_push(p, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                 atof(PQgetvalue(res, i, 2))) != 0) {
                        PQclear(res);
                        snprintf(errstr, errstr_size, "out of memory");
                        return -1;
                }
        PQclear(res);
        return 0;
}

static const char *param(const struct build *b, const char *key)
{
        json_t *v = b->rq->params ? json_object_get(b->rq->params, key) : NULL;
        const char *s = json_string_value(v);
        return s && *s ? s : NULL;
}

/* Parses a number parameter; 0 ok, 1 absent, -1 malformed (errstr). */
static int param_num(const struct build *b, const char *key, double lo, double hi, double *out,
                     char *errstr, size_t errstr_size)
{
        const char *s = param(b, key);
        if (!s)
                return 1;
        char *end = NULL;
        double x = strtod(s, &end);
        if (!end || *end || !isfinite(x) || x < lo || x > hi) {
                snprintf(errstr, errstr_size, "param %s: bad value '%s': expected %g..%g", key, s,
                         lo, hi);
                return -1;
        }
        *out = x;
        return 0;
}

/* "{a,b}" literal from a comma-separated list of words; -1 when a word has odd characters. */
static int words_literal(const char *list, char *out, size_t out_size, size_t *count)
{
        size_t o = 0, n = 0;
        out[o++] = '{';
        for (const char *p = list; *p;) {
                while (*p == ',' || *p == ' ')
                        p++;
                if (!*p)
                        break;
                if (n++)
                        out[o++] = ',';
                out[o++] = '"';
                while (*p && *p != ',') {
                        char c = *p++;
                        if (c == '"' || c == '\\' || c == '{' || c == '}' || o + 4 >= out_size)
                                return -1;
                        out[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
                }
                while (o > 0 && out[o - 1] == ' ')
                        o--;
                out[o++] = '"';
        }
        out[o++] = '}';
        out[o] = '\0';
        *count = n;
        return 0;
}

/* Number of elements of a Postgres array literal as returned by ::text. */
static size_t literal_count(const char *lit)
{
        if (strcmp(lit, "{}") == 0)
                return 0;
        size_t n = 1;
        bool quoted = false;
        for (const char *p = lit; *p; p++) {
                if (*p == '"' && p[-1] != '\\')
                        quoted = !quoted;
                else if (*p == ',' && !quoted)
                        n++;
        }
        return n;
}

static int load_profile(struct build *b, char *errstr, size_t errstr_size)
{
        struct pl_gen *g = b->g;
        struct profile *p = NULL;
        if (b->mu) {
                b->nplays = b->mu->nplays;
                b->user_known = b->mu->known;
                b->ngenres = b->mu->ngenres;
                b->nartists = b->mu->nartists;
                snprintf(b->genres, sizeof(b->genres), "{}"); /* SQL literals: unused here */
                snprintf(b->artists, sizeof(b->artists), "{}");
                return 0;
        }
        for (size_t i = 0; i < PROFILE_CACHE && !p; i++)
                if (g->cache[i].now_ms == b->now_ms &&
                    strcmp(g->cache[i].user_id, b->rq->user_id) == 0)
                        p = &g->cache[i];
        if (!p) {
                const char *v[] = {b->rq->user_id, b->now};
                PGresult *res;
                if (query(b, "pl_profile", 2, v, &res, errstr, errstr_size) != 0)
                        return -1;
                p = &g->cache[g->cache_next];
                g->cache_next = (g->cache_next + 1) % PROFILE_CACHE;
                snprintf(p->user_id, sizeof(p->user_id), "%s", b->rq->user_id);
                p->now_ms = b->now_ms;
                p->nplays = atol(PQgetvalue(res, 0, 0));
                snprintf(p->genres, sizeof(p->genres), "%s", PQgetvalue(res, 0, 1));
                snprintf(p->artists, sizeof(p->artists), "%s", PQgetvalue(res, 0, 2));
                p->user_known = PQgetvalue(res, 0, 3)[0] == 't';
                PQclear(res);
        }
        b->nplays = p->nplays;
        b->user_known = p->user_known;
        snprintf(b->genres, sizeof(b->genres), "%s", p->genres);
        snprintf(b->artists, sizeof(b->artists), "%s", p->artists);
        b->ngenres = literal_count(b->genres);
        b->nartists = literal_count(b->artists);
        return 0;
}

/* A new pool filled from memory by one of catalog.c's functions (rc != 0: no memory). */
static struct pl_pool *mem_pool(struct build *b, const char *name, char *errstr, size_t errstr_size)
{
        struct pl_pool *p = add_pool(b, name);
        if (!p)
                snprintf(errstr, errstr_size, "too many pools");
        return p;
}

static size_t limit_n(const struct build *b)
{
        return (size_t)strtoul(b->limit, NULL, 10);
}

static int mem_fail(char *errstr, size_t errstr_size)
{
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
}

/* The fallback chain every type ends with: popular in the user's genres, then global. */
static int add_fallbacks(struct build *b, char *errstr, size_t errstr_size)
{
        if (b->mb) {
                struct pl_pool *p;
                if (b->ngenres) {
                        if (!(p = mem_pool(b, "fallback_genre", errstr, errstr_size)))
                                return -1;
                        if (pl_cat_popular(b->mb, b->mu, true, b->exclude_mode, limit_n(b), p) != 0)
                                return mem_fail(errstr, errstr_size);
                }
                if (!(p = mem_pool(b, "fallback_global", errstr, errstr_size)))
                        return -1;
                if (pl_cat_popular(b->mb, b->mu, false, b->exclude_mode, limit_n(b), p) != 0)
                        return mem_fail(errstr, errstr_size);
                return 0;
        }
        const char *v[] = {b->rq->user_id, b->now, b->ngenres ? b->genres : NULL, b->exclude_mode,
                           b->limit};
        if (b->ngenres &&
            load_pool(b, "fallback_genre", "pl_popular", 5, v, errstr, errstr_size) != 0)
                return -1;
        v[2] = NULL;
        return load_pool(b, "fallback_global", "pl_popular", 5, v, errstr, errstr_size);
}

/* ---- the types ---- */

static int build_daily_mix(struct build *b, char *errstr, size_t errstr_size)
{
        struct pl_pool sim = {.name = "similar"};
        size_t first;
        if (b->mb) { /* the same pools from memory (catalog.c) */
                struct pl_pool *p;
                double cw = b->g->cfg.content_weight;
                if (!(p = mem_pool(b, "recent", errstr, errstr_size)))
                        return -1;
                if (pl_cat_recent(b->mb, b->mu, limit_n(b), p) != 0)
                        return mem_fail(errstr, errstr_size);
                first = b->npools;
                if (strcmp(b->variant, "guide") != 0) {
                        if (!(p = mem_pool(b, "similar_cf", errstr, errstr_size)))
                                return -1;
                        if (pl_cat_neighbours(b->mb, b->mu, cw, limit_n(b), p) != 0)
                                return mem_fail(errstr, errstr_size);
                }
                if (b->nartists) {
                        if (!(p = mem_pool(b, "similar_artists", errstr, errstr_size)))
                                return -1;
                        if (pl_cat_artist_tracks(b->mb, b->mu, limit_n(b), p) != 0)
                                return mem_fail(errstr, errstr_size);
                }
                if (b->ngenres) {
                        if (!(p = mem_pool(b, "similar_genres", errstr, errstr_size)))
                                return -1;
                        if (pl_cat_popular(b->mb, b->mu, true, "recent", limit_n(b), p) != 0)
                                return mem_fail(errstr, errstr_size);
                }
                goto concat;
        }
        const char *recent[] = {b->rq->user_id, b->now, b->tau, b->limit};
        if (load_pool(b, "recent", "pl_recent", 4, recent, errstr, errstr_size) != 0)
                return -1;
        /* The 40%: one ordered list, CF/content neighbours first (cf variant), then the
         * favourite artists' tracks, then popular tracks of the favourite genres. */
        first = b->npools;
        if (strcmp(b->variant, "guide") != 0) {
                const char *v[] = {b->rq->user_id, b->now, b->tau, b->cw, b->limit};
                if (load_pool(b, "similar_cf", "pl_neighbours", 5, v, errstr, errstr_size) != 0)
                        return -1;
        }
        const char *va[] = {b->rq->user_id, b->now, b->artists, b->limit};
        if (b->nartists &&
            load_pool(b, "similar_artists", "pl_artist_tracks", 4, va, errstr, errstr_size) != 0)
                return -1;
        const char *vg[] = {b->rq->user_id, b->now, b->genres, "recent", b->limit};
        if (b->ngenres &&
            load_pool(b, "similar_genres", "pl_popular", 5, vg, errstr, errstr_size) != 0)
                return -1;
concat:;
        /* Concatenate pools[first..] into one shared "similar" pool, keeping the order. */
        json_t *parts = json_object();
        for (size_t i = first; i < b->npools; i++) {
                json_object_set_new(parts, b->pools[i].name,
                                    json_integer((json_int_t)b->pools[i].n));
                for (size_t j = 0; j < b->pools[i].n; j++)
                        if (pl_pool_push(&sim, b->pools[i].c[j].track_id,
                                         b->pools[i].c[j].artist_id, 0) != 0) {
                                json_decref(parts);
                                pl_pool_free(&sim);
                                snprintf(errstr, errstr_size, "out of memory");
                                return -1;
                        }
                pl_pool_free(&b->pools[i]);
        }
        json_object_set_new(b->meta, "similar_candidates", parts);
        b->npools = first;
        b->pools[b->npools++] = sim;
        b->shares[0] = 0.6;
        b->shares[1] = 0.4;
        b->nshared = 2;
        json_object_set_new(b->meta_params, "recent_share", json_real(0.6));
        json_object_set_new(b->meta_params, "similar_share", json_real(0.4));
        json_object_set_new(b->meta_params, "recent_window_days", json_integer(30));
        json_object_set_new(b->meta_params, "recency_days", json_real(b->g->cfg.recency_days));
        b->exclude_mode = "none";
        return 0;
}

/* The memory path's discovery pool: the same scores as the SQL path's loop, then only the
 * first `limit` in pool order (score desc, id): assembly never reads further, since the pool
 * has no duplicates and target <= limit. The random term comes from the catalog's id hashes
 * (pl_rules_rand_key), equal to the SQL path's pl_rules_rand of the id. */
static int disc_pool(struct build *b, struct pl_pool *p, const struct pl_cat_disc *rows, int n,
                     uint64_t seed, bool cf, double wp, double wr, double wa, double maxaff)
{
        struct pl_cat_scored *v = malloc(((size_t)n + 1) * sizeof(*v));
        if (!v)
                return -1;
        size_t lim = limit_n(b);
        for (int i = 0; i < n; i++) {
                v[i].s = wp * rows[i].pop / 100.0 + wr * pl_rules_rand_key(seed, rows[i].key) +
                         (cf ? wa * rows[i].aff / maxaff : 0);
                v[i].track = rows[i].track;
        }
        pl_cat_top(v, (size_t)n, lim);
        for (size_t i = 0; i < (size_t)n && i < lim; i++)
                if (pl_pool_push(p, pl_cat_track_id(b->mb->cat, v[i].track),
                                 pl_cat_track_artist(b->mb->cat, v[i].track), v[i].s) != 0) {
                        free(v);
                        return -1;
                }
        free(v);
        return 0;
}

static int build_discovery_weekly(struct build *b, char *errstr, size_t errstr_size)
{
        int year, week, wd;
        pl_rules_iso_week(b->now_ms, &year, &week, &wd);
        uint64_t seed = pl_rules_seed(b->rq->user_id, year, week);
        char seedhex[24], isoweek[16];
        snprintf(seedhex, sizeof(seedhex), "%016llx", (unsigned long long)seed);
        snprintf(isoweek, sizeof(isoweek), "%04d-W%02d", year, week);
        json_object_set_new(b->meta, "seed", json_string(seedhex));
        json_object_set_new(b->meta_params, "iso_week", json_string(isoweek));
        json_object_set_new(b->meta_params, "release_window_days", json_integer(90));
        b->exclude_mode = "ever";
        b->shares[0] = 1.0;
        b->nshared = 1;
        struct pl_pool *p = add_pool(b, "discovery");
        if (b->ngenres == 0)
                return 0; /* no genres yet: the fallbacks say why */
        const char *v[] = {b->rq->user_id, b->now, b->tau, b->genres, b->cw};
        PGresult *res = NULL;
        struct pl_cat_disc *mrows = NULL;
        int rows;
        if (b->mb) {
                long m = pl_cat_discovery(b->mb, b->mu, b->g->cfg.content_weight, &mrows);
                if (m < 0)
                        return mem_fail(errstr, errstr_size);
                rows = (int)m;
        } else {
                if (query(b, "pl_discovery", 5, v, &res, errstr, errstr_size) != 0)
                        return -1;
                rows = PQntuples(res);
        }
        /* Row i's columns from either source. */
#define DISC_ID(i) (mrows ? pl_cat_track_id(b->mb->cat, mrows[i].track) : PQgetvalue(res, i, 0))
#define DISC_ARTIST(i)                                                                             \
        (mrows ? pl_cat_track_artist(b->mb->cat, mrows[i].track) : PQgetvalue(res, i, 1))
#define DISC_POP(i) (mrows ? mrows[i].pop : atof(PQgetvalue(res, i, 2)))
#define DISC_AFF(i) (mrows ? mrows[i].aff : atof(PQgetvalue(res, i, 3)))
        double maxaff = 0;
        for (int i = 0; i < rows; i++)
                if (DISC_AFF(i) > maxaff)
                        maxaff = DISC_AFF(i);
        /* guide: popularity + randomness; cf: plus the seeds' similarity, normalised. */
        bool cf = strcmp(b->variant, "guide") != 0 && maxaff > 0;
        /* cf weights: 0.35/0.25/0.4 gave 1.38x the guide's hit rate (bench/playlists_quality.sh,
         * seed 42) and 1.48x on another data set (seed 7); 0.2/0.1/0.7 gives 1.55x and 1.63x.
         * Some randomness stays, so the list still changes from week to week. */
        double wp = cf ? 0.2 : 0.5, wr = cf ? 0.1 : 0.5, wa = cf ? 0.7 : 0.0;
        if (mrows) { /* compact: score, sort by (score desc, id), keep the first limit only */
                int rc = disc_pool(b, p, mrows, rows, seed, cf, wp, wr, wa, maxaff);
                free(mrows);
                mrows = NULL;
                if (rc != 0)
                        return mem_fail(errstr, errstr_size);
                rows = 0;
        }
        for (int i = 0; i < rows; i++) {
                const char *id = DISC_ID(i);
                double s = wp * DISC_POP(i) / 100.0 + wr * pl_rules_rand(seed, id) +
                           (cf ? wa * DISC_AFF(i) / maxaff : 0);
                if (pl_pool_push(p, id, DISC_ARTIST(i), s) != 0) {
                        PQclear(res);
                        free(mrows);
                        snprintf(errstr, errstr_size, "out of memory");
                        return -1;
                }
        }
#undef DISC_ID
#undef DISC_ARTIST
#undef DISC_POP
#undef DISC_AFF
        PQclear(res);
        free(mrows);
        json_object_set_new(
            b->meta_params, "weights",
            json_pack("{s:f,s:f,s:f}", "popularity", wp, "random", wr, "similarity", wa));
        pl_rules_sort(p->c, p->n);
        return 0;
}

static int build_new_for_you(struct build *b, char *errstr, size_t errstr_size)
{
        b->exclude_mode = "none";
        b->shares[0] = 1.0;
        b->nshared = 1;
        json_object_set_new(b->meta_params, "release_window_days", json_integer(30));
        json_object_set_new(b->meta_params, "top_artists", json_integer((json_int_t)b->nartists));
        if (b->nartists == 0) {
                add_pool(b, "new_releases");
                return 0;
        }
        if (b->mb) {
                struct pl_pool *p = mem_pool(b, "new_releases", errstr, errstr_size);
                if (!p)
                        return -1;
                return pl_cat_new_for_you(b->mb, b->mu, limit_n(b), p) != 0
                           ? mem_fail(errstr, errstr_size)
                           : 0;
        }
        const char *v[] = {b->artists, b->now, b->limit};
        return load_pool(b, "new_releases", "pl_new_for_you", 3, v, errstr, errstr_size);
}

static int build_forgotten(struct build *b, char *errstr, size_t errstr_size)
{
        b->exclude_mode = "recent";
        b->shares[0] = 1.0;
        b->nshared = 1;
        json_object_set_new(b->meta_params, "min_plays", json_integer(3));
        json_object_set_new(b->meta_params, "not_played_days", json_integer(60));
        if (b->mb) {
                struct pl_pool *p = mem_pool(b, "forgotten", errstr, errstr_size);
                if (!p)
                        return -1;
                return pl_cat_forgotten(b->mb, b->mu, limit_n(b), p) != 0
                           ? mem_fail(errstr, errstr_size)
                           : 0;
        }
        const char *v[] = {b->rq->user_id, b->now, b->limit};
        return load_pool(b, "forgotten", "pl_forgotten", 3, v, errstr, errstr_size);
}

static const struct {
        const char *name;
        struct pl_feature_ranges r;
} activities[] = {
    /* e_lo e_hi t_lo t_hi v_lo v_hi d_lo i_lo */
    {"workout", {0.65, NAN, 115, NAN, NAN, NAN, NAN, NAN}},
    {"running", {0.6, NAN, 140, 190, NAN, NAN, NAN, NAN}},
    {"party", {0.6, NAN, NAN, NAN, 0.5, NAN, 0.6, NAN}},
    {"focus", {0.2, 0.6, NAN, NAN, NAN, NAN, NAN, 0.5}},
    {"study", {NAN, 0.5, NAN, 130, NAN, NAN, NAN, NAN}},
    {"relax", {NAN, 0.45, NAN, 110, NAN, NAN, NAN, NAN}},
    {"sleep", {NAN, 0.3, NAN, 95, NAN, NAN, NAN, NAN}},
    {"commute", {0.35, 0.8, 90, 140, NAN, NAN, NAN, NAN}},
};

int pl_gen_activity_ranges(const char *activity, struct pl_feature_ranges *r)
{
        for (size_t i = 0; activity && i < sizeof(activities) / sizeof(activities[0]); i++)
                if (strcasecmp(activities[i].name, activity) == 0) {
                        *r = activities[i].r;
                        return 0;
                }
        return -1;
}

static int load_features(struct build *b, const char *mood, const struct pl_feature_ranges *r,
                         char *errstr, size_t errstr_size)
{
        char num[8][32];
        const double x[8] = {r->e_lo, r->e_hi, r->t_lo, r->t_hi,
                             r->v_lo, r->v_hi, r->d_lo, r->i_lo};
        const char *v[11] = {b->genres, mood};
        for (int i = 0; i < 8; i++) {
                snprintf(num[i], sizeof(num[i]), "%g", x[i]);
                v[2 + i] = isnan(x[i]) ? NULL : num[i];
        }
        v[10] = b->limit;
        b->exclude_mode = "none";
        b->shares[0] = 1.0;
        b->nshared = 1;
        return load_pool(b, "features", "pl_features", 11, v, errstr, errstr_size);
}

static int build_mood(struct build *b, char *errstr, size_t errstr_size)
{
        const char *mood = param(b, "mood");
        if (!mood) {
                snprintf(errstr, errstr_size, "mood needs param 'mood'");
                return 1;
        }
        struct pl_feature_ranges r = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
        return load_features(b, mood, &r, errstr, errstr_size);
}

static int build_activity(struct build *b, char *errstr, size_t errstr_size)
{
        struct pl_feature_ranges r;
        const char *a = param(b, "activity");
        if (pl_gen_activity_ranges(a, &r) != 0) {
                snprintf(errstr, errstr_size,
                         "activity needs param 'activity': one of workout, running, party, "
                         "focus, study, relax, sleep, commute");
                return 1;
        }
        return load_features(b, NULL, &r, errstr, errstr_size);
}

static int build_tempo(struct build *b, char *errstr, size_t errstr_size)
{
        struct pl_feature_ranges r = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
        int lo = param_num(b, "min_bpm", 20, 300, &r.t_lo, errstr, errstr_size);
        int hi = param_num(b, "max_bpm", 20, 300, &r.t_hi, errstr, errstr_size);
        if (lo < 0 || hi < 0)
                return 1;
        if (lo && hi) {
                snprintf(errstr, errstr_size, "tempo needs param 'min_bpm' and/or 'max_bpm'");
                return 1;
        }
        if (!lo && !hi && r.t_lo > r.t_hi) {
                snprintf(errstr, errstr_size, "tempo: min_bpm is above max_bpm");
                return 1;
        }
        return load_features(b, NULL, &r, errstr, errstr_size);
}

static int build_genre_mix(struct build *b, char *errstr, size_t errstr_size)
{
        const char *list = param(b, "genres");
        char lit[1024];
        size_t n = 0;
        if (!list || words_literal(list, lit, sizeof(lit), &n) != 0 || n == 0 || n > 8) {
                snprintf(errstr, errstr_size,
                         "genre_mix needs param 'genres': 1-8 genre names, "
                         "comma-separated");
                return 1;
        }
        /* One pool per genre, equal shares: a round robin over the genres. */
        const char *p = list;
        for (size_t i = 0; i < n; i++) {
                char one[256], gl[300];
                size_t k = 0;
                while (*p == ',' || *p == ' ')
                        p++;
                while (*p && *p != ',' && k + 1 < sizeof(one))
                        one[k++] = *p++;
                one[k] = '\0';
                size_t c;
                words_literal(one, gl, sizeof(gl), &c);
                const char *v[] = {b->rq->user_id, b->now, gl, "none", b->limit};
                if (load_pool(b, "genre", "pl_popular", 5, v, errstr, errstr_size) != 0)
                        return -1;
                b->shares[i] = 1.0;
        }
        b->nshared = n;
        b->exclude_mode = "none";
        return 0;
}

static int build_decade(struct build *b, char *errstr, size_t errstr_size)
{
        const char *d = param(b, "decade");
        char *end = NULL;
        long y = d ? strtol(d, &end, 10) : 0;
        if (!d || !end || (*end && strcmp(end, "s") != 0) || y < 1900 || y > 2100 || y % 10) {
                snprintf(errstr, errstr_size, "decade needs param 'decade' like 1990 or 1990s");
                return 1;
        }
        char from[16], to[16];
        snprintf(from, sizeof(from), "%ld-01-01", y);
        snprintf(to, sizeof(to), "%ld-01-01", y + 10);
        const char *v[] = {b->genres, from, to, b->limit};
        b->exclude_mode = "none";
        b->shares[0] = 1.0;
        b->nshared = 1;
        return load_pool(b, "decade", "pl_decade", 4, v, errstr, errstr_size);
}

static int build_artist_radio(struct build *b, char *errstr, size_t errstr_size)
{
        const char *a = param(b, "artist_id");
        if (!a || !qz_uuid_valid(a)) {
                snprintf(errstr, errstr_size, "artist_radio needs param 'artist_id' (a uuid)");
                return 1;
        }
        PGresult *res;
        const char *vi[] = {a};
        if (query(b, "pl_artist_info", 1, vi, &res, errstr, errstr_size) != 0)
                return -1;
        if (PQntuples(res) == 0) {
                PQclear(res);
                snprintf(errstr, errstr_size, "unknown artist %s", a);
                return 1;
        }
        /* The fallbacks use the artist's genres, not the listener's. */
        snprintf(b->genres, sizeof(b->genres), "%s", PQgetvalue(res, 0, 0));
        b->ngenres = literal_count(b->genres);
        PQclear(res);
        const char *v1[] = {a, b->limit};
        const char *v2[] = {a, b->cw, b->limit};
        if (load_pool(b, "artist", "pl_artist", 2, v1, errstr, errstr_size) != 0 ||
            load_pool(b, "similar", "pl_artist_similar", 3, v2, errstr, errstr_size) != 0)
                return -1;
        b->shares[0] = 0.3;
        b->shares[1] = 0.7;
        b->nshared = 2;
        b->exclude_mode = "none";
        return 0;
}

static int build_track_radio(struct build *b, char *errstr, size_t errstr_size)
{
        const char *t = param(b, "track_id");
        if (!t || !qz_uuid_valid(t)) {
                snprintf(errstr, errstr_size, "track_radio needs param 'track_id' (a uuid)");
                return 1;
        }
        PGresult *res;
        const char *vi[] = {t};
        if (query(b, "pl_track_info", 1, vi, &res, errstr, errstr_size) != 0)
                return -1;
        if (PQntuples(res) == 0) {
                PQclear(res);
                snprintf(errstr, errstr_size, "unknown or deleted track %s", t);
                return 1;
        }
        struct pl_pool *seed = add_pool(b, "seed");
        int rc = pl_pool_push(seed, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), 1);
        snprintf(b->genres, sizeof(b->genres), "%s", PQgetvalue(res, 0, 2));
        b->ngenres = literal_count(b->genres);
        PQclear(res);
        if (rc != 0)
                return -1;
        const char *v[] = {t, b->cw, b->limit};
        if (load_pool(b, "similar", "pl_track_similar", 3, v, errstr, errstr_size) != 0)
                return -1;
        b->nshared = 0; /* seed first, then the neighbours, then the fallbacks, in order */
        b->exclude_mode = "none";
        return 0;
}

static const struct {
        const char *type;
        int (*fn)(struct build *, char *, size_t);
        const char *algorithm;
} builders[] = {
    {"daily_mix", build_daily_mix, "daily_mix/v1"},
    {"discovery_weekly", build_discovery_weekly, "discovery_weekly/v1"},
    {"new_for_you", build_new_for_you, "new_for_you/v1"},
    {"forgotten_favorites", build_forgotten, "forgotten_favorites/v1"},
    {"mood", build_mood, "mood/v1"},
    {"activity", build_activity, "activity/v1"},
    {"tempo", build_tempo, "tempo/v1"},
    {"genre_mix", build_genre_mix, "genre_mix/v1"},
    {"decade", build_decade, "decade/v1"},
    {"artist_radio", build_artist_radio, "artist_radio/v1"},
    {"track_radio", build_track_radio, "track_radio/v1"},
};

/* Why the list needed the fallbacks (or is empty): a line for metadata. */
static void explain(struct build *b, size_t primary, size_t total)
{
        const char *type = b->rq->playlist_type;
        if (primary >= total && total >= b->target)
                return;
        const char *why;
        if (b->nplays == 0 &&
            (strcmp(type, "daily_mix") == 0 || strcmp(type, "discovery_weekly") == 0 ||
             strcmp(type, "new_for_you") == 0 || strcmp(type, "forgotten_favorites") == 0))
                why = "no listening history";
        else if (strcmp(type, "mood") == 0 || strcmp(type, "activity") == 0 ||
                 strcmp(type, "tempo") == 0)
                why = "too few analysed tracks match (track_features missing or no match)";
        else
                why = "too few tracks match the rule";
        snprintf(b->fallback_reason, sizeof(b->fallback_reason), "%s: %zu of %zu from the rule",
                 why, primary, b->target);
        if (total == 0)
                snprintf(b->fallback_reason, sizeof(b->fallback_reason),
                         "%s; the catalog has no playable track to fall back on", why);
}

static int build(struct pl_gen *g, const struct pl_request *rq, int64_t now_ms,
                 struct pl_cat_batch *mb, struct pl_playlist *out, char *errstr, size_t errstr_size)
{
        struct build b = {.g = g, .rq = rq, .now_ms = now_ms, .mb = mb};
        int rc = -1;
        memset(out, 0, sizeof(*out));
        size_t bi = 0;
        while (bi < sizeof(builders) / sizeof(builders[0]) &&
               strcmp(builders[bi].type, rq->playlist_type ? rq->playlist_type : "") != 0)
                bi++;
        if (bi == sizeof(builders) / sizeof(builders[0])) {
                snprintf(errstr, errstr_size, "unknown playlist_type '%s'",
                         rq->playlist_type ? rq->playlist_type : "");
                return 1;
        }
        if (!rq->user_id || !qz_uuid_valid(rq->user_id)) {
                snprintf(errstr, errstr_size, "bad user_id");
                return 1;
        }
        b.target = (size_t)g->cfg.target;
        const char *lim =
            rq->params ? json_string_value(json_object_get(rq->params, "limit")) : NULL;
        if (lim) {
                char *end = NULL;
                long x = strtol(lim, &end, 10);
                if (!*lim || *end || x < 1 || x > g->cfg.max_target) {
                        snprintf(errstr, errstr_size,
                                 "param limit: bad value '%s': expected 1..%ld", lim,
                                 g->cfg.max_target);
                        return 1;
                }
                b.target = (size_t)x;
        }
        qz_time_format(now_ms, b.now, sizeof(b.now));
        snprintf(b.tau, sizeof(b.tau), "%g", g->cfg.recency_days);
        snprintf(b.cw, sizeof(b.cw), "%g", g->cfg.content_weight);
        snprintf(b.limit, sizeof(b.limit), "%zu", b.target * 6 < 300 ? 300 : b.target * 6);
        if (g->cfg.force_variant)
                snprintf(b.variant, sizeof(b.variant), "%s", g->cfg.force_variant);
        else if (pl_rules_variant(g->cfg.variants, g->cfg.ab_salt, rq->user_id, b.variant,
                                  sizeof(b.variant), errstr, errstr_size) != 0)
                return -1;
        b.meta = json_object();
        b.meta_params = json_object();
        if (rq->params)
                json_object_update(b.meta_params, (json_t *)rq->params);
        json_object_set_new(b.meta_params, "track_count", json_integer((json_int_t)b.target));

        if (mb && !(b.mu = pl_cat_batch_user(mb, rq->user_id))) {
                snprintf(errstr, errstr_size, "user %s not loaded in the batch", rq->user_id);
                goto done;
        }
        if (load_profile(&b, errstr, errstr_size) != 0)
                goto done;
        if (!b.user_known && b.nplays == 0) {
                snprintf(errstr, errstr_size, "unknown user %s (no users row and no plays)",
                         rq->user_id);
                rc = 1;
                goto done;
        }
        int brc = builders[bi].fn(&b, errstr, errstr_size);
        if (brc != 0) {
                rc = brc;
                goto done;
        }
        size_t nprimary_pools = b.npools;
        size_t per_pool[MAX_POOLS] = {0};
        if (!(out->items = calloc(b.target ? b.target : 1, sizeof(*out->items))))
                goto done;
        long n = -1;
        if (mb) {
                /* Fallback pools are taken only after the primary ones ran dry: when those
                 * fill the list alone, the fallbacks would add nothing, so the memory path
                 * skips computing them (their names still appear in sources, with 0). */
                struct pl_assembly a0 = {.pools = b.pools,
                                         .npools = b.npools,
                                         .shares = b.shares,
                                         .nshared = b.nshared,
                                         .target = b.target};
                n = pl_rules_assemble(&a0, out->items, per_pool);
                if (n >= 0 && (size_t)n == b.target) {
                        if ((b.ngenres && !add_pool(&b, "fallback_genre")) ||
                            !add_pool(&b, "fallback_global")) {
                                snprintf(errstr, errstr_size, "too many pools");
                                goto done;
                        }
                } else {
                        n = -1;
                        memset(per_pool, 0, sizeof(per_pool));
                }
        }
        if (n < 0) {
                if (add_fallbacks(&b, errstr, errstr_size) != 0)
                        goto done;
                struct pl_assembly a = {.pools = b.pools,
                                        .npools = b.npools,
                                        .shares = b.shares,
                                        .nshared = b.nshared,
                                        .target = b.target};
                n = pl_rules_assemble(&a, out->items, per_pool);
        }
        if (n < 0) {
                snprintf(errstr, errstr_size, "out of memory");
                goto done;
        }
        out->n = (size_t)n;
        size_t left = pl_rules_space_artists(out->items, out->n);

        json_t *sources = json_object();
        size_t primary = 0;
        for (size_t i = 0; i < b.npools; i++) {
                json_t *prev = json_object_get(sources, b.pools[i].name);
                json_object_set_new(
                    sources, b.pools[i].name,
                    json_integer(json_integer_value(prev) + (json_int_t)per_pool[i]));
                if (i < nprimary_pools)
                        primary += per_pool[i];
        }
        explain(&b, primary, out->n);
        json_object_set_new(b.meta, "algorithm", json_string(builders[bi].algorithm));
        json_object_set_new(b.meta, "variant", json_string(b.variant));
        json_object_set_new(b.meta, "sources", sources);
        json_object_set_new(b.meta, "params", b.meta_params);
        b.meta_params = NULL;
        json_object_set_new(b.meta, "request_id",
                            json_string(rq->request_id ? rq->request_id : ""));
        json_object_set_new(b.meta, "reason", json_string(rq->reason ? rq->reason : ""));
        json_object_set_new(b.meta, "run_id", rq->run_id ? json_string(rq->run_id) : json_null());
        json_object_set_new(b.meta, "history_plays", json_integer(b.nplays));
        json_object_set_new(b.meta, "top_genres_used", json_integer((json_int_t)b.ngenres));
        json_object_set_new(b.meta, "artist_repeats", json_integer((json_int_t)left));
        if (b.fallback_reason[0])
                json_object_set_new(b.meta, out->n ? "fallback_reason" : "empty_reason",
                                    json_string(b.fallback_reason));
        out->metadata = b.meta;
        b.meta = NULL;
        out->generated_ms = now_ms;
        out->expires_ms = now_ms + pl_gen_ttl_ms(rq->playlist_type);
        snprintf(out->variant, sizeof(out->variant), "%s", b.variant);
        rc = 0;
done:
        for (size_t i = 0; i < b.npools; i++)
                pl_pool_free(&b.pools[i]);
        json_decref(b.meta);
        json_decref(b.meta_params);
        if (rc != 0) {
                free(out->items);
                out->items = NULL;
                out->n = 0;
        }
        return rc;
}

int pl_gen_build(struct pl_gen *g, const struct pl_request *rq, int64_t now_ms,
                 struct pl_playlist *out, char *errstr, size_t errstr_size)
{
        return build(g, rq, now_ms, NULL, out, errstr, errstr_size);
}

/* The types whose pools catalog.c computes (the scheduled four). */
static bool batch_type(const char *type)
{
        return type &&
               (strcmp(type, "daily_mix") == 0 || strcmp(type, "discovery_weekly") == 0 ||
                strcmp(type, "new_for_you") == 0 || strcmp(type, "forgotten_favorites") == 0);
}

static bool batch_mem(const struct pl_request *rq)
{
        return batch_type(rq->playlist_type) && rq->user_id && qz_uuid_valid(rq->user_id);
}

/* A batch's user of the scheduled types, for splitting the shared load into groups. */
struct batch_user {
        const char *id; /* its first request's spelling */
        size_t first;   /* its first request (sorting by id then this keeps that spelling) */
        long long plays;
        size_t group;
};

static int cmp_batch_user(const void *a, const void *b)
{
        const struct batch_user *x = a, *y = b;
        int c = strcasecmp(x->id, y->id);
        if (c)
                return c;
        return x->first < y->first ? -1 : x->first > y->first;
}

static int cmp_batch_user_id(const void *key, const void *elem)
{
        return strcasecmp(key, ((const struct batch_user *)elem)->id);
}

/* Counts the plays of the batch's users (bu: nd distinct, by id) and groups them greedily in
 * request order, each group's plays at most max (a user over it is a group alone); rq_user[i]
 * is request i's user in bu (SIZE_MAX: not from memory). Returns the number of groups, 0 on
 * failure (errstr; the connection's SQLSTATE says which kind). */
static size_t group_users(struct pl_gen *g, struct batch_user *bu, size_t nd, const size_t *rq_user,
                          size_t n, const char *now, char *errstr, size_t errstr_size)
{
        const char **ids = calloc(nd, sizeof(*ids));
        long long *plays = calloc(nd, sizeof(*plays));
        size_t ngroups = 0;
        if (!ids || !plays) {
                snprintf(errstr, errstr_size, "out of memory");
                goto done;
        }
        for (size_t k = 0; k < nd; k++)
                ids[k] = bu[k].id;
        if (pl_cat_batch_plays(g->pg, ids, nd, now, plays, errstr, errstr_size) != 0)
                goto done;
        long long max = g->cfg.load_max_plays > 0 ? g->cfg.load_max_plays : PL_GEN_LOAD_MAX_PLAYS;
        long long sum = 0;
        size_t members = 0;
        for (size_t k = 0; k < nd; k++)
                bu[k].group = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
                if (rq_user[i] == SIZE_MAX || bu[rq_user[i]].group != SIZE_MAX)
                        continue;
                long long p = plays[rq_user[i]];
                if (members && sum + p > max) {
                        ngroups++;
                        sum = 0;
                        members = 0;
                }
                bu[rq_user[i]].group = ngroups;
                sum += p;
                members++;
        }
        ngroups++;
done:
        free(ids);
        free(plays);
        return ngroups;
}

int pl_gen_build_batch(struct pl_gen *g, const struct pl_request *const *rqs, size_t n,
                       int64_t now_ms, struct pl_gen_result *res, char *errstr, size_t errstr_size)
{
        struct pl_cat_batch mb = {0};
        const char **users = calloc(n ? n : 1, sizeof(*users));
        struct batch_user *bu = calloc(n ? n : 1, sizeof(*bu));
        size_t *rq_user = calloc(n ? n : 1, sizeof(*rq_user));
        char now[40], tau[32];
        size_t nd = 0, ngroups = 1;
        int rc = -1;
        if (!users || !bu || !rq_user) {
                snprintf(errstr, errstr_size, "out of memory");
                goto done;
        }
        /* Every result starts empty: a group's failure frees what the groups before it built. */
        for (size_t i = 0; i < n; i++) {
                res[i].pl = (struct pl_playlist){0};
                if (batch_mem(rqs[i]))
                        bu[nd++] = (struct batch_user){.id = rqs[i]->user_id, .first = i};
        }
        qsort(bu, nd, sizeof(*bu), cmp_batch_user);
        size_t nu = nd;
        nd = 0;
        for (size_t k = 0; k < nu; k++)
                if (nd == 0 || strcasecmp(bu[nd - 1].id, bu[k].id) != 0)
                        bu[nd++] = bu[k];
        for (size_t i = 0; i < n; i++) {
                const struct batch_user *u =
                    batch_mem(rqs[i])
                        ? bsearch(rqs[i]->user_id, bu, nd, sizeof(*bu), cmp_batch_user_id)
                        : NULL;
                rq_user[i] = u ? (size_t)(u - bu) : SIZE_MAX;
        }
        qz_time_format(now_ms, now, sizeof(now));
        snprintf(tau, sizeof(tau), "%g", g->cfg.recency_days);
        if (nd) {
                bool reloaded;
                char state[8] = "";
                int64_t t0 = qz_clock_mono_ns();
                int lrc = pl_catalog_sync(g->cat, g->pg, &reloaded, state, errstr, errstr_size);
                int64_t t1 = qz_clock_mono_ns();
                /* One user is one group whatever its plays: no count. */
                if (lrc == 0 && nd > 1 &&
                    !(ngroups = group_users(g, bu, nd, rq_user, n, now, errstr, errstr_size))) {
                        lrc = -1;
                        ngroups = 1;
                        snprintf(state, sizeof(state), "%s", qz_pg_sqlstate(g->pg));
                }
                if (lrc != 0) {
                        /* A lost connection (or no Postgres state: memory) is worth a retry;
                         * anything else (data the shared load cannot take, e.g. an infinite
                         * released_at) would fail every retry, while the per-request SQL may
                         * cope: build each request that way instead. */
                        if (!state[0] || qz_pg_sqlstate_is_connection(state))
                                goto done;
                        qz_warn("the batch's shared load failed (SQLSTATE %s), building %zu "
                                "requests one by one: %s",
                                state, n, errstr);
                        nd = 0;
                } else if (reloaded) {
                        qz_info("catalog loaded: %zu tracks, %zu neighbours in %.0f ms",
                                pl_catalog_tracks(g->cat), pl_catalog_neighbours(g->cat),
                                (double)(t1 - t0) / 1e6);
                }
        }
        /* Group by group, each built from its own load and that load freed before the next:
         * the memory held is one group's plays, not the batch's. The other requests go with the
         * first group, so a batch of one group builds in the requests' order as before. */
        for (size_t gi = 0; gi < ngroups; gi++) {
                bool loaded = false;
                size_t ng = 0;
                for (size_t i = 0; nd && i < n; i++)
                        if (rq_user[i] != SIZE_MAX && bu[rq_user[i]].group == gi)
                                users[ng++] = rqs[i]->user_id;
                if (ng) {
                        if (pl_cat_batch_load(&mb, g->cat, g->pg, users, ng, now_ms, now, tau,
                                              errstr, errstr_size) == 0) {
                                loaded = true;
                        } else {
                                char state[8];
                                snprintf(state, sizeof(state), "%s", qz_pg_sqlstate(g->pg));
                                if (!state[0] || qz_pg_sqlstate_is_connection(state)) {
                                        for (size_t i = 0; i < n; i++)
                                                pl_playlist_free(&res[i].pl);
                                        goto done;
                                }
                                qz_warn("the batch's shared load failed (SQLSTATE %s), building "
                                        "%zu requests one by one: %s",
                                        state, ng, errstr);
                        }
                }
                for (size_t i = 0; i < n; i++) {
                        bool mem = nd && rq_user[i] != SIZE_MAX;
                        if (mem ? bu[rq_user[i]].group != gi : gi != 0)
                                continue;
                        res[i].err[0] = '\0';
                        res[i].sqlstate[0] = '\0';
                        res[i].rc = build(g, rqs[i], now_ms, mem && loaded ? &mb : NULL, &res[i].pl,
                                          res[i].err, sizeof(res[i].err));
                        /* Its own state, now: a later request's query clears or replaces it. */
                        if (res[i].rc < 0)
                                snprintf(res[i].sqlstate, sizeof(res[i].sqlstate), "%s",
                                         qz_pg_sqlstate(g->pg));
                }
                pl_cat_batch_free(&mb);
        }
        rc = 0;
done:
        pl_cat_batch_free(&mb);
        free(users);
        free(bu);
        free(rq_user);
        return rc;
}
