/* reconcile.c - the aggregate-listening-history job: rebuild every user's stats from play_history.
 */
#include "reconcile.h"

#include "clock.h"
#include "jobs.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>

int reconcile_run(struct qz_pg *pg, struct reconcile_result *out, char *errstr, size_t errstr_size)
{
        PGresult *res = NULL;
        int64_t t0 = qz_clock_mono_ns();
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        /* One transaction: the users counted are the rows the reconcile wrote. */
        res = qz_pg_query(pg, "SELECT listening_stats_reconcile()", 0, NULL, errstr, errstr_size);
        if (!res)
                goto fail;
        out->differed = atol(PQgetvalue(res, 0, 0));
        PQclear(res);
        res = qz_pg_query(pg, "SELECT count(*) FROM user_listening_stats", 0, NULL, errstr,
                          errstr_size);
        if (!res)
                goto fail;
        out->users = atol(PQgetvalue(res, 0, 0));
        PQclear(res);
        res = NULL;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                return -1;
        out->seconds = (double)(qz_clock_mono_ns() - t0) / 1e9;
        return 0;
fail:
        qz_pg_rollback(pg, NULL, 0);
        return -1;
}

int reconcile_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                  struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)opaque;
        (void)params;
        struct reconcile_result r = {0};
        if (reconcile_run(pg, &r, errstr, errstr_size) != 0)
                return -1;
        res->expected = r.users;
        res->processed = r.users;
        snprintf(res->message, sizeof(res->message),
                 "reconciled %ld users in %.3f s; %ld rows differed from the incremental state",
                 r.users, r.seconds, r.differed);
        if (r.differed > 0)
                qz_warn("aggregate-listening-history run %s: %ld of %ld users' stats differed "
                        "from the incremental state (late catalog rows?)",
                        run_id, r.differed, r.users);
        else
                qz_info("aggregate-listening-history run %s: %s", run_id, res->message);
        return 0;
}
