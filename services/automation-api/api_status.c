/* api_status.c - trigger/status, worker and jobs endpoints over automation_jobs, runs and
 * background_tasks. */
#include "api_status.h"

#include "analysis/analysis.h"
#include "connpool.h"
#include "cron.h"
#include "json.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The background_tasks summary: every status present (zero when none), types seen. */
#define TASKS_SUMMARY_SQL                                                                          \
        "json_build_object('total', (SELECT count(*) FROM background_tasks), 'by_status', "        \
        "(SELECT json_object_agg(s.status, coalesce(c.n, 0) ORDER BY s.ord) FROM (VALUES "         \
        "('pending', 1), ('processing', 2), ('completed', 3), ('failed', 4)) s (status, ord) "     \
        "LEFT JOIN (SELECT status, count(*) AS n FROM background_tasks GROUP BY status) c "        \
        "ON c.status = s.status), 'by_type', (SELECT coalesce(json_object_agg(task_type, n ORDER " \
        "BY task_type), '{}'::json) FROM (SELECT task_type, count(*) AS n FROM background_tasks "  \
        "GROUP BY task_type) t))"

/* One job with its last run (alias j = automation_jobs). */
#define JOB_JSON_SQL                                                                               \
        "json_build_object('jobid', j.jobid, 'name', j.name, 'schedule', j.schedule, 'enabled', "  \
        "j.enabled, 'owner', j.owner, 'next_run_at', " API_TS(                                     \
            "j.next_run_at") ", 'last_run', "                                                      \
                             "(SELECT json_build_object('run_id', r.run_id, 'status', r.status, "  \
                             "'queued_at', " API_TS("r.queued_at") ", 'started_at', " API_TS(      \
                                 "r.started_at") ", 'finished_at', " API_TS("r.finished_at") ", "  \
                                                                                             "'du" \
                                                                                             "rat" \
                                                                                             "ion" \
                                                                                             "_ms" \
                                                                                             "', " \
                                                                                             "(ex" \
                                                                                             "tra" \
                                                                                             "ct(" \
                                                                                             "epo" \
                                                                                             "ch " \
                                                                                             "FRO" \
                                                                                             "M "  \
                                                                                             "r."  \
                                                                                             "fin" \
                                                                                             "ish" \
                                                                                             "ed_" \
                                                                                             "at " \
                                                                                             "- "  \
                                                                                             "r."  \
                                                                                             "sta" \
                                                                                             "rte" \
                                                                                             "d_"  \
                                                                                             "at)" \
                                                                                             " * " \
                                                                                             "100" \
                                                                                             "0):" \
                                                                                             ":bi" \
                                                                                             "gin" \
                                                                                             "t, " \
                                                                                             "'me" \
                                                                                             "ssa" \
                                                                                             "ge'" \
                                                                                             ", "  \
                                                                                             "r."  \
                                                                                             "mes" \
                                                                                             "sag" \
                                                                                             "e) " \
                                                                                             "FRO" \
                                                                                             "M "  \
                                                                                             "aut" \
                                                                                             "oma" \
                                                                                             "tio" \
                                                                                             "n_"  \
                                                                                             "job" \
                                                                                             "_ru" \
                                                                                             "ns " \
                                                                                             "r "  \
                                                                                             "WHE" \
                                                                                             "RE " \
                                                                                             "r."  \
                                                                                             "job" \
                                                                                             " = " \
                                                                                             "j."  \
                                                                                             "nam" \
                                                                                             "e "  \
                                                                                             "ORD" \
                                                                                             "ER " \
                                                                                             "BY " \
                                                                                             "r."  \
                                                                                             "que" \
                                                                                             "ued" \
                                                                                             "_at" \
                                                                                             " DE" \
                                                                                             "SC " \
                                                                                             "LIM" \
                                                                                             "IT " \
                                                                                             "1))"

#define RUN_JSON_SQL                                                                                                                                                                                    \
        "json_build_object('run_id', r.run_id, 'job', r.job, 'status', r.status, 'params', "                                                                                                            \
        "r.params, 'expected', r.expected, 'processed', r.processed, 'queued_at', " API_TS(                                                                                                             \
            "r."                                                                                                                                                                                        \
            "queue"                                                                                                                                                                                     \
            "d_at") ", 'published_at', " API_TS("r.published_at") ", 'started_at', " API_TS("r."                                                                                                        \
                                                                                            "star"                                                                                                      \
                                                                                            "ted_"                                                                                                      \
                                                                                            "at") ", "                                                                                                  \
                                                                                                  "'finished_at', " API_TS(                                                                             \
                                                                                                      "r.finished_at") ", 'duration_ms', "                                                              \
                                                                                                                       "(extract(epoch FROM r.finished_at - r.started_at) * 1000)::bigint, 'message', " \
                                                                                                                       "r.message)"

