/* tasks.c - background_tasks state changes: claim, store a result, record a failure with
 * backoff, reset stuck tasks, clean up finished ones. */
#include "analysis/analysis.h"

#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The claim: the most urgent due pending task, skipping rows another worker
 * holds. attempts < max_attempts keeps a task the guide's reset put back
 * after its last attempt out (the relay fails it). */
#define CLAIM_SQL(lock)                                                                            \
        "WITH c AS (SELECT id FROM background_tasks"                                               \
        " WHERE status = 'pending' AND not_before <= now() AND attempts < max_attempts"            \
        " AND ($1::uuid IS NULL OR id = $1::uuid) AND ($2::text IS NULL OR task_type = $2)"        \
        " AND (NOT $3::boolean OR published_at IS NOT NULL)"                                       \
        " ORDER BY priority DESC, created_at LIMIT 1 " lock ")"                                    \
        " UPDATE background_tasks b SET status = 'processing', started_at = now(),"                \
        " attempts = b.attempts + 1"                                                               \
        " FROM c WHERE b.id = c.id"                                                                \
        " RETURNING b.id, b.task_type, b.entity_type, b.entity_id, b.priority, b.attempts,"        \
        " b.max_attempts"
static const char claim_any_sql[] = CLAIM_SQL("FOR UPDATE SKIP LOCKED");
/* A named task waits for its row lock instead of skipping it: the relay holds
 * the lock from its select until the published mark commits, and the token
 * it just sent may arrive before that. The WHERE is rechecked on the row
 * version we finally lock, so a task claimed meanwhile is not claimed again. */
static const char claim_id_sql[] = CLAIM_SQL("FOR UPDATE");

int qz_analysis_claim(struct qz_pg *pg, const char *task_id, const char *task_type,
                      bool published_only, struct qz_analysis_task *t, char *errstr,
                      size_t errstr_size)
{
        const char *params[3] = {task_id, task_type, published_only && !task_id ? "t" : "f"};
        PGresult *r =
            qz_pg_query(pg, task_id ? claim_id_sql : claim_any_sql, 3, params, errstr, errstr_size);
        if (!r)
                return -1;
        int got = PQntuples(r) == 1;
        if (got) {
                snprintf(t->id, sizeof(t->id), "%s", PQgetvalue(r, 0, 0));
                snprintf(t->task_type, sizeof(t->task_type), "%s", PQgetvalue(r, 0, 1));
                snprintf(t->entity_type, sizeof(t->entity_type), "%s", PQgetvalue(r, 0, 2));
                snprintf(t->entity_id, sizeof(t->entity_id), "%s", PQgetvalue(r, 0, 3));
                t->priority = atoi(PQgetvalue(r, 0, 4));
                t->attempts = atoi(PQgetvalue(r, 0, 5));
                t->max_attempts = atoi(PQgetvalue(r, 0, 6));
        }
        PQclear(r);
        return got;
}

static const char *num(const json_t *o, const char *k, char *buf, size_t size)
{
        json_t *v = json_object_get(o, k);
        if (!json_is_number(v))
                return NULL;
        snprintf(buf, size, "%.6g", json_number_value(v));
        return buf;
}

/* The task type's own track_features columns (DESIGN.md): an upsert that
 * touches only them, so the three tasks of a track complete in any order. */
