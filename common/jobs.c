/* jobs.c - scheduled jobs: a run is queued and published, its owner runs it and records the
 * outcome. */
#include "jobs.h"

#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Jobs such as a full reconcile may take a long while; the group must not
 * evict the runner meanwhile (the command would then be replayed and the job
 * run twice). One hour is librdkafka's usual upper range for this setting. */
#define JOBS_MAX_POLL_INTERVAL_MS 3600000

struct qz_jobs {
        struct qz_jobs_config cfg;
        const struct qz_avro_schema *schema;
        struct qz_pg *pg;
        struct qz_kafka_consumer *consumer;
        pthread_t thread;
        bool started;
        atomic_bool failed;
        char group[160];
        struct qz_metrics *metrics;
};

static const struct qz_job_def *find_def(const struct qz_jobs *j, const char *name)
{
        for (size_t i = 0; i < j->cfg.ndefs; i++)
                if (strcmp(j->cfg.defs[i].name, name) == 0)
                        return &j->cfg.defs[i];
        return NULL;
}

static void count_run(struct qz_jobs *j, const char *job, const char *result)
{
        if (!j->metrics)
                return;
        char labels[256];
        snprintf(labels, sizeof(labels), "job=\"%s\",result=\"%s\"", job, result);
        qz_metric_inc(qz_metrics_counter(j->metrics, "qz_jobs_runs_total", labels,
                                         "Job runs handled by this service, by outcome"));
}

/* queued/running -> running. 1 = ours to run, 0 = terminal or unknown (skip), -1 = error. */
static int claim_run(struct qz_jobs *j, const char *run_id, const char *job)
{
        char err[512];
        const char *v[] = {run_id, job};
        PGresult *res = qz_pg_query(j->pg,
                                    "UPDATE automation_job_runs SET status = 'running', "
                                    "started_at = coalesce(started_at, now()) "
                                    "WHERE run_id = $1::uuid AND job = $2 "
                                    "AND status IN ('queued', 'running') RETURNING run_id",
                                    2, v, err, sizeof(err));
        if (!res) {
                qz_warn("job %s run %s: claim failed, will retry: %s", job, run_id, err);
                return -1;
        }
        int n = PQntuples(res);
        PQclear(res);
        if (n == 0)
                qz_log_kv(QZ_LOG_INFO, "job command skipped: run is finished or unknown", "job",
                          job, "run_id", run_id, NULL);
        return n > 0;
}

static int record_outcome(struct qz_jobs *j, const char *run_id, const char *job, int rc,
                          const struct qz_job_result *r, const char *errmsg)
{
        char err[512], expected[24], processed[24];
        snprintf(expected, sizeof(expected), "%ld", r->expected);
        snprintf(processed, sizeof(processed), "%ld", r->processed);
        const char *status = rc != 0 ? "failed" : r->keep_running ? "running" : "succeeded";
        const char *message = rc != 0 ? errmsg : r->message;
        const char *v[] = {run_id, status, r->expected >= 0 ? expected : NULL, processed,
                           message[0] ? message : NULL};
        /* A fan-out run keeps the processed count its items add concurrently;
         * it succeeds here only when they all already arrived (or none exist). */
        PGresult *res = qz_pg_query(
            j->pg,
            "UPDATE automation_job_runs SET "
            "expected = coalesce($3::bigint, expected), "
            "processed = CASE WHEN $2 = 'running' THEN processed ELSE $4::bigint END, "
            "message = $5, "
            "status = CASE WHEN $2 = 'running' AND coalesce($3::bigint, expected) IS NOT NULL "
            "AND processed >= coalesce($3::bigint, expected) THEN 'succeeded' ELSE $2 END, "
            "finished_at = CASE WHEN $2 <> 'running' OR (coalesce($3::bigint, expected) IS "
            "NOT NULL AND processed >= coalesce($3::bigint, expected)) THEN now() END "
            "WHERE run_id = $1::uuid",
            5, v, err, sizeof(err));
        if (!res) {
                qz_warn("job %s run %s: recording the outcome failed, will rerun: %s", job, run_id,
                        err);
                return -1;
        }
        PQclear(res);
        count_run(j, job, status);
        qz_log_kv(rc == 0 ? QZ_LOG_INFO : QZ_LOG_ERROR, "job run finished", "job", job, "run_id",
                  run_id, "status", status, "message", message, NULL);
        return 0;
}

