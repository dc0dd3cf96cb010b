/* worker.h - analysis threads: each a consumer in the group on the tasks and retry topics that
 * turns every message into one claim of the most urgent due task.
 *
 * Priorities: a message is a token, not an order. Whatever task it names,
 * the claim takes the most urgent due pending task (priority desc, then age)
 * from background_tasks, so a task queued at priority 10 behind a backlog of
 * thousands of priority-5 messages starts as soon as any thread finishes its
 * current task. The named task is then claimed by a later token; a token
 * that finds nothing due is a no-op, and a task left without a token is
 * republished by the relay after the republish age. A republished or
 * duplicated message is harmless: a task that is not pending is never
 * claimed, and a completed one never changes.
 *
 * Offsets are committed after the attempt's outcome (completed, back to
 * pending with backoff, or failed) is durable; a database outage fails the
 * batch, which the consume loop retries with backoff.
 *
 * Ownership: the config's strings and the borrowed avro/metrics must outlive
 * the pool. Each thread owns its Postgres handle and consumer. */
#ifndef WORKER_H
#define WORKER_H

#include "analysis/analysis.h"

#include <stdbool.h>
#include <stddef.h>

struct qz_avro_registry;
struct qz_metrics;
struct qz_kafka_producer;

struct worker_config {
        const char *brokers, *pg_dsn, *group_id, *tasks_topic, *retry_topic, *dlq_topic;
        const char *service;
        int threads;
        int batch_size;
        struct qz_analysis_config analysis;
        const struct qz_avro_registry *avro;
        struct qz_kafka_producer *dlq_producer; /* for undecodable messages */
        struct qz_metrics *metrics;
};

struct worker_pool;

int worker_pool_start(const struct worker_config *cfg, struct worker_pool **out, char *errstr,
                      size_t errstr_size);
/* Every thread joined its group and has Postgres. Any thread. */
bool worker_pool_ready(struct worker_pool *p);
/* A thread's consumer stopped on a fatal error. */
bool worker_pool_failed(struct worker_pool *p);
/* Asks the threads to finish their batch, joins them, frees. NULL ok. */
void worker_pool_stop(struct worker_pool *p);

#endif
