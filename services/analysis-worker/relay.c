/* relay.c - the outbox relay: due background_tasks rows to analysis.tasks(.retry).v1, finished
 * rows' outcomes to analysis.results.v1 or the DLQ. */
#include "relay.h"

#include "avro.h"
#include "dlq.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct relay {
        struct relay_config cfg;
        struct qz_pg *pg;
        struct qz_kafka_producer *producer;
        const struct qz_avro_registry *avro;
        const struct qz_avro_schema *task_schema, *features_schema;
        struct qz_metric *m_tasks, *m_retries, *m_results, *m_dlq;
};

struct relay *relay_new(const struct relay_config *cfg, struct qz_pg *pg,
                        struct qz_kafka_producer *producer, const struct qz_avro_registry *avro,
                        struct qz_metrics *metrics, char *errstr, size_t errstr_size)
{
        struct relay *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        r->cfg = *cfg;
        r->pg = pg;
        r->producer = producer;
        r->avro = avro;
        r->task_schema = qz_avro_schema_get(avro, "AnalysisTask");
        r->features_schema = qz_avro_schema_get(avro, "TrackFeatures");
        if (!r->task_schema || !r->features_schema) {
                snprintf(errstr, errstr_size, "schemas AnalysisTask/TrackFeatures not loaded");
                free(r);
                return NULL;
        }
        if (metrics) {
                const char *h = "rows relayed from background_tasks, by kind";
                r->m_tasks =
                    qz_metrics_counter(metrics, "qz_analysis_relayed_total", "kind=\"task\"", h);
                r->m_retries =
                    qz_metrics_counter(metrics, "qz_analysis_relayed_total", "kind=\"retry\"", h);
                r->m_results =
                    qz_metrics_counter(metrics, "qz_analysis_relayed_total", "kind=\"result\"", h);
                r->m_dlq =
                    qz_metrics_counter(metrics, "qz_analysis_relayed_total", "kind=\"dlq\"", h);
        }
        return r;
}

void relay_free(struct relay *r)
{
        free(r);
}

static void count(struct qz_metric *m, double n)
{
        if (m && n > 0)
                qz_metric_add(m, n);
}

/* Produces recs, then marks ids (a '{…}' uuid[] literal) with mark_sql in
 * the open transaction and commits; rolls back on any failure. */
static int send_and_mark(struct relay *r, struct qz_kafka_record *recs, size_t n, const char *ids,
                         const char *mark_sql, char *errstr, size_t errstr_size)
{
        char e2[256];
        if (n > 0) {
                enum qz_kafka_status st = qz_kafka_produce_wait(
                    r->producer, recs, n,
                    r->cfg.produce_timeout_ms > 0 ? r->cfg.produce_timeout_ms : 10000, errstr,
                    errstr_size);
                if (st != QZ_KAFKA_OK)
                        goto rollback;
                if (r->cfg.fault_skip_mark)
                        goto rollback;
                const char *p[1] = {ids};
                PGresult *res = qz_pg_query(r->pg, mark_sql, 1, p, errstr, errstr_size);
                if (!res)
                        goto rollback;
                PQclear(res);
        }
        return qz_pg_commit(r->pg, errstr, errstr_size);
rollback:
        qz_pg_rollback(r->pg, e2, sizeof(e2));
        return r->cfg.fault_skip_mark && n > 0 ? 0 : -1;
}

