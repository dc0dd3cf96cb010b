/* similarity.c - the compute-track-similarities job: CF and content similarity into Postgres. */
#include "similarity.h"
#include "cf.h"

#include "log.h"
#include "pg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Replaces every row of one kind with nb (track indexes into ids) in one transaction. */
static int replace_kind(struct qz_pg *pg, const char *kind, const struct pl_cf_nb *nb, size_t n,
                        char *const *ids, char *errstr, size_t errstr_size)
{
        const char *v[] = {kind};
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        PGresult *r = qz_pg_query(pg, "DELETE FROM track_similarities WHERE kind = $1", 1, v,
                                  errstr, errstr_size);
        if (!r)
                goto fail;
        PQclear(r);
        if (qz_pg_copy_begin(pg,
                             "COPY track_similarities (track_id, similar_track_id, score, kind) "
                             "FROM STDIN",
                             errstr, errstr_size) != 0)
                goto fail;
        char line[160];
        for (size_t i = 0; i < n; i++) {
                int len = snprintf(line, sizeof(line), "%s\t%s\t%.6g\t%s\n", ids[nb[i].track],
                                   ids[nb[i].similar], (double)nb[i].score, kind);
                if (qz_pg_copy_put(pg, line, (size_t)len, errstr, errstr_size) != 0) {
                        qz_pg_copy_abort(pg, "put failed");
                        goto fail;
                }
        }
        if (qz_pg_copy_end(pg, NULL, errstr, errstr_size) != 0)
                goto fail;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                return -1;
        /* The builders' catalog version, after the data's commit and in its own transaction
         * (sql/052): bumped inside the long one above it would lock the version row, and with it
         * every tracks writer, until the COPY ends. */
        if (!(r = qz_pg_query(pg, "SELECT playlist_catalog_bump_now()", 0, NULL, errstr,
                              errstr_size)))
                return -1;
        PQclear(r);
        return 0;
fail:
        qz_pg_rollback(pg, NULL, 0);
        return -1;
}

static void free_ids(char **ids, size_t n)
{
        for (size_t i = 0; ids && i < n; i++)
                free(ids[i]);
        free(ids);
}

static int compute_cf(const struct pl_similarity_cfg *cfg, struct qz_pg *pg, const char *as_of,
                      size_t *rows, size_t *ntracks_out, char *errstr, size_t errstr_size)
{
        char days[16];
        snprintf(days, sizeof(days), "%ld", cfg->window_days);
        const char *v[] = {days, as_of};
        PGresult *r = qz_pg_query(
            pg,
            "WITH p AS (SELECT h.user_id, h.track_id, count(*) AS c FROM play_history h "
            "JOIN tracks t ON t.id = h.track_id AND t.deleted_at IS NULL "
            "WHERE h.played_at >= coalesce($2::timestamptz, now()) - make_interval(days => "
            "$1::int) "
            "AND h.played_at < coalesce($2::timestamptz, now()) GROUP BY h.user_id, h.track_id) "
            "SELECT dense_rank() OVER (ORDER BY user_id) - 1, "
            "dense_rank() OVER (ORDER BY track_id) - 1, track_id::text, c FROM p",
            2, v, errstr, errstr_size);
        if (!r)
                return -1;
        size_t np = (size_t)PQntuples(r);
        struct pl_cf_pair *pairs = malloc((np ? np : 1) * sizeof(*pairs));
        char **ids = NULL;
        uint32_t nusers = 0, ntracks = 0;
        struct pl_cf_nb *nb = NULL;
        size_t nnb = 0;
        int rc = -1;
        if (!pairs)
                goto done;
        for (size_t i = 0; i < np; i++) {
                pairs[i].user = (uint32_t)atol(PQgetvalue(r, (int)i, 0));
                pairs[i].track = (uint32_t)atol(PQgetvalue(r, (int)i, 1));
                pairs[i].w = (float)log1p(atof(PQgetvalue(r, (int)i, 3)));
                if (pairs[i].user + 1 > nusers)
                        nusers = pairs[i].user + 1;
                if (pairs[i].track + 1 > ntracks)
                        ntracks = pairs[i].track + 1;
        }
        if (!(ids = calloc(ntracks ? ntracks : 1, sizeof(*ids))))
                goto done;
        for (size_t i = 0; i < np; i++)
                if (!ids[pairs[i].track] &&
                    !(ids[pairs[i].track] = strdup(PQgetvalue(r, (int)i, 2))))
                        goto done;
        PQclear(r);
        r = NULL;
        struct pl_cf_opts o = {.k = (size_t)cfg->k,
                               .min_common = (size_t)cfg->min_common,
                               .shrink = cfg->shrink,
                               .max_per_user = (size_t)cfg->max_per_user};
        if (pl_cf_compute(pairs, np, nusers, ntracks, &o, &nb, &nnb) != 0) {
                snprintf(errstr, errstr_size, "out of memory computing CF");
                goto done;
        }
        if (replace_kind(pg, "cf", nb, nnb, ids, errstr, errstr_size) != 0)
                goto done;
        *rows = nnb;
        *ntracks_out = ntracks;
        rc = 0;
done:
        PQclear(r);
        free(pairs);
        free(nb);
        free_ids(ids, ntracks);
        return rc;
}

