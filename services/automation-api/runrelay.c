/* runrelay.c - queued automation runs onto automation.commands.v1 (LISTEN + periodic sweep). */
#include "runrelay.h"
#include "prodref.h"

#include "jobs.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BATCH 50

struct runrelay {
        pthread_t thread;
        atomic_bool stop;
        struct qz_pg *pg;
        long sweep_ms;
        struct prodref *producer; /* borrowed; taken per sweep */
        const struct qz_avro_registry *avro;
        struct qz_metric *published, *errors;
};

/* One claimed batch. Returns the number published, or -1. */
static int sweep_batch(struct qz_pg *pg, struct qz_kafka_producer *producer,
                       const struct qz_avro_registry *avro, int *claimed, char *errstr,
                       size_t errstr_size)
{
        int n = 0;
        char e2[64];
        *claimed = 0;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        PGresult *res = qz_pg_query(pg,
                                    "SELECT run_id FROM automation_job_runs "
                                    "WHERE published_at IS NULL AND status = 'queued' "
                                    "ORDER BY queued_at LIMIT 50 FOR UPDATE SKIP LOCKED",
                                    0, NULL, errstr, errstr_size);
        if (!res) {
                qz_pg_rollback(pg, e2, sizeof(e2));
                return -1;
        }
        *claimed = PQntuples(res);
        int rc = 0;
        for (int i = 0; i < PQntuples(res); i++) {
                const char *run_id = PQgetvalue(res, i, 0);
                if (qz_jobs_publish(pg, producer, avro, run_id, errstr, errstr_size) != 0) {
                        rc = -1; /* keep what was published; the rest waits for the next sweep */
                        break;
                }
                n++;
        }
        PQclear(res);
        if (qz_pg_commit(pg, rc == 0 ? errstr : e2, rc == 0 ? errstr_size : sizeof(e2)) != 0)
                return -1;
        return rc == 0 ? n : -1;
}

int runrelay_sweep(struct qz_pg *pg, struct qz_kafka_producer *producer,
                   const struct qz_avro_registry *avro, int *published, char *errstr,
                   size_t errstr_size)
{
        int total = 0, claimed;
        if (published)
                *published = 0;
        do {
                int n = sweep_batch(pg, producer, avro, &claimed, errstr, errstr_size);
                if (n < 0)
                        return -1;
                total += n;
                if (published)
                        *published = total;
        } while (claimed == BATCH);
        return 0;
}

static void *runrelay_main(void *arg)
{
        struct runrelay *r = arg;
        char err[512];
        bool failing = false;
        qz_pg_listen(r->pg, "automation_run_queued", err, sizeof(err));
        while (!atomic_load(&r->stop)) {
                int n;
                int rc =
                    runrelay_sweep(r->pg, prodref_get(r->producer), r->avro, &n, err, sizeof(err));
                prodref_put(r->producer);
                if (rc != 0) {
                        qz_metric_inc(r->errors);
                        if (!failing)
                                qz_warn("run relay: %s (retrying)", err);
                        failing = true;
                } else if (failing) {
                        qz_info("run relay recovered");
                        failing = false;
                }
                qz_metric_add(r->published, n);
                /* Wake on a NOTIFY, or sweep anyway after sweep_ms; drain the rest. */
                PGnotify *note = NULL;
                int w = qz_pg_notify_wait(r->pg, (int)r->sweep_ms, &note, err, sizeof(err));
                while (w == 1) {
                        PQfreemem(note);
                        note = NULL;
                        w = qz_pg_notify_wait(r->pg, 0, &note, err, sizeof(err));
                }
                if (w < 0) /* connection down: pace the retries */
                        for (int i = 0; i < 10 && !atomic_load(&r->stop); i++)
                                usleep(r->sweep_ms * 100);
        }
        return NULL;
}

struct runrelay *runrelay_start(const struct qz_pg_opts *pg_opts, long sweep_ms,
                                struct prodref *producer, const struct qz_avro_registry *avro,
                                struct qz_metrics *metrics, char *errstr, size_t errstr_size)
{
        struct runrelay *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        struct qz_pg_opts po = *pg_opts;
        po.application_name = "automation-api-run-relay";
        if (!(r->pg = qz_pg_new(&po, errstr, errstr_size))) {
                free(r);
                return NULL;
        }
        r->sweep_ms = sweep_ms;
        r->producer = producer;
        r->avro = avro;
        r->published = qz_metrics_counter(metrics, "qz_api_runs_published_total", NULL,
                                          "AutomationCommands published for queued runs");
        r->errors = qz_metrics_counter(metrics, "qz_api_run_relay_errors_total", NULL,
                                       "Run relay sweeps that failed (retried)");
        if (pthread_create(&r->thread, NULL, runrelay_main, r) != 0) {
                snprintf(errstr, errstr_size, "cannot start the run relay thread");
                qz_pg_free(r->pg);
                free(r);
                return NULL;
        }
        return r;
}

void runrelay_stop(struct runrelay *r)
{
        if (!r)
                return;
        atomic_store(&r->stop, true);
        pthread_join(r->thread, NULL);
        qz_pg_free(r->pg);
        free(r);
}