int relay_tasks_once(struct relay *r, long *sent, char *errstr, size_t errstr_size)
{
        char age[32], lim[32], e2[256];
        PGresult *res = NULL;
        struct qz_kafka_record *recs = NULL;
        unsigned char **vals = NULL;
        char *ids = NULL;
        size_t n = 0;
        int rc = -1;

        *sent = 0;
        snprintf(age, sizeof(age), "%ld", r->cfg.republish_age_ms);
        snprintf(lim, sizeof(lim), "%ld", r->cfg.batch > 0 ? r->cfg.batch : 500);
        const char *p[2] = {age, lim};
        if (qz_pg_begin(r->pg, errstr, errstr_size) != 0)
                return -1;
        res = qz_pg_query(
            r->pg,
            "SELECT id, task_type, entity_type, entity_id, priority, attempts,"
            " (extract(epoch FROM not_before) * 1000)::bigint FROM background_tasks"
            " WHERE status = 'pending' AND not_before <= now() AND attempts < max_attempts"
            " AND (published_at IS NULL"
            "  OR published_at < now() - $1::bigint * interval '1 millisecond')"
            " ORDER BY priority DESC, created_at LIMIT $2::int FOR UPDATE SKIP LOCKED",
            2, p, errstr, errstr_size);
        if (!res)
                goto fail;
        n = (size_t)PQntuples(res);
        recs = calloc(n + 1, sizeof(*recs));
        vals = calloc(n + 1, sizeof(*vals));
        ids = malloc(n * 38 + 3);
        if (!recs || !vals || !ids) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        size_t len = 0, retries = 0;
        ids[len++] = '{';
        for (size_t i = 0; i < n; i++) {
                int attempts = atoi(PQgetvalue(res, (int)i, 5));
                json_t *v = json_pack(
                    "{s:s, s:s, s:s, s:s, s:i, s:i, s:I}", "task_id", PQgetvalue(res, (int)i, 0),
                    "task_type", PQgetvalue(res, (int)i, 1), "entity_type",
                    PQgetvalue(res, (int)i, 2), "entity_id", PQgetvalue(res, (int)i, 3), "priority",
                    atoi(PQgetvalue(res, (int)i, 4)), "attempt", attempts + 1, "not_before",
                    (json_int_t)atoll(PQgetvalue(res, (int)i, 6)));
                size_t vlen = 0;
                int erc =
                    v ? qz_avro_encode_json(r->task_schema, v, &vals[i], &vlen, errstr, errstr_size)
                      : -1;
                json_decref(v);
                if (erc != 0)
                        goto fail;
                const char *eid = PQgetvalue(res, (int)i, 3);
                recs[i] = (struct qz_kafka_record){.topic = attempts > 0 ? r->cfg.retry_topic
                                                                         : r->cfg.tasks_topic,
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = eid,
                                                   .key_len = strlen(eid),
                                                   .value = vals[i],
                                                   .value_len = vlen};
                retries += attempts > 0;
                len += (size_t)sprintf(ids + len, "%s%s", i ? "," : "", PQgetvalue(res, (int)i, 0));
        }
        ids[len++] = '}';
        ids[len] = '\0';
        if (send_and_mark(r, recs, n, ids,
                          "UPDATE background_tasks SET published_at = now()"
                          " WHERE id = ANY($1::uuid[])",
                          errstr, errstr_size) != 0)
                goto out; /* rolled back already */
        *sent = (long)n;
        count(r->m_tasks, (double)(n - retries));
        count(r->m_retries, (double)retries);
        rc = 0;
        goto out;
fail:
        qz_pg_rollback(r->pg, e2, sizeof(e2));
out:
        for (size_t i = 0; vals && i < n; i++)
                free(vals[i]);
        free(vals);
        free(recs);
        free(ids);
        PQclear(res);
        return rc;
}

/* The error history: error_message's lines ("attempt N: …"), oldest first. */
static size_t split_lines(char *s, const char **out, size_t max)
{
        size_t n = 0;
        for (char *save = NULL, *t = strtok_r(s, "\n", &save); t && n < max;
             t = strtok_r(NULL, "\n", &save))
                out[n++] = t;
        return n;
}

static json_t *num_or_null(const json_t *o, const char *k)
{
        json_t *v = json_object_get(o, k);
        return json_is_number(v) ? json_real(json_number_value(v)) : json_null();
}

static json_t *str_or_null(const json_t *o, const char *k)
{
        json_t *v = json_object_get(o, k);
        return json_is_string(v) ? json_string(json_string_value(v)) : json_null();
}

