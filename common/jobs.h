/* jobs.h - scheduled jobs: a run is queued and published, its owner runs it and records the
 * outcome.
 *
 * The flow (DESIGN.md, "Scheduled job"): a run row is inserted into
 * automation_job_runs (status queued) — by the scheduler, by one of the
 * guide's SQL functions, or by qz_jobs_enqueue — and an AutomationCommand
 * {command_id, job, run_id, params, issued_at} is published on
 * automation.commands.v1 keyed by job name, and the row's published_at set.
 *
 * The owner side: every service that owns jobs starts one qz_jobs runner. It
 * is a consumer on that topic in group "<service>-jobs" (so each command
 * reaches one instance of each service), on its own thread. For a job it does
 * not own it just commits. For an owned one it marks the run running
 * (started_at), calls the job function on the runner thread with the runner's
 * own Postgres handle, records succeeded/failed with the message and the
 * counts, and only then commits the offset. A command redelivered after a
 * crash runs the job again unless the run is already terminal, so a job must
 * be idempotent. A command whose run row does not exist (queued elsewhere,
 * deleted) is logged and skipped.
 *
 * Fan-out jobs (generate-smart-playlists) set res->expected and
 * res->keep_running: the run stays running and succeeds when
 * qz_jobs_run_progress() has brought processed up to expected.
 *
 * Ownership: the config's strings, avro registry, metrics and job table are
 * borrowed and must outlive the runner. */
#ifndef QZ_JOBS_H
#define QZ_JOBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct qz_pg;
struct qz_avro_registry;
struct qz_metrics;
struct qz_kafka_producer;
struct qz_jobs;

#define QZ_JOBS_TOPIC "automation.commands.v1"

struct qz_job_result {
        long expected;     /* items the run will handle; -1 = not set */
        long processed;    /* items handled so far */
        bool keep_running; /* fan-out: finish later through qz_jobs_run_progress */
        char message[512]; /* a line for the operator ("3 rows differed") */
};

/* Runs one job. params: the command's params (an object of strings).
 * Returns 0 (succeeded, or still running when keep_running) or -1 (failed:
 * errstr becomes the run's message). */
typedef int (*qz_job_fn)(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                         struct qz_job_result *res, char *errstr, size_t errstr_size);

struct qz_job_def {
        const char *name; /* automation_jobs.name, e.g. "aggregate-listening-history" */
        qz_job_fn fn;
        void *opaque;
};

struct qz_jobs_config {
        const char *brokers;
        const char *pg_dsn;
        const char *service; /* consumer group "<service>-jobs" */
        const struct qz_avro_registry *avro;
        struct qz_metrics *metrics; /* may be NULL */
        const struct qz_job_def *defs;
        size_t ndefs;
        const char *topic; /* NULL = QZ_JOBS_TOPIC */
};

int qz_jobs_start(const struct qz_jobs_config *cfg, struct qz_jobs **out, char *errstr,
                  size_t errstr_size);
/* Joined the group and Postgres reachable (for /readyz). Any thread. */
bool qz_jobs_ready(struct qz_jobs *j);
/* Stops the runner (a running job finishes first), closes, frees. NULL ok. */
void qz_jobs_stop(struct qz_jobs *j);

/* Adds processed_delta to a run's processed count and marks it succeeded
 * when processed reaches expected. Idempotence is the caller's: count each
 * item once (e.g. in the same transaction as the item's effect). */
int qz_jobs_run_progress(struct qz_pg *pg, const char *run_id, long processed_delta, char *errstr,
                         size_t errstr_size);

/* Queues a run of job with params (NULL = {}) through queue_automation_run(),
 * publishes its AutomationCommand, waits for the ack and sets published_at.
 * run_id_out gets the run's id (37 bytes). For qoqnuzctl, tests, and the
 * scheduler's manual triggers. */
int qz_jobs_enqueue(struct qz_pg *pg, struct qz_kafka_producer *producer,
                    const struct qz_avro_registry *avro, const char *job, const json_t *params,
                    char *run_id_out, char *errstr, size_t errstr_size);
/* Publishes the command of an already queued run (the scheduler's relay) and
 * sets its published_at. */
int qz_jobs_publish(struct qz_pg *pg, struct qz_kafka_producer *producer,
                    const struct qz_avro_registry *avro, const char *run_id, char *errstr,
                    size_t errstr_size);

#endif
