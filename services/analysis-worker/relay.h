/* relay.h - the outbox relay from background_tasks to Kafka (the only one).
 *
 * Tasks: pending rows that are due (not_before passed) and not yet published,
 * or published longer than republish_age_ms ago without being claimed (this
 * is how the guide's stuck-task reset and a lost token are recovered), are
 * produced as AnalysisTask keyed by entity_id, first attempts to the tasks
 * topic and retries (attempts > 0) to the retry topic, then marked
 * published_at. Rows are locked (FOR UPDATE SKIP LOCKED) from the select to
 * the mark, so relays on several instances never send the same row at once;
 * a crash between the broker's ack and the mark sends it again, which the
 * claim dedupes (a task not pending is not claimed).
 *
 * Outcomes: finished rows with outcome_published_at null are produced as
 * TrackFeatures (completed, to the results topic) or RejectedEvent with the
 * error history (failed, to the DLQ), then marked.
 *
 * Pending rows whose attempts reached max_attempts (the guide's reset after a
 * last attempt) are failed here.
 *
 * Ownership: borrows pg, producer and avro; one thread. */
#ifndef RELAY_H
#define RELAY_H

#include <stdbool.h>
#include <stddef.h>

struct qz_pg;
struct qz_kafka_producer;
struct qz_avro_registry;
struct qz_metrics;

struct relay_config {
        const char *tasks_topic, *retry_topic, *dlq_topic, *results_topic;
        const char *service; /* RejectedEvent.service */
        long republish_age_ms;
        long batch;             /* rows per transaction */
        int produce_timeout_ms; /* wait for acks */
        /* Fault injection for the crash test: produce and wait for the acks,
         * then roll back instead of marking (as if killed in between). */
        bool fault_skip_mark;
};

struct relay;

struct relay *relay_new(const struct relay_config *cfg, struct qz_pg *pg,
                        struct qz_kafka_producer *producer, const struct qz_avro_registry *avro,
                        struct qz_metrics *metrics, char *errstr, size_t errstr_size);
void relay_free(struct relay *r);
/* One pass over due tasks (at most batch rows). *sent = tasks produced. */
int relay_tasks_once(struct relay *r, long *sent, char *errstr, size_t errstr_size);
/* One pass over finished rows (at most batch). *sent = outcomes produced. */
int relay_outcomes_once(struct relay *r, long *sent, char *errstr, size_t errstr_size);
/* Fails pending rows with attempts >= max_attempts. *count = rows failed. */
int relay_fail_exhausted(struct relay *r, long *count, char *errstr, size_t errstr_size);
/* Milliseconds until the next pending task becomes due (capped at cap_ms;
 * 0 when one is due now or on error). */
long relay_next_due_ms(struct relay *r, long cap_ms);

#endif
