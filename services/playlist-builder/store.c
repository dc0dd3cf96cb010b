/* store.c - requests' outcomes: playlist, generation, progress, notify; per request or set-based.
 */
#include "store.h"

#include "jobs.h"
#include "json.h"
#include "pg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A batch's outcomes: the request log (claim), generations, smart_playlists and notifications in
 * one statement. Data-modifying CTEs cannot see each other's rows, so the generation id is drawn
 * up front (gid) and the log row is written complete; only claimed requests (RETURNING of c) get
 * a playlist and a notification, as store_in_tx does. The track ids of all the batch's playlists
 * travel as one binary uuid[] ($2; row i's are $2[o+1 .. o+n]), sliced once per row: as text
 * (a "{…}" literal per row, cast where used) they were half the statement's time, in uuid_in and
 * the JSON parse (measured: 66-110 ms -> 41-79 ms per 500 requests). */
#define BATCH_SQL                                                                                  \
        "WITH x AS MATERIALIZED (SELECT x.*, gen_random_uuid() AS gid, "                           \
        "($2::uuid[])[o + 1:o + n] AS tids FROM "                                                  \
        "jsonb_to_recordset($1::jsonb) AS x(i int, request_id uuid, user_id uuid, "                \
        "playlist_type text, run_id uuid, ok boolean, error text, variant text, o int, "           \
        "n int, gen bigint, exp bigint, meta jsonb)), "                                            \
        "c AS (INSERT INTO playlist_requests_done (request_id, user_id, playlist_type, run_id, "   \
        "status, error, playlist_id, track_count, generated_at, expires_at) SELECT request_id, "   \
        "user_id, playlist_type, run_id, CASE WHEN ok THEN 'ok' ELSE 'error' END, error, "         \
        "CASE WHEN ok THEN gid END, CASE WHEN ok THEN n END, "                                     \
        "CASE WHEN ok THEN to_timestamp(gen / 1000.0) END, "                                       \
        "CASE WHEN ok THEN to_timestamp(exp / 1000.0) END FROM x ORDER BY i "                      \
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id), "                              \
        "cx AS (SELECT x.* FROM x JOIN c USING (request_id)), "                                    \
        "g AS (INSERT INTO smart_playlist_generations (id, user_id, playlist_type, variant, "      \
        "track_ids, generated_at) SELECT gid, user_id, playlist_type, variant, tids, "             \
        "to_timestamp(gen / 1000.0) FROM cx WHERE ok ORDER BY i), "                                \
        "s AS (INSERT INTO smart_playlists AS s (user_id, playlist_type, id, track_ids, "          \
        "generated_at, expires_at, metadata) SELECT user_id, playlist_type, gid, tids, "           \
        "to_timestamp(gen / 1000.0), to_timestamp(exp / 1000.0), meta FROM cx WHERE ok "           \
        "ORDER BY i ON CONFLICT (user_id, playlist_type) DO UPDATE SET id = EXCLUDED.id, "         \
        "track_ids = EXCLUDED.track_ids, generated_at = EXCLUDED.generated_at, "                   \
        "expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata) "                         \
        "SELECT i, gid::text, pg_notify('playlist_ready', json_build_object('request_id', "        \
        "request_id::text, 'status', CASE WHEN ok THEN 'ok' ELSE 'error' END, 'error', error, "    \
        "'playlist_id', CASE WHEN ok THEN gid::text END, 'playlist_type', playlist_type, "         \
        "'track_count', CASE WHEN ok THEN n ELSE 0 END)::text) FROM cx ORDER BY i"