static int encode_features(struct relay *r, const char *track_id, const char *type,
                           const char *result, int64_t at_ms, unsigned char **out, size_t *out_len,
                           char *errstr, size_t errstr_size)
{
        json_t *res = json_loads(result, 0, NULL);
        json_t *tags = json_array(), *jt = json_object_get(res, "mood_tags");
        size_t i;
        json_t *t;
        json_array_foreach(jt, i, t) if (json_is_string(t)) json_array_append(tags, t);
        json_t *v = json_pack(
            "{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
            "track_id", track_id, "task_type", type, "tempo", num_or_null(res, "tempo"),
            "loudness_lufs", num_or_null(res, "loudness_lufs"), "loudness_range",
            num_or_null(res, "loudness_range"), "energy", num_or_null(res, "energy"), "valence",
            num_or_null(res, "valence"), "danceability", num_or_null(res, "danceability"),
            "acousticness", num_or_null(res, "acousticness"), "instrumentalness",
            num_or_null(res, "instrumentalness"), "mood", str_or_null(res, "mood"), "mood_tags",
            tags, "genre", str_or_null(res, "genre"), "genre_confidence",
            num_or_null(res, "genre_confidence"), "analyzed_at", (json_int_t)at_ms);
        json_decref(res);
        if (!v) {
                snprintf(errstr, errstr_size, "cannot build TrackFeatures for %s", track_id);
                return -1;
        }
        int rc = qz_avro_encode_json(r->features_schema, v, out, out_len, errstr, errstr_size);
        json_decref(v);
        return rc;
}

int relay_outcomes_once(struct relay *r, long *sent, char *errstr, size_t errstr_size)
{
        char lim[32], e2[256];
        PGresult *res = NULL;
        struct qz_kafka_record *recs = NULL;
        unsigned char **vals = NULL;
        char *ids = NULL;
        size_t n = 0, nd = 0;
        int rc = -1;

        *sent = 0;
        snprintf(lim, sizeof(lim), "%ld", r->cfg.batch > 0 ? r->cfg.batch : 500);
        const char *p[1] = {lim};
        if (qz_pg_begin(r->pg, errstr, errstr_size) != 0)
                return -1;
        res = qz_pg_query(
            r->pg,
            "SELECT id, status, task_type, entity_type, entity_id, priority, attempts,"
            " coalesce(result::text, '{}'), coalesce(error_message, ''),"
            " (extract(epoch FROM coalesce(completed_at, now())) * 1000)::bigint, max_attempts"
            " FROM background_tasks WHERE status IN ('completed', 'failed')"
            " AND outcome_published_at IS NULL ORDER BY completed_at LIMIT $1::int"
            " FOR UPDATE SKIP LOCKED",
            1, p, errstr, errstr_size);
        if (!res)
                goto fail;
        n = (size_t)PQntuples(res);
        recs = calloc(n + 1, sizeof(*recs));
        vals = calloc(n + 1, sizeof(*vals));
        ids = malloc(n * 38 + 3);
        if (!recs || !vals || !ids) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        size_t len = 0;
        ids[len++] = '{';
        for (size_t i = 0; i < n; i++) {
                int row = (int)i;
                const char *id = PQgetvalue(res, row, 0), *eid = PQgetvalue(res, row, 4);
                size_t vlen = 0;
                int64_t at = atoll(PQgetvalue(res, row, 9));
                bool failed = strcmp(PQgetvalue(res, row, 1), "failed") == 0;
                if (!failed) {
                        if (encode_features(r, eid, PQgetvalue(res, row, 2),
                                            PQgetvalue(res, row, 7), at, &vals[i], &vlen, errstr,
                                            errstr_size) != 0)
                                goto fail;
                        recs[i].topic = r->cfg.results_topic;
                } else {
                        /* The original value: the task as it was last sent. */
                        unsigned char *task = NULL;
                        size_t tlen = 0;
                        json_t *tv = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:n}", "task_id", id,
                                               "task_type", PQgetvalue(res, row, 2), "entity_type",
                                               PQgetvalue(res, row, 3), "entity_id", eid,
                                               "priority", atoi(PQgetvalue(res, row, 5)), "attempt",
                                               atoi(PQgetvalue(res, row, 6)), "not_before");
                        int erc = tv ? qz_avro_encode_json(r->task_schema, tv, &task, &tlen, errstr,
                                                           errstr_size)
                                     : -1;
                        json_decref(tv);
                        if (erc != 0)
                                goto fail;
                        char *hist = strdup(PQgetvalue(res, row, 8));
                        const char *lines[64];
                        size_t nl = hist ? split_lines(hist, lines, 64) : 0;
                        int att = atoi(PQgetvalue(res, row, 6));
                        struct qz_dlq_event ev = {
                            .original_topic = att > 1 ? r->cfg.retry_topic : r->cfg.tasks_topic,
                            .original_partition = -1,
                            .original_offset = -1,
                            .original_key = eid,
                            .original_key_len = strlen(eid),
                            .original_value = task,
                            .original_value_len = tlen,
                            .reason = att >= atoi(PQgetvalue(res, row, 10)) ? "max_attempts"
                                      : strstr(PQgetvalue(res, row, 8), "no audio")
                                          ? "no_audio"
                                          : "permanent_error",
                            .errors = nl ? lines : NULL,
                            .nerrors = nl,
                            .service = r->cfg.service,
                            .rejected_at_ms = at};
                        erc = qz_dlq_encode(r->avro, &ev, &vals[i], &vlen, errstr, errstr_size);
                        free(hist);
                        free(task);
                        if (erc != 0)
                                goto fail;
                        recs[i].topic = r->cfg.dlq_topic;
                        nd++;
                }
                recs[i].partition = QZ_KAFKA_PARTITION_ANY;
                recs[i].key = eid;
                recs[i].key_len = strlen(eid);
                recs[i].value = vals[i];
                recs[i].value_len = vlen;
                len += (size_t)sprintf(ids + len, "%s%s", i ? "," : "", id);
        }
        ids[len++] = '}';
        ids[len] = '\0';
        if (send_and_mark(r, recs, n, ids,
                          "UPDATE background_tasks SET outcome_published_at = now()"
                          " WHERE id = ANY($1::uuid[])",
                          errstr, errstr_size) != 0)
                goto out;
        *sent = (long)n;
        count(r->m_results, (double)(n - nd));
        count(r->m_dlq, (double)nd);
        rc = 0;
        goto out;
