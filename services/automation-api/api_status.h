/* api_status.h - the operator endpoints: trigger and status, worker, jobs and their runs.
 *
 * POST /api/automation/trigger (admin) maps a task to jobs (DESIGN.md "Jobs":
 * listening_stats, smart_playlists, trending, all) and queues them through
 * the guide's SQL functions, so the API and psql queue the same runs; the
 * run relay publishes them within a second. GET answers automation_status.
 * /api/automation/worker (WORKER_SECRET): GET the background_tasks summary;
 * POST processes tasks through lib/analysis (503 until that library exists).
 * /api/automation/jobs[/{name}[/runs]] (admin): list, change a schedule or
 * enable/disable a job, list its runs. */
#ifndef API_STATUS_H
#define API_STATUS_H

#include "api.h"

void api_trigger_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                         void *opaque);
void api_trigger_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque);
void api_worker_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque);
void api_worker_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                       void *opaque);
void api_jobs_list_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                      void *opaque);
void api_jobs_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                     void *opaque);
void api_jobs_patch_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                       void *opaque);
void api_jobs_runs_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                      void *opaque);

#endif
