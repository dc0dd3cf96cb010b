/* maint.c - the analysis-worker's jobs: reset stuck tasks, delete old finished tasks. */
#include "maint.h"

#include "analysis/analysis.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>

/* A positive integer param, or def when absent or malformed. */
static long param_ms(const json_t *params, const char *key, long def)
{
        const char *s = json_string_value(json_object_get(params, key));
        char *end = NULL;
        long v = s ? strtol(s, &end, 10) : 0;
        return s && end && *end == '\0' && v >= 0 ? v : def;
}

int maint_reset_stuck_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                          struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        const struct maint_config *c = opaque;
        long ms = param_ms(params, "older_than_ms", c->stuck_ms), n = 0;
        (void)run_id;
        if (qz_analysis_reset_stuck(pg, ms, &n, errstr, errstr_size) != 0)
                return -1;
        res->processed = n;
        snprintf(res->message, sizeof(res->message),
                 "%ld stuck tasks (processing > %ld s) reset to pending", n, ms / 1000);
        if (n > 0)
                qz_warn("%s", res->message);
        return 0;
}

int maint_cleanup_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                      struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        const struct maint_config *c = opaque;
        long cm = param_ms(params, "completed_ms", c->completed_ms);
        long fm = param_ms(params, "failed_ms", c->failed_ms), nc = 0, nf = 0;
        (void)run_id;
        if (qz_analysis_cleanup(pg, cm, fm, &nc, &nf, errstr, errstr_size) != 0)
                return -1;
        res->processed = nc + nf;
        snprintf(res->message, sizeof(res->message),
                 "deleted %ld completed tasks (older than %ld h) and %ld failed (older than %ld h)",
                 nc, cm / 3600000, nf, fm / 3600000);
        qz_info("%s", res->message);
        return 0;
}
