/* store.c - one request's outcome in one transaction: playlist, generation, progress, notify. */
#include "store.h"

#include "jobs.h"
#include "json.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int pl_store_result_in_batch(struct qz_pg *pg, const struct pl_request *rq,
                             const struct pl_playlist *pl, const char *error,
                             struct pl_store_outcome *out, char *errstr, size_t errstr_size)
{
        memset(out, 0, sizeof(*out));
        return store_in_tx(pg, rq, pl, error, false, out, errstr, errstr_size);
}
