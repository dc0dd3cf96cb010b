/* reconcile.h - the aggregate-listening-history job: rebuild every user's stats from play_history.
 *
 * reconcile_run calls listening_stats_reconcile() (sql/010_listening_stats.sql): in one
 * transaction it recomputes every user's stats and the per-user counters from
 * play_history and the catalog as it is now, replaces the rows, and counts the users whose
 * row differed from the incremental state (0 expected, except after late catalog rows).
 * Concurrent batches wait for it and then apply on top of the rebuilt state.
 *
 * reconcile_job is its qz_job_fn (common/jobs.h): processed = users reconciled, the message
 * says how many rows differed. Stateless: opaque is unused. */
#ifndef RECONCILE_H
#define RECONCILE_H

#include <jansson.h>

#include <stddef.h>

struct qz_pg;
struct qz_job_result;

struct reconcile_result {
        long users;    /* rows in user_listening_stats afterwards */
        long differed; /* users whose row differed (or was missing / extra) before */
        double seconds;
};

int reconcile_run(struct qz_pg *pg, struct reconcile_result *out, char *errstr, size_t errstr_size);

int reconcile_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                  struct qz_job_result *res, char *errstr, size_t errstr_size);

#endif