static const struct {
        const char *name, *sql;
} statements[] = {
    {"pl_done_claim",
     "INSERT INTO playlist_requests_done (request_id, user_id, playlist_type, run_id, status, "
     "error) VALUES ($1::uuid, $2::uuid, $3, $4::uuid, $5, $6) "
     "ON CONFLICT (request_id) DO NOTHING"},
    {"pl_done_get", "SELECT status, coalesce(playlist_id::text, ''), coalesce(track_count, 0), "
                    "coalesce((extract(epoch FROM generated_at) * 1000)::bigint, 0), "
                    "coalesce((extract(epoch FROM expires_at) * 1000)::bigint, 0) "
                    "FROM playlist_requests_done WHERE request_id = $1::uuid"},
    /* The generation row first: smart_playlists.id names it (A/B attribution). */
    {"pl_upsert",
     "WITH g AS (INSERT INTO smart_playlist_generations (user_id, playlist_type, variant, "
     "track_ids, generated_at) VALUES ($1::uuid, $2, $3, $4::uuid[], "
     "to_timestamp($5::bigint / 1000.0)) RETURNING id, generated_at) "
     "INSERT INTO smart_playlists AS s (user_id, playlist_type, id, track_ids, generated_at, "
     "expires_at, metadata) SELECT $1::uuid, $2, g.id, $4::uuid[], g.generated_at, "
     "to_timestamp($6::bigint / 1000.0), $7::jsonb FROM g "
     "ON CONFLICT (user_id, playlist_type) DO UPDATE SET id = EXCLUDED.id, "
     "track_ids = EXCLUDED.track_ids, generated_at = EXCLUDED.generated_at, "
     "expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata RETURNING s.id"},
    {"pl_done_set",
     "UPDATE playlist_requests_done SET playlist_id = $2::uuid, track_count = $3::int, "
     "generated_at = to_timestamp($4::bigint / 1000.0), "
     "expires_at = to_timestamp($5::bigint / 1000.0) WHERE request_id = $1::uuid"},
    {"pl_store_batch", BATCH_SQL},
    {"pl_done_many", "SELECT request_id::text, status, coalesce(playlist_id::text, ''), "
                     "coalesce(track_count, 0), "
                     "coalesce((extract(epoch FROM generated_at) * 1000)::bigint, 0), "
                     "coalesce((extract(epoch FROM expires_at) * 1000)::bigint, 0) "
                     "FROM playlist_requests_done WHERE request_id = ANY ($1::uuid[])"},
    {"pl_notify", "SELECT pg_notify('playlist_ready', json_build_object('request_id', $1::text, "
                  "'status', $2::text, 'error', $3::text, 'playlist_id', $4::text, "
                  "'playlist_type', $5::text, 'track_count', $6::int)::text)"},
};

int pl_store_prepare(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++)
                if (qz_pg_prepare(pg, statements[i].name, statements[i].sql, errstr, errstr_size) !=
                        0 &&
                    !qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)))
                        return -1;
        return 0;
}

char *pl_store_ids_literal(const struct pl_cand *items, size_t n)
{
        char *s = malloc(n * 37 + 3);
        if (!s)
                return NULL;
        size_t o = 0;
        s[o++] = '{';
        for (size_t i = 0; i < n; i++) {
                if (i)
                        s[o++] = ',';
                size_t len = strlen(items[i].track_id);
                memcpy(s + o, items[i].track_id, len);
                o += len;
        }
        s[o++] = '}';
        s[o] = '\0';
        return s;
}

static int read_done(struct qz_pg *pg, const char *request_id, struct pl_store_outcome *out,
                     char *errstr, size_t errstr_size)
{
        const char *v[] = {request_id};
        PGresult *res = qz_pg_query_prepared(pg, "pl_done_get", 1, v, errstr, errstr_size);
        if (!res)
                return -1;
        if (PQntuples(res) == 1) {
                out->ok = strcmp(PQgetvalue(res, 0, 0), "ok") == 0;
                snprintf(out->playlist_id, sizeof(out->playlist_id), "%s", PQgetvalue(res, 0, 1));
                out->track_count = atoi(PQgetvalue(res, 0, 2));
                out->generated_ms = atoll(PQgetvalue(res, 0, 3));
                out->expires_ms = atoll(PQgetvalue(res, 0, 4));
        }
        PQclear(res);
        return 0;
}