static float unit(const char *s, double scale)
{
        if (!s || !*s)
                return 0.5f;
        double x = atof(s) / scale;
        return (float)(x < 0 ? 0 : x > 1 ? 1 : x);
}

/* 0 done, 1 no features (content rows untouched), -1 error. */
static int compute_content(const struct pl_similarity_cfg *cfg, struct qz_pg *pg, size_t *rows,
                           char *errstr, size_t errstr_size)
{
        PGresult *r = qz_pg_query(
            pg,
            "SELECT t.id::text, coalesce(f.genre, t.genres[1], ''), f.tempo, f.energy, f.valence, "
            "f.danceability, f.acousticness FROM track_features f JOIN tracks t ON t.id = "
            "f.track_id AND t.deleted_at IS NULL WHERE f.tempo IS NOT NULL AND f.energy IS NOT "
            "NULL ORDER BY 2, 1",
            0, NULL, errstr, errstr_size);
        if (!r)
                return -1;
        size_t n = (size_t)PQntuples(r);
        if (n == 0) {
                PQclear(r);
                return 1;
        }
        struct pl_cf_feat *items = calloc(n, sizeof(*items));
        char **ids = calloc(n, sizeof(*ids));
        struct pl_cf_nb *nb = NULL;
        size_t nnb = 0;
        int rc = -1;
        if (!items || !ids)
                goto done;
        uint32_t group = 0;
        for (size_t i = 0; i < n; i++) {
                int row = (int)i;
                if (i > 0 && strcmp(PQgetvalue(r, row, 1), PQgetvalue(r, row - 1, 1)) != 0)
                        group++; /* rows are ordered by genre */
                if (!(ids[i] = strdup(PQgetvalue(r, row, 0))))
                        goto done;
                items[i].track = (uint32_t)i;
                items[i].group = group;
                items[i].f[0] = unit(PQgetvalue(r, row, 2), 200.0);
                for (int x = 1; x < PL_CF_NFEAT; x++)
                        items[i].f[x] = unit(PQgetvalue(r, row, 2 + x), 1.0);
        }
        if (pl_cf_content(items, n, (size_t)cfg->k, 0.5, &nb, &nnb) != 0) {
                snprintf(errstr, errstr_size, "out of memory computing content similarity");
                goto done;
        }
        if (replace_kind(pg, "content", nb, nnb, ids, errstr, errstr_size) != 0)
                goto done;
        *rows = nnb;
        rc = 0;
done:
        PQclear(r);
        free(items);
        free(nb);
        free_ids(ids, n);
        return rc;
}

int pl_similarity_compute(const struct pl_similarity_cfg *cfg, struct qz_pg *pg, const char *as_of,
                          struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        size_t cf_rows = 0, cf_tracks = 0, content_rows = 0;
        if (compute_cf(cfg, pg, as_of, &cf_rows, &cf_tracks, errstr, errstr_size) != 0)
                return -1;
        int crc = compute_content(cfg, pg, &content_rows, errstr, errstr_size);
        if (crc < 0)
                return -1;
        res->processed = (long)(cf_rows + content_rows);
        snprintf(res->message, sizeof(res->message),
                 "cf%s%s: %zu neighbours over %zu tracks; content: %s%zu neighbours",
                 as_of ? " as of " : "", as_of ? as_of : "", cf_rows, cf_tracks,
                 crc == 1 ? "no track_features, skipped, " : "", content_rows);
        return 0;
}

int pl_similarity_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                      struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)run_id;
        const char *as_of = params ? json_string_value(json_object_get(params, "as_of")) : NULL;
        return pl_similarity_compute(opaque, pg, as_of && *as_of ? as_of : NULL, res, errstr,
                                     errstr_size);
}