static int store_features(struct qz_pg *pg, const struct qz_analysis_task *t, const json_t *res,
                          const json_t *features, char *errstr, size_t errstr_size)
{
        char b[8][32], *fj = json_dumps(features ? features : json_object(), JSON_COMPACT);
        PGresult *r = NULL;
        int rc = -1;
        if (!fj) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        if (strcmp(t->task_type, "energy_analysis") == 0) {
                const char *v[7] = {t->entity_id,
                                    num(res, "tempo", b[0], 32),
                                    num(res, "loudness_lufs", b[1], 32),
                                    num(res, "loudness_range", b[2], 32),
                                    num(res, "energy", b[3], 32),
                                    num(res, "danceability", b[4], 32),
                                    fj};
                r = qz_pg_query(
                    pg,
                    "INSERT INTO track_features AS f (track_id, tempo, loudness_lufs,"
                    " loudness_range, energy, danceability, features)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (track_id) DO UPDATE"
                    " SET tempo = $2, loudness_lufs = $3, loudness_range = $4, energy = $5,"
                    " danceability = $6, features = f.features || $7::jsonb, analyzed_at = now()",
                    7, v, errstr, errstr_size);
                if (r) {
                        PQclear(r);
                        const char *u[2] = {t->entity_id, v[4]};
                        r = qz_pg_query(pg, "UPDATE tracks SET energy_level = $2 WHERE id = $1", 2,
                                        u, errstr, errstr_size);
                }
        } else if (strcmp(t->task_type, "mood_detection") == 0) {
                json_t *tags = json_object_get(res, "mood_tags");
                char *tj = json_dumps(tags ? tags : json_array(), JSON_COMPACT);
                const json_t *mood = json_object_get(res, "mood");
                const char *v[8] = {t->entity_id,
                                    num(res, "valence", b[0], 32),
                                    num(res, "acousticness", b[1], 32),
                                    num(res, "instrumentalness", b[2], 32),
                                    json_is_string(mood) ? json_string_value(mood) : NULL,
                                    tj,
                                    fj,
                                    NULL};
                r = qz_pg_query(
                    pg,
                    "INSERT INTO track_features AS f (track_id, valence, acousticness,"
                    " instrumentalness, mood, mood_tags, features)"
                    " VALUES ($1, $2, $3, $4, $5,"
                    " ARRAY(SELECT jsonb_array_elements_text($6::jsonb)), $7::jsonb)"
                    " ON CONFLICT (track_id) DO UPDATE SET valence = $2, acousticness = $3,"
                    " instrumentalness = $4, mood = $5,"
                    " mood_tags = ARRAY(SELECT jsonb_array_elements_text($6::jsonb)),"
                    " features = f.features || $7::jsonb, analyzed_at = now()",
                    7, v, errstr, errstr_size);
                free(tj);
                if (r) {
                        PQclear(r);
                        const char *u[2] = {t->entity_id, v[4]};
                        r = qz_pg_query(pg, "UPDATE tracks SET mood = $2 WHERE id = $1", 2, u,
                                        errstr, errstr_size);
                }
        } else if (strcmp(t->task_type, "genre_classification") == 0) {
                const json_t *g = json_object_get(res, "genre");
                const char *v[4] = {t->entity_id, json_is_string(g) ? json_string_value(g) : NULL,
                                    num(res, "genre_confidence", b[0], 32), fj};
                r = qz_pg_query(
                    pg,
                    "INSERT INTO track_features AS f (track_id, genre, genre_confidence,"
                    " features) VALUES ($1, $2, $3, $4::jsonb)"
                    " ON CONFLICT (track_id) DO UPDATE SET genre = $2,"
                    " genre_confidence = $3, features = f.features || $4::jsonb,"
                    " analyzed_at = now()",
                    4, v, errstr, errstr_size);
        } else {
                snprintf(errstr, errstr_size, "unknown task_type %s", t->task_type);
                goto done;
        }
        if (r)
                rc = 0;
done:
        PQclear(r);
        free(fj);
        return rc;
}

int qz_analysis_store(struct qz_pg *pg, const struct qz_analysis_task *t, const json_t *result,
                      const json_t *features, char *errstr, size_t errstr_size)
{
        char att[16], *rj = json_dumps(result, JSON_COMPACT);
        long n = 0;
        if (!rj) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        snprintf(att, sizeof(att), "%d", t->attempts);
        const char *v[3] = {t->id, att, rj};
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                goto fail;
        /* The fence: only our own claim (same attempt, still processing) may
         * complete. A task reset or reclaimed meanwhile is left alone, and a
         * completed one never matches again. */
        PGresult *r = qz_pg_query(pg,
                                  "UPDATE background_tasks SET status = 'completed',"
                                  " result = $3::jsonb, completed_at = now()"
                                  " WHERE id = $1 AND status = 'processing' AND attempts = $2",
                                  3, v, errstr, errstr_size);
        if (!r)
                goto rollback;
        n = atol(PQcmdTuples(r));
        PQclear(r);
        if (n == 0) {
                qz_pg_rollback(pg, errstr, errstr_size);
                free(rj);
                return 1;
        }
        if (store_features(pg, t, result, features, errstr, errstr_size) != 0)
                goto rollback;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                goto fail;
        free(rj);
        return 0;
rollback : {
        char e2[256];
        qz_pg_rollback(pg, e2, sizeof(e2));
}
fail:
        free(rj);
        return -1;
}