fail:
        qz_pg_rollback(r->pg, e2, sizeof(e2));
out:
        for (size_t i = 0; vals && i < n; i++)
                free(vals[i]);
        free(vals);
        free(recs);
        free(ids);
        PQclear(res);
        return rc;
}

int relay_fail_exhausted(struct relay *r, long *count_out, char *errstr, size_t errstr_size)
{
        PGresult *res = qz_pg_query(
            r->pg,
            "UPDATE background_tasks SET status = 'failed', completed_at = now(),"
            " error_message = concat_ws(E'\\n', error_message,"
            "  'attempt ' || attempts || ': reset after its last attempt (worker lost)')"
            " WHERE status = 'pending' AND attempts >= max_attempts",
            0, NULL, errstr, errstr_size);
        if (!res)
                return -1;
        *count_out = atol(PQcmdTuples(res));
        PQclear(res);
        return 0;
}

long relay_next_due_ms(struct relay *r, long cap_ms)
{
        char e[256], cap[32];
        snprintf(cap, sizeof(cap), "%ld", cap_ms);
        const char *p[1] = {cap};
        PGresult *res = qz_pg_query(
            r->pg,
            "SELECT least($1::bigint, greatest(0, (extract(epoch FROM min(not_before) - now())"
            " * 1000)::bigint)) FROM background_tasks"
            " WHERE status = 'pending' AND published_at IS NULL",
            1, p, e, sizeof(e));
        if (!res)
                return 0;
        long ms = PQgetisnull(res, 0, 0) ? cap_ms : atol(PQgetvalue(res, 0, 0));
        PQclear(res);
        return ms;
}
