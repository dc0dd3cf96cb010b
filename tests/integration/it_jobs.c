/* it_jobs.c - the jobs runner against real Postgres and the dev-broker: a queued and
 * published run is executed by its owner once, recorded succeeded/failed with its
 * counts, a fan-out run finishes through progress, a redelivered command for a
 * finished run does not run again, and a garbage command does not stall the runner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "avro.h"
#include "jobs.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
        struct qz_pg *pg;
        struct qz_avro_registry *avro;
        struct qz_kafka_producer *producer;
        struct qz_jobs *jobs;
        char job_ok[64], job_fail[64], job_fan[64];
        int calls_ok;
        char last_param[64];
};

static int ok_fn(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                 struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)pg, (void)run_id, (void)errstr, (void)errstr_size;
        struct fixture *f = opaque;
        f->calls_ok++;
        const char *x = json_string_value(json_object_get(params, "x"));
        snprintf(f->last_param, sizeof(f->last_param), "%s", x ? x : "");
        res->processed = 5;
        snprintf(res->message, sizeof(res->message), "did 5 things");
        return 0;
}

static int fail_fn(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                   struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)opaque, (void)pg, (void)run_id, (void)params, (void)res;
        snprintf(errstr, errstr_size, "the sky fell");
        return -1;
}

static int fan_fn(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                  struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)opaque, (void)pg, (void)run_id, (void)params, (void)errstr, (void)errstr_size;
        res->expected = 3;
        res->keep_running = true;
        return 0;
}

static const char *env(const char *name)
{
        const char *v = getenv(name);
        if (!v || !*v)
                fail_msg("%s is not set (run through scripts/test.sh)", name);
        return v;
}

/* Polls the run until its status is `want` (or 15 s pass); returns the row's text. */
static char *wait_status(struct fixture *f, const char *run_id, const char *want)
{
        char err[512];
        const char *v[] = {run_id};
        for (int i = 0; i < 150; i++) {
                PGresult *res = qz_pg_query(
                    f->pg,
                    "SELECT status, coalesce(processed, 0)::text || '|' || "
                    "coalesce(expected::text, '') || '|' || coalesce(message, '') || '|' || "
                    "(started_at IS NOT NULL)::text || '|' || (finished_at IS NOT NULL)::text "
                    "FROM automation_job_runs WHERE run_id = $1::uuid",
                    1, v, err, sizeof(err));
                assert_non_null(res);
                assert_int_equal(PQntuples(res), 1);
                if (strcmp(PQgetvalue(res, 0, 0), want) == 0) {
                        char *row = strdup(PQgetvalue(res, 0, 1));
                        PQclear(res);
                        return row;
                }
                PQclear(res);
                usleep(100 * 1000);
        }
        fail_msg("run %s never reached %s", run_id, want);
        return NULL;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        char err[512];
        struct qz_pg_opts po = {.dsn = env("QZ_TEST_PG_DSN")};
        f->pg = qz_pg_new(&po, err, sizeof(err));
        assert_non_null(f->pg);
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/schemas", env("QZ_TEST_ROOT"));
        assert_int_equal(qz_avro_registry_load(dir, &f->avro, err, sizeof(err)), 0);
        struct qz_kafka_producer_config pc = {.brokers = env("QZ_TEST_BROKERS")};
        assert_int_equal(qz_kafka_producer_new(&pc, &f->producer, err, sizeof(err)), 0);

        /* Jobs of our own, disabled so no scheduler queues them. */
        int pid = (int)getpid();
        snprintf(f->job_ok, sizeof(f->job_ok), "it-jobs-ok-%d", pid);
        snprintf(f->job_fail, sizeof(f->job_fail), "it-jobs-fail-%d", pid);
        snprintf(f->job_fan, sizeof(f->job_fan), "it-jobs-fan-%d", pid);
        const char *names[] = {f->job_ok, f->job_fail, f->job_fan};
        for (int i = 0; i < 3; i++) {
                const char *v[] = {names[i]};
                PGresult *res = qz_pg_query(f->pg,
                                            "INSERT INTO automation_jobs (name, schedule, "
                                            "enabled, owner) VALUES ($1, '0 0 1 1 *', false, "
                                            "'it_jobs')",
                                            1, v, err, sizeof(err));
                if (!res)
                        fail_msg("%s", err);
                PQclear(res);
        }
        char service[64];
        snprintf(service, sizeof(service), "it-jobs-%d", pid);
        static struct qz_job_def defs[3];
        defs[0] = (struct qz_job_def){f->job_ok, ok_fn, f};
        defs[1] = (struct qz_job_def){f->job_fail, fail_fn, f};
        defs[2] = (struct qz_job_def){f->job_fan, fan_fn, f};
        struct qz_jobs_config jc = {.brokers = env("QZ_TEST_BROKERS"),
                                    .pg_dsn = env("QZ_TEST_PG_DSN"),
                                    .service = service,
                                    .avro = f->avro,
                                    .defs = defs,
                                    .ndefs = 3};
        assert_int_equal(qz_jobs_start(&jc, &f->jobs, err, sizeof(err)), 0);
        for (int i = 0; i < 200 && !qz_jobs_ready(f->jobs); i++)
                usleep(100 * 1000);
        assert_true(qz_jobs_ready(f->jobs));
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char err[512];
        qz_jobs_stop(f->jobs);
        const char *names[] = {f->job_ok, f->job_fail, f->job_fan};
        for (int i = 0; i < 3; i++) {
                const char *v[] = {names[i]};
                PGresult *res = qz_pg_query(f->pg,
                                            "WITH r AS (DELETE FROM automation_job_runs WHERE "
                                            "job = $1) DELETE FROM automation_jobs WHERE name = $1",
                                            1, v, err, sizeof(err));
                PQclear(res);
        }
        qz_kafka_producer_close(f->producer, 1000);
        qz_avro_registry_free(f->avro);
        qz_pg_free(f->pg);
        free(f);
        return 0;
}