long qz_analysis_backoff_ms(const struct qz_analysis_config *cfg, int attempt)
{
        long base = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : 10000;
        long cap = cfg->retry_max_ms > 0 ? cfg->retry_max_ms : 600000;
        long d = base;
        for (int i = 1; i < attempt && d < cap; i++)
                d *= 2;
        return d < cap ? d : cap;
}

int qz_analysis_fail(struct qz_pg *pg, const struct qz_analysis_task *t,
                     const struct qz_analysis_config *cfg, enum qz_analysis_err klass,
                     const char *error, bool *failed, char *errstr, size_t errstr_size)
{
        char att[16], backoff[32], line[600];
        snprintf(att, sizeof(att), "%d", t->attempts);
        snprintf(backoff, sizeof(backoff), "%ld", qz_analysis_backoff_ms(cfg, t->attempts));
        snprintf(line, sizeof(line), "attempt %d: %s", t->attempts, error);
        const char *v[5] = {t->id, att, line, klass == QZ_ANALYSIS_PERMANENT ? "t" : "f", backoff};
        /* published_at = NULL hands the retry to the relay, which publishes it
         * on the retry topic once not_before has passed: the delay costs no
         * consumer anything. */
        PGresult *r = qz_pg_query(
            pg,
            "UPDATE background_tasks SET"
            " status = CASE WHEN $4::boolean OR attempts >= max_attempts"
            "  THEN 'failed' ELSE 'pending' END,"
            " completed_at = CASE WHEN $4::boolean OR attempts >= max_attempts"
            "  THEN now() END,"
            " error_message = concat_ws(E'\\n', error_message, $3::text),"
            " not_before = now() + $5::bigint * interval '1 millisecond',"
            " published_at = NULL"
            " WHERE id = $1 AND status = 'processing' AND attempts = $2 RETURNING status",
            5, v, errstr, errstr_size);
        if (!r)
                return -1;
        int rc = PQntuples(r) == 1 ? 0 : 1;
        if (failed)
                *failed = rc == 0 && strcmp(PQgetvalue(r, 0, 0), "failed") == 0;
        PQclear(r);
        return rc;
}

int qz_analysis_reset_stuck(struct qz_pg *pg, long older_than_ms, long *count, char *errstr,
                            size_t errstr_size)
{
        char ms[32];
        snprintf(ms, sizeof(ms), "%ld", older_than_ms);
        const char *v[1] = {ms};
        /* The guide's UPDATE plus published_at = NULL, so the relay republishes
         * at once instead of after the republish age. */
        PGresult *r =
            qz_pg_query(pg,
                        "UPDATE background_tasks SET status = 'pending', started_at = NULL,"
                        " published_at = NULL WHERE status = 'processing'"
                        " AND started_at < now() - $1::bigint * interval '1 millisecond'",
                        1, v, errstr, errstr_size);
        if (!r)
                return -1;
        *count = atol(PQcmdTuples(r));
        PQclear(r);
        return 0;
}

int qz_analysis_cleanup(struct qz_pg *pg, long completed_ms, long failed_ms, long *completed,
                        long *failed, char *errstr, size_t errstr_size)
{
        char a[32], b[32];
        snprintf(a, sizeof(a), "%ld", completed_ms);
        snprintf(b, sizeof(b), "%ld", failed_ms);
        const char *v[1] = {a};
        PGresult *r =
            qz_pg_query(pg,
                        "DELETE FROM background_tasks WHERE status = 'completed'"
                        " AND completed_at < now() - $1::bigint * interval '1 millisecond'",
                        1, v, errstr, errstr_size);
        if (!r)
                return -1;
        *completed = atol(PQcmdTuples(r));
        PQclear(r);
        v[0] = b;
        r = qz_pg_query(pg,
                        "DELETE FROM background_tasks WHERE status = 'failed'"
                        " AND coalesce(completed_at, created_at)"
                        " < now() - $1::bigint * interval '1 millisecond'",
                        1, v, errstr, errstr_size);
        if (!r)
                return -1;
        *failed = atol(PQcmdTuples(r));
        PQclear(r);
        return 0;
}
