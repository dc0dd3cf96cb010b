/* render.h - the render step: user_listening_stats JSON rebuilt from the counters for dirty users.
 *
 * The ingest transaction (history.c) only adds to counters and marks users dirty
 * (listening_stats_dirty). render_once() runs listening_stats_render()
 * (sql/011_listening_stats_render.sql) in its own transaction: every visible
 * mark is taken and those users' stats rows are rewritten, set-based. Passes
 * are serialised in Postgres (advisory lock), so any number of instances may
 * run them.
 *
 * render_start() runs render_once() on a thread of its own with its own
 * Postgres handle, every interval_ms (at once again when a pass found work
 * and took longer than the interval). Metrics: qz_stats_render_lag_seconds
 * (at the last pass: how long the oldest rendered mark had waited; 0 when
 * nothing was pending), qz_stats_users_rendered_total,
 * qz_stats_render_seconds, qz_stats_render_failures_total.
 *
 * Ownership: render_start() borrows dsn and metrics for the life of the
 * renderer; render_stop() joins the thread (a running pass finishes first)
 * and frees everything. */
#ifndef RENDER_H
#define RENDER_H

#include <stddef.h>

struct qz_pg;
struct qz_metrics;
struct render;

struct render_result {
        long users;         /* users whose stats rows were rewritten */
        double lag_seconds; /* age of the oldest mark taken; 0 when none */
};

/* One pass in one transaction. 0, or -1 with errstr (nothing taken; the marks stay). */
int render_once(struct qz_pg *pg, struct render_result *out, char *errstr, size_t errstr_size);

struct render *render_start(const char *dsn, long interval_ms, struct qz_metrics *metrics,
                            char *errstr, size_t errstr_size);
void render_stop(struct render *r);

#endif