static int handle_command(struct qz_jobs *j, const struct qz_kafka_msg *m)
{
        const struct qz_avro_schema *s = NULL;
        json_t *cmd = NULL;
        char err[512];
        int rc = 0;
        if (qz_avro_decode_json(j->cfg.avro, m->value, m->value_len, &s, &cmd, err, sizeof(err)) !=
                0 ||
            s != j->schema) {
                /* No DLQ is defined for commands (DESIGN.md): log it loudly and go on,
                 * a bad command must not stall the jobs of every service. */
                qz_error("%s partition %d offset %lld: not an AutomationCommand, skipped: %s",
                         m->topic, (int)m->partition, (long long)m->offset,
                         s ? "another schema" : err);
                count_run(j, "unknown", "undecodable");
                goto done;
        }
        const char *job = json_string_value(json_object_get(cmd, "job"));
        const char *run_id = json_string_value(json_object_get(cmd, "run_id"));
        const struct qz_job_def *def = find_def(j, job);
        if (!def)
                goto done; /* another service's job */
        int claimed = claim_run(j, run_id, job);
        if (claimed <= 0) {
                rc = claimed;
                goto done;
        }
        qz_log_kv(QZ_LOG_INFO, "job run started", "job", job, "run_id", run_id, NULL);
        struct qz_job_result r = {.expected = -1};
        char jerr[512] = "";
        int jrc = def->fn(def->opaque, j->pg, run_id, json_object_get(cmd, "params"), &r, jerr,
                          sizeof(jerr));
        if (jrc != 0 && !jerr[0])
                snprintf(jerr, sizeof(jerr), "job failed without a message");
        rc = record_outcome(j, run_id, job, jrc, &r, jerr);
done:
        json_decref(cmd);
        return rc;
}

static int batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                    struct qz_kafka_batch *batch)
{
        (void)batch;
        struct qz_jobs *j = opaque;
        for (size_t i = 0; i < n; i++)
                if (handle_command(j, &msgs[i]) != 0)
                        return -1; /* whole batch again: finished runs are skipped then */
        return 0;
}

static void idle_cb(void *opaque)
{
        char err[256];
        qz_pg_ping(opaque, err, sizeof(err));
}

static void *runner_main(void *arg)
{
        struct qz_jobs *j = arg;
        char err[512];
        if (qz_kafka_consumer_run(j->consumer, batch_cb, j, err, sizeof(err)) != 0) {
                qz_error("jobs runner stopped: %s", err);
                atomic_store(&j->failed, true);
        }
        return NULL;
}

int qz_jobs_start(const struct qz_jobs_config *cfg, struct qz_jobs **out, char *errstr,
                  size_t errstr_size)
{
        struct qz_jobs *j = calloc(1, sizeof(*j));
        if (!j) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        j->cfg = *cfg;
        j->metrics = cfg->metrics;
        j->schema = qz_avro_schema_get(cfg->avro, "AutomationCommand");
        if (!j->schema) {
                snprintf(errstr, errstr_size, "schema qoqnuz.AutomationCommand not found");
                goto fail;
        }
        char app[128];
        snprintf(app, sizeof(app), "%s-jobs", cfg->service);
        snprintf(j->group, sizeof(j->group), "%s-jobs", cfg->service);
        struct qz_pg_opts po = {.dsn = cfg->pg_dsn, .application_name = app};
        if (!(j->pg = qz_pg_new(&po, errstr, errstr_size)))
                goto fail;
        const char *topics[] = {cfg->topic ? cfg->topic : QZ_JOBS_TOPIC};
        struct qz_kafka_consumer_config cc = {.brokers = cfg->brokers,
                                              .group_id = j->group,
                                              .topics = topics,
                                              .ntopics = 1,
                                              .service = app,
                                              .batch_size = 16,
                                              .batch_wait_ms = 50,
                                              .max_poll_interval_ms = JOBS_MAX_POLL_INTERVAL_MS,
                                              .metrics = cfg->metrics,
                                              .idle_cb = idle_cb,
                                              .idle_opaque = j->pg};
        if (qz_kafka_consumer_new(&cc, &j->consumer, errstr, errstr_size) != 0)
                goto fail;
        if (pthread_create(&j->thread, NULL, runner_main, j) != 0) {
                snprintf(errstr, errstr_size, "cannot start the jobs thread");
                goto fail;
        }
        j->started = true;
        *out = j;
        return 0;
fail:
        qz_jobs_stop(j);
        return -1;
}

bool qz_jobs_ready(struct qz_jobs *j)
{
        return j && !atomic_load(&j->failed) && qz_kafka_consumer_ready(j->consumer) &&
               qz_pg_ready(j->pg);
}

void qz_jobs_stop(struct qz_jobs *j)
{
        if (!j)
                return;
        if (j->started) {
                qz_kafka_consumer_stop(j->consumer);
                pthread_join(j->thread, NULL);
        }
        qz_kafka_consumer_close(j->consumer);
        qz_pg_free(j->pg);
        free(j);
}

