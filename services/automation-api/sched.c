/* sched.c - claims due jobs (FOR UPDATE SKIP LOCKED), queues one run each, advances next_run_at. */
#include "sched.h"

#include "cron.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sched {
        pthread_t thread;
        atomic_bool stop;
        struct qz_pg *pg;
        long tick_ms;
        struct qz_metric *runs_queued, *tick_errors;
};

int sched_tick(struct qz_pg *pg, int *queued, char *errstr, size_t errstr_size)
{
        PGresult *res = NULL, *r2 = NULL;
        int nqueued = 0;
        if (queued)
                *queued = 0;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        res = qz_pg_query(pg,
                          "SELECT name, schedule, next_run_at IS NOT NULL, "
                          "extract(epoch FROM now())::bigint FROM automation_jobs "
                          "WHERE enabled AND (next_run_at IS NULL OR next_run_at <= now()) "
                          "ORDER BY jobid FOR UPDATE SKIP LOCKED",
                          0, NULL, errstr, errstr_size);
        if (!res)
                goto fail;
        for (int i = 0; i < PQntuples(res); i++) {
                const char *name = PQgetvalue(res, i, 0), *schedule = PQgetvalue(res, i, 1);
                bool due = PQgetvalue(res, i, 2)[0] == 't';
                time_t now = (time_t)strtoll(PQgetvalue(res, i, 3), NULL, 10);
                struct cron_expr expr;
                char cerr[256];
                if (cron_parse(schedule, &expr, cerr, sizeof(cerr)) != 0) {
                        /* set by raw SQL (cron.schedule); PATCH refuses these. Disable
                         * rather than fail every tick, and say why. */
                        qz_log_kv(QZ_LOG_ERROR, "bad schedule: job disabled", "job", name,
                                  "schedule", schedule, "error", cerr, NULL);
                        const char *v[] = {name};
                        r2 = qz_pg_query(pg,
                                         "UPDATE automation_jobs SET enabled = false, "
                                         "next_run_at = NULL, updated_at = now() WHERE name = $1",
                                         1, v, errstr, errstr_size);
                        if (!r2)
                                goto fail;
                        PQclear(r2);
                        r2 = NULL;
                        continue;
                }
                if (due) {
                        const char *v[] = {name};
                        r2 = qz_pg_query(pg, "SELECT queue_automation_run($1)", 1, v, errstr,
                                         errstr_size);
                        if (!r2)
                                goto fail;
                        qz_log_kv(QZ_LOG_INFO, "scheduled run queued", "job", name, "run_id",
                                  PQgetvalue(r2, 0, 0), NULL);
                        PQclear(r2);
                        r2 = NULL;
                        nqueued++;
                }
                time_t next = cron_next(&expr, now);
                char next_s[32];
                snprintf(next_s, sizeof(next_s), "%lld", (long long)next);
                const char *v[] = {name, next < 0 ? NULL : next_s};
                r2 =
                    qz_pg_query(pg,
                                "UPDATE automation_jobs SET next_run_at = to_timestamp($2::bigint) "
                                "WHERE name = $1",
                                2, v, errstr, errstr_size);
                if (!r2)
                        goto fail;
                PQclear(r2);
                r2 = NULL;
        }
        PQclear(res);
        res = NULL;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                return -1;
        if (queued)
                *queued = nqueued;
        return 0;
fail:
        PQclear(res);
        PQclear(r2);
        char e2[64];
        qz_pg_rollback(pg, e2, sizeof(e2));
        return -1;
}

static void *sched_main(void *arg)
{
        struct sched *s = arg;
        char err[512];
        bool failing = false;
        while (!atomic_load(&s->stop)) {
                int queued;
                if (sched_tick(s->pg, &queued, err, sizeof(err)) != 0) {
                        qz_metric_inc(s->tick_errors);
                        if (!failing)
                                qz_warn("scheduler tick failed (retrying): %s", err);
                        failing = true;
                } else {
                        if (failing)
                                qz_info("scheduler recovered");
                        failing = false;
                        qz_metric_add(s->runs_queued, queued);
                }
                for (long slept = 0; slept < s->tick_ms && !atomic_load(&s->stop); slept += 50)
                        usleep(50 * 1000);
        }
        return NULL;
}

struct sched *sched_start(const struct qz_pg_opts *pg_opts, long tick_ms,
                          struct qz_metrics *metrics, char *errstr, size_t errstr_size)
{
        struct sched *s = calloc(1, sizeof(*s));
        if (!s) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        struct qz_pg_opts po = *pg_opts;
        po.application_name = "automation-api-scheduler";
        if (!(s->pg = qz_pg_new(&po, errstr, errstr_size))) {
                free(s);
                return NULL;
        }
        s->tick_ms = tick_ms;
        s->runs_queued = qz_metrics_counter(metrics, "qz_api_scheduled_runs_total", NULL,
                                            "Runs queued by the scheduler for due jobs");
        s->tick_errors = qz_metrics_counter(metrics, "qz_api_scheduler_errors_total", NULL,
                                            "Scheduler ticks that failed (retried)");
        if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
                snprintf(errstr, errstr_size, "cannot start the scheduler thread");
                qz_pg_free(s->pg);
                free(s);
                return NULL;
        }
        return s;
}

void sched_stop(struct sched *s)
{
        if (!s)
                return;
        atomic_store(&s->stop, true);
        pthread_join(s->thread, NULL);
        qz_pg_free(s->pg);
        free(s);
}