static void test_run_succeeds_once(void **state)
{
        struct fixture *f = *state;
        char err[512], run_id[40];
        json_t *params = json_pack("{s:s}", "x", "42");
        assert_int_equal(qz_jobs_enqueue(f->pg, f->producer, f->avro, f->job_ok, params, run_id,
                                         err, sizeof(err)),
                         0);
        json_decref(params);
        char *row = wait_status(f, run_id, "succeeded");
        assert_string_equal(row, "5||did 5 things|true|true");
        free(row);
        assert_int_equal(f->calls_ok, 1);
        assert_string_equal(f->last_param, "42");

        /* the same command again (a replay after a crash): the finished run is skipped */
        assert_int_equal(qz_jobs_publish(f->pg, f->producer, f->avro, run_id, err, sizeof(err)), 0);
        char other[40];
        assert_int_equal(
            qz_jobs_enqueue(f->pg, f->producer, f->avro, f->job_ok, NULL, other, err, sizeof(err)),
            0);
        free(wait_status(f, other, "succeeded"));
        assert_int_equal(f->calls_ok, 2); /* the new run only, not the replay */
}

static void test_run_fails_with_message(void **state)
{
        struct fixture *f = *state;
        char err[512], run_id[40];
        assert_int_equal(qz_jobs_enqueue(f->pg, f->producer, f->avro, f->job_fail, NULL, run_id,
                                         err, sizeof(err)),
                         0);
        char *row = wait_status(f, run_id, "failed");
        assert_string_equal(row, "0||the sky fell|true|true");
        free(row);
}

static void test_fan_out_finishes_through_progress(void **state)
{
        struct fixture *f = *state;
        char err[512], run_id[40];
        assert_int_equal(qz_jobs_enqueue(f->pg, f->producer, f->avro, f->job_fan, NULL, run_id, err,
                                         sizeof(err)),
                         0);
        /* running with expected 3 once the owner handled the command */
        for (int i = 0; i < 150; i++) {
                const char *v[] = {run_id};
                PGresult *res = qz_pg_query(f->pg,
                                            "SELECT 1 FROM automation_job_runs WHERE run_id = "
                                            "$1::uuid AND status = 'running' AND expected = 3",
                                            1, v, err, sizeof(err));
                int n = PQntuples(res);
                PQclear(res);
                if (n == 1)
                        break;
                usleep(100 * 1000);
        }
        for (int i = 0; i < 2; i++)
                assert_int_equal(qz_jobs_run_progress(f->pg, run_id, 1, err, sizeof(err)), 0);
        char *row = wait_status(f, run_id, "running");
        assert_string_equal(row, "2|3||true|false");
        free(row);
        assert_int_equal(qz_jobs_run_progress(f->pg, run_id, 1, err, sizeof(err)), 0);
        row = wait_status(f, run_id, "succeeded");
        assert_string_equal(row, "3|3||true|true");
        free(row);
}

static void test_garbage_command_does_not_stall(void **state)
{
        struct fixture *f = *state;
        char err[512], run_id[40];
        struct qz_kafka_record rec = {.topic = QZ_JOBS_TOPIC,
                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                      .key = f->job_ok,
                                      .key_len = strlen(f->job_ok),
                                      .value = "not avro at all",
                                      .value_len = 15};
        assert_int_equal(qz_kafka_produce_wait(f->producer, &rec, 1, 10000, err, sizeof(err)),
                         QZ_KAFKA_OK);
        int before = f->calls_ok;
        assert_int_equal(
            qz_jobs_enqueue(f->pg, f->producer, f->avro, f->job_ok, NULL, run_id, err, sizeof(err)),
            0);
        free(wait_status(f, run_id, "succeeded"));
        assert_int_equal(f->calls_ok, before + 1);
}

int main(void)
{
        qz_log_init("it_jobs", QZ_LOG_WARN);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_run_succeeds_once),
            cmocka_unit_test(test_run_fails_with_message),
            cmocka_unit_test(test_fan_out_finishes_through_progress),
            cmocka_unit_test(test_garbage_command_does_not_stall),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