/* The statements of one request inside the caller's transaction. progress: count the run's
 * progress here (else the caller adds 1 per out->counted to the run before committing). */
static int store_in_tx(struct qz_pg *pg, const struct pl_request *rq, const struct pl_playlist *pl,
                       const char *error, bool progress, struct pl_store_outcome *out, char *errstr,
                       size_t errstr_size)
{
        char *ids = NULL, *meta = NULL;
        char count[16] = "0", gen[24], exp[24];
        long claimed = 0;
        const char *vc[] = {rq->request_id, rq->user_id,         rq->playlist_type,
                            rq->run_id,     pl ? "ok" : "error", pl ? NULL : error};
        if (qz_pg_exec_prepared(pg, "pl_done_claim", 6, vc, &claimed, errstr, errstr_size) != 0)
                goto fail;
        if (claimed == 0) { /* handled before: report that, change nothing */
                out->duplicate = true;
                if (read_done(pg, rq->request_id, out, errstr, errstr_size) != 0)
                        goto fail;
                return 0;
        }
        if (pl) {
                ids = pl_store_ids_literal(pl->items, pl->n);
                meta = json_dumps(pl->metadata, JSON_COMPACT);
                if (!ids || !meta) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto fail;
                }
                snprintf(count, sizeof(count), "%zu", pl->n);
                snprintf(gen, sizeof(gen), "%lld", (long long)pl->generated_ms);
                snprintf(exp, sizeof(exp), "%lld", (long long)pl->expires_ms);
                const char *vu[] = {rq->user_id, rq->playlist_type, pl->variant, ids, gen, exp,
                                    meta};
                PGresult *res = qz_pg_query_prepared(pg, "pl_upsert", 7, vu, errstr, errstr_size);
                if (!res)
                        goto fail;
                snprintf(out->playlist_id, sizeof(out->playlist_id), "%s", PQgetvalue(res, 0, 0));
                PQclear(res);
                const char *vs[] = {rq->request_id, out->playlist_id, count, gen, exp};
                if (qz_pg_exec_prepared(pg, "pl_done_set", 5, vs, NULL, errstr, errstr_size) != 0)
                        goto fail;
                out->ok = true;
                out->track_count = (int)pl->n;
                out->generated_ms = pl->generated_ms;
                out->expires_ms = pl->expires_ms;
        }
        /* Counted here, once per request, with the effect it counts. */
        out->counted = rq->run_id != NULL;
        if (progress && rq->run_id &&
            qz_jobs_run_progress(pg, rq->run_id, 1, errstr, errstr_size) != 0)
                goto fail;
        const char *vn[] = {rq->request_id,    pl ? "ok" : "error",
                            pl ? NULL : error, pl ? out->playlist_id : NULL,
                            rq->playlist_type, count};
        PGresult *res = qz_pg_query_prepared(pg, "pl_notify", 6, vn, errstr, errstr_size);
        if (!res)
                goto fail;
        PQclear(res);
        free(ids);
        free(meta);
        return 0;
fail:
        snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", qz_pg_sqlstate(pg));
        free(ids);
        free(meta);
        return -1;
}

int pl_store_result(struct qz_pg *pg, const struct pl_request *rq, const struct pl_playlist *pl,
                    const char *error, struct pl_store_outcome *out, char *errstr,
                    size_t errstr_size)
{
        memset(out, 0, sizeof(*out));
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        if (store_in_tx(pg, rq, pl, error, true, out, errstr, errstr_size) != 0) {
                qz_pg_rollback(pg, NULL, 0);
                return -1;
        }
        return qz_pg_commit(pg, errstr, errstr_size);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, surrogates or code points
 * above U+10FFFF), 0 when invalid; *cut is set when the string ends inside a sequence that was
 * valid so far. */