static struct connpool_slot *slot_or_503(struct api *a, struct qz_http_response *resp,
                                         enum api_shape shape)
{
        struct connpool_slot *s = connpool_acquire(a->pool, a->cfg.pool_wait_ms);
        if (!s) {
                api_error(resp, 503, shape, "unavailable", "server busy");
                qz_http_add_header(resp, "Retry-After", "1");
        }
        return s;
}

/* Runs sql (one row, one JSON text column) and answers it, wrapped as prefix + text + suffix. */
static void answer_sql(struct api *a, struct qz_http_response *resp, enum api_shape shape,
                       const char *what, const char *sql, int n, const char *const *v)
{
        struct connpool_slot *s = slot_or_503(a, resp, shape);
        if (!s)
                return;
        char err[512];
        PGresult *res = qz_pg_query(s->pg, sql, n, v, err, sizeof(err));
        if (!res)
                api_pg_failed(resp, shape, s->pg, what, err);
        else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
                api_error(resp, 404, shape, "not_found", "no such %s", what);
        else
                api_reply_text(resp, 200, PQgetvalue(res, 0, 0));
        PQclear(res);
        connpool_release(a->pool, s);
}

/* ---- trigger ---- */

static const struct {
        const char *task, *sql, *name, *message;
} tasks[] = {
    {"all", "SELECT trigger_all_automations()::text", "all_automations",
     "All automations triggered successfully"},
    {"listening_stats", "SELECT aggregate_all_user_listening_history()::text", "listening_stats",
     "Listening history aggregation triggered successfully"},
    {"smart_playlists", "SELECT generate_all_smart_playlists()::text", "smart_playlists",
     "Smart playlist generation triggered successfully"},
    {"trending", "SELECT calculate_trending_tracks()::text", "trending",
     "Trending calculation triggered successfully"},
};

void api_trigger_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                         void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        char err[512];
        if (!api_auth(a, req, resp, true, API_SUCCESS, &who))
                return;
        json_t *body = api_body(req, resp, API_SUCCESS, false);
        if (!body)
                return;
        const char *task = NULL;
        size_t t = sizeof(tasks) / sizeof(tasks[0]);
        static const char *const known[] = {"task"};
        if (qz_json_check_keys(body, known, 1, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_SUCCESS, "bad_request", "%s", err);
                json_decref(body);
                return;
        }
        if (qz_json_get_string(body, "task", true, &task, err, sizeof(err)) == 0)
                for (size_t i = 0; i < sizeof(tasks) / sizeof(tasks[0]); i++)
                        if (strcmp(tasks[i].task, task) == 0)
                                t = i;
        if (t == sizeof(tasks) / sizeof(tasks[0])) {
                api_error(resp, 400, API_SUCCESS, "bad_request",
                          "task must be one of: all, smart_playlists, trending, listening_stats");
                json_decref(body);
                return;
        }
        json_decref(body);
        struct connpool_slot *s = slot_or_503(a, resp, API_SUCCESS);
        if (!s)
                return;
        PGresult *res = qz_pg_query(s->pg, tasks[t].sql, 0, NULL, err, sizeof(err));
        if (!res) {
                api_pg_failed(resp, API_SUCCESS, s->pg, "trigger", err);
                connpool_release(a->pool, s);
                return;
        }
        char now[40];
        qz_time_format(qz_time_now_ms(), now, sizeof(now));
        /* all: {"job": run_id, ...}; one task: its run_id */
        json_t *entry = json_pack("{s:s, s:s, s:s}", "name", tasks[t].name, "status", "success",
                                  "message", tasks[t].message);
        const char *out = PQgetvalue(res, 0, 0);
        if (t == 0)
                json_object_set_new(entry, "run_ids", json_loads(out, 0, NULL));
        else
                json_object_set_new(entry, "run_id", json_string(out));
        qz_log_kv(QZ_LOG_INFO, "automation triggered", "task", task, "by", who.sub, "runs", out,
                  NULL);
        PQclear(res);
        connpool_release(a->pool, s);
        qz_http_reply_json_new(
            resp, 200,
            json_pack("{s:b, s:s, s:[o]}", "success", 1, "triggered_at", now, "tasks", entry));
}