int qz_jobs_run_progress(struct qz_pg *pg, const char *run_id, long processed_delta, char *errstr,
                         size_t errstr_size)
{
        char delta[24];
        snprintf(delta, sizeof(delta), "%ld", processed_delta);
        const char *v[] = {run_id, delta};
        PGresult *res =
            qz_pg_query(pg,
                        "UPDATE automation_job_runs SET processed = processed + $2::bigint, "
                        "status = CASE WHEN status = 'running' AND expected IS NOT NULL "
                        "AND processed + $2::bigint >= expected THEN 'succeeded' ELSE status END, "
                        "finished_at = CASE WHEN status = 'running' AND expected IS NOT NULL "
                        "AND processed + $2::bigint >= expected THEN now() ELSE finished_at END "
                        "WHERE run_id = $1::uuid",
                        2, v, errstr, errstr_size);
        if (!res)
                return -1;
        PQclear(res);
        return 0;
}

/* params jsonb -> map<string>: non-string values are kept as their JSON text. */
static json_t *params_map(const char *jsonb)
{
        json_t *in = json_loads(jsonb ? jsonb : "{}", 0, NULL);
        json_t *out = json_object();
        const char *k;
        json_t *v;
        if (json_is_object(in)) {
                json_object_foreach(in, k, v)
                {
                        if (json_is_string(v)) {
                                json_object_set(out, k, v);
                        } else {
                                char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                                json_object_set_new(out, k, json_string(text ? text : ""));
                                free(text);
                        }
                }
        }
        json_decref(in);
        return out;
}

int qz_jobs_publish(struct qz_pg *pg, struct qz_kafka_producer *producer,
                    const struct qz_avro_registry *avro, const char *run_id, char *errstr,
                    size_t errstr_size)
{
        PGresult *res = NULL;
        json_t *cmd = NULL;
        unsigned char *buf = NULL;
        size_t len;
        int rc = -1;
        const struct qz_avro_schema *s = qz_avro_schema_get(avro, "AutomationCommand");
        if (!s) {
                snprintf(errstr, errstr_size, "schema qoqnuz.AutomationCommand not found");
                goto fail;
        }
        const char *v[] = {run_id};
        res = qz_pg_query(pg,
                          "SELECT job, params::text FROM automation_job_runs "
                          "WHERE run_id = $1::uuid",
                          1, v, errstr, errstr_size);
        if (!res)
                goto fail;
        if (PQntuples(res) != 1) {
                snprintf(errstr, errstr_size, "run %s not found", run_id);
                goto fail;
        }
        char command_id[QZ_UUID_STR_LEN + 1];
        qz_uuid_generate(command_id);
        const char *job = PQgetvalue(res, 0, 0);
        cmd = json_pack("{s:s, s:s, s:s, s:o, s:I}", "command_id", command_id, "job", job, "run_id",
                        run_id, "params", params_map(PQgetvalue(res, 0, 1)), "issued_at",
                        (json_int_t)qz_time_now_ms());
        if (!cmd || qz_avro_encode_json(s, cmd, &buf, &len, errstr, errstr_size) != 0)
                goto fail;
        struct qz_kafka_record rec = {.topic = QZ_JOBS_TOPIC,
                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                      .key = job,
                                      .key_len = strlen(job),
                                      .value = buf,
                                      .value_len = len};
        if (qz_kafka_produce_wait(producer, &rec, 1, 10000, errstr, errstr_size) != QZ_KAFKA_OK)
                goto fail;
        PQclear(res);
        res = qz_pg_query(pg,
                          "UPDATE automation_job_runs SET published_at = now() "
                          "WHERE run_id = $1::uuid",
                          1, v, errstr, errstr_size);
        if (!res)
                goto fail;
        rc = 0;
fail:
        PQclear(res);
        json_decref(cmd);
        free(buf);
        return rc;
}

int qz_jobs_enqueue(struct qz_pg *pg, struct qz_kafka_producer *producer,
                    const struct qz_avro_registry *avro, const char *job, const json_t *params,
                    char *run_id_out, char *errstr, size_t errstr_size)
{
        char *p = params ? json_dumps(params, JSON_COMPACT) : NULL;
        const char *v[] = {job, p ? p : "{}"};
        PGresult *res = qz_pg_query(pg, "SELECT queue_automation_run($1, $2::jsonb)", 2, v, errstr,
                                    errstr_size);
        free(p);
        if (!res)
                return -1;
        snprintf(run_id_out, QZ_UUID_STR_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return qz_jobs_publish(pg, producer, avro, run_id_out, errstr, errstr_size);
}
