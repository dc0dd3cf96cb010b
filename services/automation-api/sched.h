/* sched.h - the scheduler: turns due automation_jobs into queued runs, exactly once across
 * replicas.
 *
 * Every tick (about a second) one transaction claims the enabled jobs whose
 * next_run_at has passed (SELECT … FOR UPDATE SKIP LOCKED, so a replica
 * never waits for and never re-claims a job another one holds), inserts one
 * queued run per job through queue_automation_run() — whose trigger wakes
 * the run relay — and moves next_run_at to the schedule's next time after
 * now. After downtime a job that missed several slots therefore runs once,
 * not once per missed slot. A job with next_run_at NULL (new, or rescheduled
 * by cron.schedule()) only gets its next time computed.
 *
 * Runs on its own thread with its own Postgres connection. */
#ifndef API_SCHED_H
#define API_SCHED_H

#include "pg.h"

#include <stdbool.h>

struct sched;
struct qz_metrics;

struct sched *sched_start(const struct qz_pg_opts *pg_opts, long tick_ms,
                          struct qz_metrics *metrics, char *errstr, size_t errstr_size);
/* Stops the thread after its current tick; NULL ok. */
void sched_stop(struct sched *s);

/* One tick on pg (exposed for tests): claims due jobs at the database's now.
 * *queued (may be NULL) gets the number of runs queued. 0 or -1. */
int sched_tick(struct qz_pg *pg, int *queued, char *errstr, size_t errstr_size);

#endif