static size_t utf8_len(const unsigned char *p, bool *cut)
{
        unsigned c = p[0];
        size_t n;
        unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
        *cut = false;
        if (c < 0x80)
                return 1;
        if (c >= 0xC2 && c <= 0xDF)
                n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
                n = 3;
                lo = c == 0xE0 ? 0xA0 : 0x80;
                hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
                n = 4;
                lo = c == 0xF0 ? 0x90 : 0x80;
                hi = c == 0xF4 ? 0x8F : 0xBF;
        } else
                return 0;
        for (size_t k = 1; k < n; k++) {
                if (p[k] == '\0') {
                        *cut = true;
                        return 0;
                }
                if (p[k] < (k == 1 ? lo : 0x80) || p[k] > (k == 1 ? hi : 0xBF))
                        return 0;
        }
        return n;
}

char *pl_store_text_fix(char *s)
{
        unsigned char *p = (unsigned char *)s;
        while (p && *p) {
                bool cut;
                size_t n = utf8_len(p, &cut);
                if (cut) {
                        *p = '\0';
                        break;
                }
                if (n == 0)
                        *p++ = '?';
                else
                        p += n;
        }
        return s;
}

/* Hex digit values plus one (0 = not a hex digit): a table, as 25,000 ids per batch go through
 * uuid_bytes (a branchy parse showed in perf). */
static const unsigned char hex1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16};

/* A canonical uuid text (8-4-4-4-12 hex digits) into its 16 bytes. 0, or -1 if malformed. */
static int uuid_bytes(const char *s, unsigned char out[16])
{
        size_t k = 0;
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return -1;
                        continue;
                }
                int hi = hex1[(unsigned char)s[i]], lo = hi ? hex1[(unsigned char)s[++i]] : 0;
                if (!lo)
                        return -1;
                out[k++] = (unsigned char)((hi - 1) << 4 | (lo - 1));
        }
        return s[36] == '\0' ? 0 : -1;
}

