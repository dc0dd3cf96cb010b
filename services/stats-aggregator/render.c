/* render.c - the render step: user_listening_stats JSON rebuilt from the counters for dirty users.
 */
#include "render.h"

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct render {
        struct qz_pg *pg;
        long interval_ms;
        atomic_bool stop;
        pthread_t thread;
        bool started;
        struct qz_metric *lag, *users, *seconds, *failed;
};

int render_once(struct qz_pg *pg, struct render_result *out, char *errstr, size_t errstr_size)
{
        PGresult *res = NULL;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        res = qz_pg_query(pg, "SELECT users, lag_seconds FROM listening_stats_render()", 0, NULL,
                          errstr, errstr_size);
        if (!res)
                goto fail;
        if (PQntuples(res) != 1) {
                snprintf(errstr, errstr_size, "listening_stats_render returned %d rows",
                         PQntuples(res));
                goto fail;
        }
        out->users = atol(PQgetvalue(res, 0, 0));
        out->lag_seconds = atof(PQgetvalue(res, 0, 1));
        PQclear(res);
        return qz_pg_commit(pg, errstr, errstr_size);
fail:
        PQclear(res);
        qz_pg_rollback(pg, NULL, 0);
        return -1;
}

/* Sleeps up to ms in short slices so a stop request is seen quickly. */
static void nap(struct render *r, long ms)
{
        while (ms > 0 && !atomic_load(&r->stop)) {
                long step = ms < 50 ? ms : 50;
                struct timespec ts = {0, step * 1000000L};
                nanosleep(&ts, NULL);
                ms -= step;
        }
}

static void *render_thread(void *opaque)
{
        struct render *r = opaque;
        char err[512];
        while (!atomic_load(&r->stop)) {
                struct render_result res = {0};
                int64_t t0 = qz_clock_mono_ns();
                if (render_once(r->pg, &res, err, sizeof(err)) != 0) {
                        /* Postgres down or a conflict with the reconcile: the marks stay,
                         * the next pass takes them. */
                        qz_metric_inc(r->failed);
                        qz_warn("render pass failed, will retry: %s", err);
                        nap(r, r->interval_ms);
                        continue;
                }
                long took_ms = (long)((qz_clock_mono_ns() - t0) / 1000000);
                qz_metric_set(r->lag, res.lag_seconds);
                qz_metric_add(r->users, (double)res.users);
                qz_metric_observe(r->seconds, (double)took_ms / 1e3);
                if (res.users > 0)
                        qz_debug("rendered %ld users in %ld ms, lag %.3f s", res.users, took_ms,
                                 res.lag_seconds);
                nap(r, r->interval_ms - took_ms);
        }
        return NULL;
}

struct render *render_start(const char *dsn, long interval_ms, struct qz_metrics *m, char *errstr,
                            size_t errstr_size)
{
        struct render *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        struct qz_pg_opts po = {.dsn = dsn, .application_name = "stats-aggregator-render"};
        if (!(r->pg = qz_pg_new(&po, errstr, errstr_size)))
                goto fail;
        r->interval_ms = interval_ms;
        atomic_init(&r->stop, false);
        r->lag = qz_metrics_gauge(m, "qz_stats_render_lag_seconds", NULL,
                                  "At the last render pass: how long the oldest change it "
                                  "rendered had waited (stats staleness; 0 = nothing pending)");
        r->users = qz_metrics_counter(m, "qz_stats_users_rendered_total", NULL,
                                      "user_listening_stats rows rewritten by render passes");
        r->seconds = qz_metrics_histogram(m, "qz_stats_render_seconds", NULL,
                                          "Time of one render pass", NULL, 0);
        r->failed = qz_metrics_counter(m, "qz_stats_render_failures_total", NULL,
                                       "Render passes that failed and will be retried");
        if (pthread_create(&r->thread, NULL, render_thread, r) != 0) {
                snprintf(errstr, errstr_size, "cannot start the render thread");
                goto fail;
        }
        r->started = true;
        return r;
fail:
        qz_pg_free(r->pg);
        free(r);
        return NULL;
}

void render_stop(struct render *r)
{
        if (!r)
                return;
        atomic_store(&r->stop, true);
        if (r->started)
                pthread_join(r->thread, NULL);
        qz_pg_free(r->pg);
        free(r);
}