static const char *status_sql =
    "SELECT json_build_object('success', true, 'automation_status', json_build_object("
    "'cron_jobs', (SELECT coalesce(json_agg(" JOB_JSON_SQL " ORDER BY j.jobid), '[]'::json) "
    "FROM automation_jobs j), "
    "'background_tasks', " TASKS_SUMMARY_SQL ", "
    "'smart_playlists', json_build_object('total', (SELECT count(*) FROM smart_playlists), "
    "'by_type', (SELECT coalesce(json_object_agg(playlist_type, n ORDER BY playlist_type), "
    "'{}'::json) FROM (SELECT playlist_type, count(*) AS n FROM smart_playlists GROUP BY "
    "playlist_type) p), 'latest_generation', (SELECT " API_TS(
        "max(generated_at)") " FROM smart_playlists)), "
                             "'trending_tracks', json_build_object('last_calculated', "
                             "(SELECT " API_TS(
                                 "max(calculated_at)") " FROM trending_tracks))))::text";

void api_trigger_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        if (!api_auth(a, req, resp, true, API_SUCCESS, &who))
                return;
        answer_sql(a, resp, API_SUCCESS, "automation status", status_sql, 0, NULL);
}

/* ---- worker ---- */

static bool worker_auth(struct api *a, const struct qz_http_request *req,
                        struct qz_http_response *resp, enum api_shape shape)
{
        const char *secret = qz_auth_bearer(qz_http_header(req, "Authorization"));
        if (!secret) {
                api_error(resp, 401, shape, "unauthorized",
                          "Authorization: Bearer WORKER_SECRET required");
                qz_http_add_header(resp, "WWW-Authenticate", "Bearer");
                return false;
        }
        if (!qz_auth_secret_equal(secret, a->cfg.worker_secret)) {
                api_error(resp, 401, shape, "unauthorized", "wrong worker secret");
                qz_http_add_header(resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
                return false;
        }
        return true;
}

void api_worker_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                       void *opaque)
{
        struct api *a = opaque;
        if (!worker_auth(a, req, resp, API_PLAIN))
                return;
        answer_sql(a, resp, API_PLAIN, "worker status",
                   "SELECT json_build_object('status', 'healthy', 'summary', " TASKS_SUMMARY_SQL
                   ")::text",
                   0, NULL);
}

/* Runs up to batch pending tasks now through lib/analysis, one attempt each
 * (the same claim/compute/store the analysis-worker uses), and answers the guide's shape. */
static void process_tasks(struct api *a, struct qz_http_response *resp, const char *task_type,
                          int batch)
{
        struct connpool_slot *s = slot_or_503(a, resp, API_SUCCESS);
        if (!s)
                return;
        struct qz_analysis_config acfg = {0};
        json_t *list = json_array();
        char err[512];
        int processed = 0;
        for (; processed < batch; processed++) {
                struct qz_analysis_outcome out = {0};
                int rc =
                    qz_analysis_run_task(s->pg, &acfg, NULL, task_type, &out, err, sizeof(err));
                if (rc < 0) {
                        json_decref(list);
                        api_pg_failed(resp, API_SUCCESS, s->pg, "processing tasks", err);
                        connpool_release(a->pool, s);
                        return;
                }
                if (rc == 0)
                        break;
                json_t *t = json_pack("{s:s, s:s, s:s}", "id", out.task.id, "type",
                                      out.task.task_type, "status", out.status);
                if (out.error[0])
                        json_object_set_new(t, "error", json_string(out.error));
                json_array_append_new(list, t);
                json_decref(out.result);
        }
        connpool_release(a->pool, s);
        qz_http_reply_json_new(
            resp, 200,
            json_pack("{s:b, s:i, s:o}", "success", 1, "processed", processed, "tasks", list));
}

