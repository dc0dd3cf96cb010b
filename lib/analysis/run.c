/* run.c - one task attempt end to end: claim, analyse the track's audio (or reuse a sibling
 * task's features of the same audio), build the task type's result, store or record the failure. */
#include "analysis/analysis.h"

#include "clock.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The task type's result, picked from the features JSON (DESIGN.md lists
 * which columns each type fills). */
static json_t *result_for(const char *type, const json_t *f)
{
        json_t *r = json_object();
        static const char *const energy[] = {"tempo_bpm",      "beat_confidence", "loudness_lufs",
                                             "loudness_range", "energy",          "danceability",
                                             "onset_rate",     "rms_db",          NULL};
        static const char *const mood[] = {
            "mood", "mood_tags", "mood_confidence", "valence", "acousticness", "instrumentalness",
            "key",  "mode",      "mode_confidence", NULL};
        const char *const *keys = strcmp(type, "energy_analysis") == 0  ? energy
                                  : strcmp(type, "mood_detection") == 0 ? mood
                                                                        : NULL;
        for (size_t i = 0; keys && keys[i]; i++) {
                json_t *v = json_object_get(f, keys[i]);
                if (v)
                        json_object_set(r, strcmp(keys[i], "tempo_bpm") == 0 ? "tempo" : keys[i],
                                        v);
        }
        json_t *tempo = json_object_get(r, "tempo");
        if (tempo && json_number_value(tempo) <= 0)
                json_object_set_new(r, "tempo", json_null()); /* no beat found */
        if (keys == mood)
                json_object_set_new(r, "method",
                                    json_string("heuristic (valence/arousal quadrant)"));
        return r;
}

/* Genre: weighted kNN against the stored features of other tracks whose
 * catalog genre is known (their first genre is the label). */
