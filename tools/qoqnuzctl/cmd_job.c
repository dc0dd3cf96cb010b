/* cmd_job.c - qoqnuzctl job: queue and publish a job run now, or show a run's status. */
#include "ctl.h"

#include "avro.h"
#include "jobs.h"
#include "json.h"
#include "kafka.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *def)
{
        const char *v = getenv(name);
        return v && *v ? v : def;
}

static int usage(void)
{
        fprintf(stderr, "usage: qoqnuzctl job run NAME [--param KEY=VALUE]... [--wait SECONDS]\n"
                        "       qoqnuzctl job status RUN_ID\n");
        return 2;
}

/* Prints the run as one JSON line; returns its status through *status (caller frees). */
static int show_run(struct qz_pg *pg, const char *run_id, char **status)
{
        char err[512];
        const char *v[] = {run_id};
        PGresult *res =
            qz_pg_query(pg,
                        "SELECT json_build_object('run_id', run_id, 'job', job, 'status', status, "
                        "'expected', expected, 'processed', processed, 'queued_at', queued_at, "
                        "'published_at', published_at, 'started_at', started_at, 'finished_at', "
                        "finished_at, 'message', message)::text, status FROM automation_job_runs "
                        "WHERE run_id = $1::uuid",
                        1, v, err, sizeof(err));
        if (!res) {
                fprintf(stderr, "qoqnuzctl job: %s\n", err);
                return -1;
        }
        if (PQntuples(res) != 1) {
                fprintf(stderr, "qoqnuzctl job: run %s not found\n", run_id);
                PQclear(res);
                return -1;
        }
        printf("%s\n", PQgetvalue(res, 0, 0));
        if (status)
                *status = strdup(PQgetvalue(res, 0, 1));
        PQclear(res);
        return 0;
}

int ctl_job(int argc, char **argv)
{
        struct qz_pg *pg = NULL;
        struct qz_avro_registry *avro = NULL;
        struct qz_kafka_producer *producer = NULL;
        json_t *params = json_object();
        char err[512], run_id[QZ_UUID_STR_LEN + 1];
        char *status = NULL;
        long wait_s = 0;
        int rc = 1;

        if (argc < 3)
                goto usage;
        struct qz_pg_opts po = {
            .dsn = env_or("QOQNUZ_PG_DSN", "postgresql://qoqnuz:qoqnuz@127.0.0.1:55432/qoqnuz"),
            .application_name = "qoqnuzctl"};
        if (!(pg = qz_pg_new(&po, err, sizeof(err)))) {
                fprintf(stderr, "qoqnuzctl job: QOQNUZ_PG_DSN: %s\n", err);
                rc = 2;
                goto done;
        }
        if (strcmp(argv[1], "status") == 0) {
                rc = argc == 3 && show_run(pg, argv[2], NULL) == 0 ? 0 : 1;
                goto done;
        }
        if (strcmp(argv[1], "run") != 0)
                goto usage;
        for (int i = 3; i < argc; i++) {
                if (strcmp(argv[i], "--param") == 0 && i + 1 < argc) {
                        char *eq = strchr(argv[++i], '=');
                        if (!eq)
                                goto usage;
                        *eq = '\0';
                        json_object_set_new(params, argv[i], json_string(eq + 1));
                } else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
                        wait_s = atol(argv[++i]);
                } else {
                        goto usage;
                }
        }
        if (qz_avro_registry_load(env_or("QOQNUZ_SCHEMA_DIR", "schemas"), &avro, err,
                                  sizeof(err)) != 0) {
                fprintf(stderr, "qoqnuzctl job: schemas: %s\n", err);
                goto done;
        }
        struct qz_kafka_producer_config pc = {
            .brokers = env_or("QOQNUZ_KAFKA_BROKERS", "127.0.0.1:59092"), .client_id = "qoqnuzctl"};
        if (qz_kafka_producer_new(&pc, &producer, err, sizeof(err)) != 0 ||
            qz_jobs_enqueue(pg, producer, avro, argv[2], params, run_id, err, sizeof(err)) != 0) {
                fprintf(stderr, "qoqnuzctl job: %s\n", err);
                goto done;
        }
        for (long t = 0;; t++) {
                free(status);
                status = NULL;
                if (show_run(pg, run_id, &status) != 0)
                        goto done;
                if (strcmp(status, "succeeded") == 0) {
                        rc = 0;
                        break;
                }
                if (strcmp(status, "failed") == 0 || t >= wait_s * 5) {
                        rc = wait_s > 0 || strcmp(status, "failed") == 0 ? 1 : 0;
                        break;
                }
                usleep(200 * 1000);
        }
done:
        free(status);
        qz_kafka_producer_close(producer, 1000);
        qz_avro_registry_free(avro);
        qz_pg_free(pg);
        json_decref(params);
        return rc;
usage:
        rc = usage();
        goto done;
}