void api_worker_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque)
{
        struct api *a = opaque;
        char err[256];
        if (!worker_auth(a, req, resp, API_SUCCESS))
                return;
        json_t *body = api_body(req, resp, API_SUCCESS, true);
        if (!body)
                return;
        const char *task_type = NULL;
        int64_t batch = 10;
        static const char *const known[] = {"taskType", "batchSize"};
        if (qz_json_check_keys(body, known, 2, err, sizeof(err)) != 0 ||
            qz_json_get_string(body, "taskType", false, &task_type, err, sizeof(err)) < 0 ||
            qz_json_get_int(body, "batchSize", false, &batch, err, sizeof(err)) < 0) {
                api_error(resp, 400, API_SUCCESS, "bad_request", "%s", err);
        } else if (batch < 1 || batch > 100) {
                api_error(resp, 400, API_SUCCESS, "bad_request",
                          "batchSize must be an integer from 1 to 100");
        } else if (task_type && strcmp(task_type, "mood_detection") != 0 &&
                   strcmp(task_type, "energy_analysis") != 0 &&
                   strcmp(task_type, "genre_classification") != 0) {
                api_error(resp, 400, API_SUCCESS, "bad_request",
                          "taskType must be mood_detection, energy_analysis or "
                          "genre_classification");
        } else {
                process_tasks(a, resp, task_type, (int)batch);
        }
        json_decref(body);
}

/* ---- jobs ---- */

void api_jobs_list_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                      void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        if (!api_auth(a, req, resp, true, API_PLAIN, &who))
                return;
        answer_sql(a, resp, API_PLAIN, "jobs",
                   "SELECT json_build_object('jobs', coalesce(json_agg(" JOB_JSON_SQL
                   " ORDER BY j.jobid), '[]'::json))::text FROM automation_jobs j",
                   0, NULL);
}

void api_jobs_get_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        if (!api_auth(a, req, resp, true, API_PLAIN, &who))
                return;
        const char *v[] = {qz_http_param(req, "name")};
        answer_sql(a, resp, API_PLAIN, "job",
                   "SELECT " JOB_JSON_SQL "::text FROM automation_jobs j WHERE j.name = $1", 1, v);
}

void api_jobs_patch_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                       void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        char err[256];
        if (!api_auth(a, req, resp, true, API_PLAIN, &who))
                return;
        json_t *body = api_body(req, resp, API_PLAIN, false);
        if (!body)
                return;
        const char *schedule = NULL;
        bool enabled = true;
        int has_enabled = 0;
        struct cron_expr expr;
        static const char *const known[] = {"schedule", "enabled"};
        if (qz_json_check_keys(body, known, 2, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "%s", err);
                goto done;
        }
        if (qz_json_get_string(body, "schedule", false, &schedule, err, sizeof(err)) < 0 ||
            (has_enabled = qz_json_get_bool(body, "enabled", false, &enabled, err, sizeof(err))) <
                0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "%s", err);
                goto done;
        }
        if (!schedule && has_enabled != 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "give schedule and/or enabled");
                goto done;
        }
        if (schedule && cron_parse(schedule, &expr, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "schedule: %s", err);
                goto done;
        }
        /* next_run_at NULL: the scheduler computes it from the (new) schedule at its next
         * tick, in its time zone; cron.schedule() does the same. */
        const char *v[] = {qz_http_param(req, "name"), schedule,
                           has_enabled == 0 ? (enabled ? "true" : "false") : NULL};
        answer_sql(a, resp, API_PLAIN, "job",
                   "WITH u AS (UPDATE automation_jobs SET schedule = coalesce($2, schedule), "
                   "enabled = coalesce($3::boolean, enabled), next_run_at = NULL, "
                   "updated_at = now() WHERE name = $1 RETURNING *) "
                   "SELECT " JOB_JSON_SQL "::text FROM u j",
                   3, v);
        qz_log_kv(QZ_LOG_INFO, "job changed", "job", v[0], "by", who.sub, "schedule",
                  schedule ? schedule : "(same)", "enabled", v[2] ? v[2] : "(same)", NULL);
done:
        json_decref(body);
}

void api_jobs_runs_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                      void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        long limit;
        if (!api_auth(a, req, resp, true, API_PLAIN, &who) ||
            !api_query_int(req, resp, API_PLAIN, "limit", 20, 1, 100, &limit))
                return;
        char lim[24];
        snprintf(lim, sizeof(lim), "%ld", limit);
        const char *v[] = {qz_http_param(req, "name"), lim};
        answer_sql(a, resp, API_PLAIN, "job",
                   "SELECT CASE WHEN EXISTS (SELECT 1 FROM automation_jobs WHERE name = $1) THEN "
                   "json_build_object('job', $1::text, 'runs', (SELECT coalesce(json_agg(x.j "
                   "ORDER BY x.queued_at DESC), '[]'::json) FROM (SELECT r.queued_at, " RUN_JSON_SQL
                   " AS j FROM automation_job_runs r WHERE r.job = $1 ORDER BY r.queued_at DESC "
                   "LIMIT $2::int) x))::text END",
                   2, v);
}