static int genre_result(struct qz_pg *pg, const struct qz_analysis_task *t,
                        const struct qz_analysis_config *cfg, const json_t *features, json_t *res,
                        char *errstr, size_t errstr_size)
{
        char lim[16];
        double v[QZ_ANALYSIS_GENRE_DIMS];
        snprintf(lim, sizeof(lim), "%d", cfg->genre_max_refs > 0 ? cfg->genre_max_refs : 2000);
        const char *p[2] = {t->entity_id, lim};
        if (qz_analysis_genre_vector(features, v) != 0) {
                snprintf(errstr, errstr_size, "features incomplete for genre");
                return -1;
        }
        PGresult *r = qz_pg_query(pg,
                                  "SELECT f.features::text, t.genres[1] FROM track_features f"
                                  " JOIN tracks t ON t.id = f.track_id"
                                  " WHERE f.track_id <> $1 AND cardinality(t.genres) > 0"
                                  " AND f.features ? 'centroid_hz'"
                                  " ORDER BY f.analyzed_at DESC LIMIT $2::int",
                                  2, p, errstr, errstr_size);
        if (!r)
                return -1;
        size_t n = 0, rows = (size_t)PQntuples(r);
        struct qz_analysis_labelled *refs = calloc(rows + 1, sizeof(*refs));
        if (!refs) {
                PQclear(r);
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        for (size_t i = 0; i < rows; i++) {
                json_t *j = json_loads(PQgetvalue(r, (int)i, 0), 0, NULL);
                if (j && qz_analysis_genre_vector(j, refs[n].v) == 0) {
                        refs[n].genre = PQgetvalue(r, (int)i, 1);
                        n++;
                }
                json_decref(j);
        }
        const char *genre = NULL;
        double conf = 0;
        int k = cfg->genre_k > 0 ? cfg->genre_k : 7;
        if (qz_analysis_genre_knn(v, refs, n, k, &genre, &conf) == 0) {
                json_object_set_new(res, "genre", json_string(genre));
                json_object_set_new(res, "genre_confidence", json_real(conf));
        } else {
                json_object_set_new(res, "genre", json_null());
                json_object_set_new(res, "genre_confidence", json_real(0));
                json_object_set_new(res, "reason",
                                    json_string("no analysed track with a known genre yet"));
        }
        json_object_set_new(res, "method",
                            json_sprintf("weighted %d-NN over %zu labelled tracks", k, n));
        json_object_set_new(res, "references", json_integer((json_int_t)n));
        free(refs);
        PQclear(r);
        return 0;
}

int qz_analysis_compute(struct qz_pg *pg, const struct qz_analysis_task *t,
                        const struct qz_analysis_config *cfg, json_t **result, json_t **features,
                        enum qz_analysis_err *klass, char *errstr, size_t errstr_size)
{
        PGresult *r = NULL;
        json_t *f = NULL, *res = NULL;
        *result = *features = NULL;
        *klass = QZ_ANALYSIS_PERMANENT;
        if (strcmp(t->entity_type, "track") != 0) {
                snprintf(errstr, errstr_size, "unsupported entity_type %s", t->entity_type);
                return -1;
        }
        if (strcmp(t->task_type, "energy_analysis") != 0 &&
            strcmp(t->task_type, "mood_detection") != 0 &&
            strcmp(t->task_type, "genre_classification") != 0) {
                snprintf(errstr, errstr_size, "unknown task_type %s", t->task_type);
                return -1;
        }
        const char *p[1] = {t->entity_id};
        r = qz_pg_query(pg,
                        "SELECT t.audio_url, f.features::text FROM tracks t"
                        " LEFT JOIN track_features f ON f.track_id = t.id"
                        " WHERE t.id = $1 AND t.deleted_at IS NULL",
                        1, p, errstr, errstr_size);
        if (!r) {
                *klass = QZ_ANALYSIS_TRANSIENT;
                return -1;
        }
        if (PQntuples(r) != 1) {
                snprintf(errstr, errstr_size, "track %s not found (or deleted)", t->entity_id);
                goto fail;
        }
        const char *url = PQgetisnull(r, 0, 0) ? NULL : PQgetvalue(r, 0, 0);
        if (!url || !*url) {
                snprintf(errstr, errstr_size, "no audio: track %s has no audio_url", t->entity_id);
                goto fail;
        }
        /* A sibling task of the same track already analysed this very audio:
         * reuse its features instead of decoding again. */
        if (!PQgetisnull(r, 0, 1)) {
                json_t *old = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
                json_t *src = json_object_get(old, "source");
                if (json_is_string(src) && strcmp(json_string_value(src), url) == 0 &&
                    json_object_get(old, "centroid_hz") && json_object_get(old, "mood_tags"))
                        f = old;
                else
                        json_decref(old);
        }
        if (!f) {
                struct qz_analysis_features feat;
                if (qz_analysis_file(url, cfg, &feat, klass, errstr, errstr_size) != 0)
                        goto fail;
                f = qz_analysis_features_json(&feat);
                json_object_set_new(f, "source", json_string(url));
        }
        res = result_for(t->task_type, f);
        if (strcmp(t->task_type, "genre_classification") == 0 &&
            genre_result(pg, t, cfg, f, res, errstr, errstr_size) != 0) {
                *klass = QZ_ANALYSIS_TRANSIENT;
                goto fail;
        }
        PQclear(r);
        *result = res;
        *features = f;
        return 0;
fail:
        PQclear(r);
        json_decref(f);
        json_decref(res);
        return -1;
}

int qz_analysis_run_task(struct qz_pg *pg, const struct qz_analysis_config *cfg,
                         const char *task_id, const char *task_type,
                         struct qz_analysis_outcome *out, char *errstr, size_t errstr_size)
{
        json_t *res = NULL, *feat = NULL;
        enum qz_analysis_err klass = QZ_ANALYSIS_TRANSIENT;
        memset(out, 0, sizeof(*out));
        int got = qz_analysis_claim(pg, task_id, task_type, cfg->claim_published_only, &out->task,
                                    errstr, errstr_size);
        if (got <= 0)
                return got;
        double t0 = qz_clock_mono_s();
        int rc;
        if (qz_analysis_compute(pg, &out->task, cfg, &res, &feat, &klass, out->error,
                                sizeof(out->error)) == 0) {
                rc = qz_analysis_store(pg, &out->task, res, feat, errstr, errstr_size);
                if (rc == 0) {
                        out->status = "completed";
                        out->result = res;
                        res = NULL;
                } else if (rc == 1) {
                        out->status = "lost";
                        snprintf(out->error, sizeof(out->error),
                                 "claim lost (task reset or reclaimed meanwhile)");
                } else {
                        goto fail;
                }
        } else {
                bool failed = false;
                rc = qz_analysis_fail(pg, &out->task, cfg, klass, out->error, &failed, errstr,
                                      errstr_size);
                if (rc < 0)
                        goto fail;
                out->status = rc == 1 ? "lost" : failed ? "failed" : "pending";
        }
        out->seconds = qz_clock_mono_s() - t0;
        json_decref(res);
        json_decref(feat);
        return 1;
fail:
        json_decref(res);
        json_decref(feat);
        return -1;
}
