/* maint.h - the analysis-worker's jobs: reset-stuck-tasks and cleanup-background-tasks.
 *
 * Both are qz_job_fn (common/jobs.h) and idempotent. Params (strings) may
 * override the configured thresholds: reset-stuck-tasks "older_than_ms";
 * cleanup-background-tasks "completed_ms", "failed_ms". Counts go into the
 * run record (processed) and its message.
 *
 * Ownership: opaque is a struct maint_config that outlives the job runner. */
#ifndef MAINT_H
#define MAINT_H

#include "jobs.h"

struct maint_config {
        long stuck_ms;     /* processing longer than this is stuck (default 30 min) */
        long completed_ms; /* completed tasks kept this long (default 7 days) */
        long failed_ms;    /* failed tasks kept this long (default 30 days) */
};

int maint_reset_stuck_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                          struct qz_job_result *res, char *errstr, size_t errstr_size);
int maint_cleanup_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                      struct qz_job_result *res, char *errstr, size_t errstr_size);

#endif