static void put_be32(unsigned char *p, uint32_t v)
{
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

/* Postgres' binary uuid[] of `total` elements (array_recv's format: ndim, flags, element type
 * 2950, then size and lower bound per dimension, then length and bytes per element), without
 * the elements: the caller writes each at hdr + 20 * k + 4. *len gets the full length. */
static unsigned char *uuid_array_new(size_t total, int *len)
{
        size_t hdr = total ? 20 : 12, size = hdr + 20 * total;
        unsigned char *b = malloc(size);
        if (!b)
                return NULL;
        put_be32(b, total ? 1 : 0);
        put_be32(b + 4, 0);
        put_be32(b + 8, 2950);
        if (total) {
                put_be32(b + 12, (uint32_t)total);
                put_be32(b + 16, 1);
        }
        for (size_t k = 0; k < total; k++)
                put_be32(b + hdr + 20 * k, 16);
        *len = (int)size;
        return b;
}

/* Round of request i: one after the latest round of an earlier request sharing its request_id
 * or its (user, type), 0 when none does; rounds of the earlier ones are in round[]. Counting the
 * earlier conflicts instead could put two conflicting requests in one round (two upserts of one
 * smart_playlists row in one statement: 21000). */
static size_t round_of(const struct pl_request *const *rqs, const size_t *round, size_t i)
{
        size_t r = 0;
        for (size_t j = 0; j < i; j++)
                if (round[j] + 1 > r &&
                    (strcasecmp(rqs[j]->request_id, rqs[i]->request_id) == 0 ||
                     (strcasecmp(rqs[j]->user_id, rqs[i]->user_id) == 0 &&
                      strcmp(rqs[j]->playlist_type, rqs[i]->playlist_type) == 0)))
                        r = round[j] + 1;
        return r;
}

static int cmp_rid(const void *a, const void *b)
{
        return strcasecmp((*(const struct pl_request *const *)a)->request_id,
                          (*(const struct pl_request *const *)b)->request_id);
}

static int cmp_user_type(const void *a, const void *b)
{
        const struct pl_request *x = *(const struct pl_request *const *)a,
                                *y = *(const struct pl_request *const *)b;
        int c = strcasecmp(x->user_id, y->user_id);
        return c ? c : strcmp(x->playlist_type, y->playlist_type);
}

/* True when some request_id or (user, type) appears twice: two sorts instead of round_of's
 * n^2 comparisons (a quarter of a million per batch of 500) in the usual case of none. */
static bool any_repeat(const struct pl_request *const *rqs, size_t n)
{
        const struct pl_request **v = malloc((n ? n : 1) * sizeof(*v));
        if (!v)
                return true; /* round_of decides */
        bool rep = false;
        for (int pass = 0; pass < 2 && !rep; pass++) {
                int (*cmp)(const void *, const void *) = pass ? cmp_user_type : cmp_rid;
                memcpy(v, rqs, n * sizeof(*v));
                qsort(v, n, sizeof(*v), cmp);
                for (size_t i = 1; i < n && !rep; i++)
                        rep = cmp(&v[i - 1], &v[i]) == 0;
        }
        free(v);
        return rep;
}

int pl_store_batch(struct qz_pg *pg, const struct pl_request *const *rqs,
                   const struct pl_playlist *const *pls, const char *const *errors, size_t n,
                   struct pl_store_outcome *outs, char sqlstate[8], char *errstr,
                   size_t errstr_size)
{
        size_t *round = calloc(n ? n : 1, sizeof(*round)), maxr = 0;
        char *doc = NULL, *dups = NULL;
        unsigned char *idbin = NULL;
        json_t *arr = NULL;
        PGresult *res = NULL;
        int rc = -1;
        sqlstate[0] = '\0';
        if (!round)
                goto oom;
        bool repeats = any_repeat(rqs, n);
        for (size_t i = 0; i < n; i++) {
                memset(&outs[i], 0, sizeof(outs[i]));
                round[i] = repeats ? round_of(rqs, round, i) : 0;
                if (round[i] > maxr)
                        maxr = round[i];
        }
        for (size_t r = 0; r <= maxr && n; r++) {
                if (!(arr = json_array()))
                        goto oom;
                size_t nd = 0, total = 0, off = 0;
                for (size_t i = 0; i < n; i++)
                        if (round[i] == r && pls[i])
                                total += pls[i]->n;
                int idlen = 0;
                if (!(idbin = uuid_array_new(total, &idlen)))
                        goto oom;
                for (size_t i = 0; i < n; i++) {
                        if (round[i] != r)
                                continue;
                        const struct pl_playlist *pl = pls[i];
                        for (size_t t = 0; pl && t < pl->n; t++)
                                if (uuid_bytes(pl->items[t].track_id,
                                               idbin + 20 + 20 * (off + t) + 4) != 0) {
                                        snprintf(errstr, errstr_size, "track id '%s' is not a uuid",
                                                 pl->items[t].track_id);
                                        snprintf(sqlstate, 8, "22P02");
                                        goto done;
                                }
                        /* The error text is the request's: one that is not valid UTF-8
                         * (requests.c fixes what it stores, so only a caller that did not)
                         * is fixed here, and one that still cannot be sent is that request's
                         * fault (22021, stored one by one), never a retry of the batch. */
                        json_t *ej = pl || !errors[i] ? json_null() : json_string(errors[i]);
                        if (!ej) {
                                char *fixed = strdup(errors[i]);
                                ej = fixed ? json_string(pl_store_text_fix(fixed)) : NULL;
                                free(fixed);
                        }
                        if (!ej) {
                                snprintf(errstr, errstr_size,
                                         "request %s: its error text cannot be stored",
                                         rqs[i]->request_id);
                                snprintf(sqlstate, 8, "22021");
                                goto done;
                        }
                        json_t *o = json_pack(
                            "{s:I,s:s,s:s,s:s,s:o,s:b,s:o,s:s,s:I,s:I,s:I,s:I,s:O}", "i",
                            (json_int_t)i, "request_id", rqs[i]->request_id, "user_id",
                            rqs[i]->user_id, "playlist_type", rqs[i]->playlist_type, "run_id",
                            rqs[i]->run_id ? json_string(rqs[i]->run_id) : json_null(), "ok",
                            pl != NULL, "error", ej, "variant", pl ? pl->variant : "", "o",
                            (json_int_t)off, "n", (json_int_t)(pl ? pl->n : 0), "gen",
                            (json_int_t)(pl ? pl->generated_ms : 0), "exp",
                            (json_int_t)(pl ? pl->expires_ms : 0), "meta",
                            pl && pl->metadata ? pl->metadata : json_null());
                        if (!o || json_array_append_new(arr, o) != 0)
                                goto oom;
                        off += pl ? pl->n : 0;
                        nd++;
                }
                if (!(doc = json_dumps(arr, JSON_COMPACT)))
                        goto oom;
                json_decref(arr);
                arr = NULL;
                const char *v[] = {doc, (const char *)idbin};
                const int lens[] = {0, idlen}, fmts[] = {0, 1};
                res = qz_pg_query_prepared_fmt(pg, "pl_store_batch", 2, v, lens, fmts, errstr,
                                               errstr_size);
                free(idbin);
                idbin = NULL;
                if (!res)
                        goto fail;
                for (int k = 0; k < PQntuples(res); k++) {
                        size_t i = (size_t)atol(PQgetvalue(res, k, 0));
                        if (i >= n)
                                continue;
                        struct pl_store_outcome *o = &outs[i];
                        o->counted = rqs[i]->run_id != NULL;
                        if (pls[i]) {
                                o->ok = true;
                                snprintf(o->playlist_id, sizeof(o->playlist_id), "%s",
                                         PQgetvalue(res, k, 1));
                                o->track_count = (int)pls[i]->n;
                                o->generated_ms = pls[i]->generated_ms;
                                o->expires_ms = pls[i]->expires_ms;
                        }
                        round[i] = SIZE_MAX; /* claimed */
                }
                PQclear(res);
                res = NULL;
                free(doc);
                doc = NULL;
                /* The rest of the round was handled before: report what was stored then. */
                size_t o = 0;
                if (!(dups = malloc(nd * 38 + 3)))
                        goto oom;
                dups[o++] = '{';
                for (size_t i = 0; i < n; i++)
                        if (round[i] == r) {
                                if (o > 1)
                                        dups[o++] = ',';
                                o += (size_t)snprintf(dups + o, 38, "%s", rqs[i]->request_id);
                        }
                dups[o++] = '}';
                dups[o] = '\0';
                if (o > 2) {
                        const char *vd[] = {dups};
                        if (!(res = qz_pg_query_prepared(pg, "pl_done_many", 1, vd, errstr,
                                                         errstr_size)))
                                goto fail;
                        for (size_t i = 0; i < n; i++) {
                                if (round[i] != r)
                                        continue;
                                outs[i].duplicate = true;
                                for (int k = 0; k < PQntuples(res); k++)
                                        if (strcasecmp(PQgetvalue(res, k, 0), rqs[i]->request_id) ==
                                            0) {
                                                struct pl_store_outcome *d = &outs[i];
                                                d->ok = strcmp(PQgetvalue(res, k, 1), "ok") == 0;
                                                snprintf(d->playlist_id, sizeof(d->playlist_id),
                                                         "%s", PQgetvalue(res, k, 2));
                                                d->track_count = atoi(PQgetvalue(res, k, 3));
                                                d->generated_ms = atoll(PQgetvalue(res, k, 4));
                                                d->expires_ms = atoll(PQgetvalue(res, k, 5));
                                        }
                        }
                        PQclear(res);
                        res = NULL;
                }
                free(dups);
                dups = NULL;
        }
        rc = 0;
        goto done;
oom:
        snprintf(errstr, errstr_size, "out of memory");
fail:
        snprintf(sqlstate, 8, "%s", qz_pg_sqlstate(pg));
done:
        PQclear(res);
        json_decref(arr);
        free(doc);
        free(dups);
        free(idbin);
        free(round);
        return rc;
}
