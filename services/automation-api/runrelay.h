/* runrelay.h - publishes every queued automation run whose AutomationCommand is not on Kafka yet.
 *
 * Queued runs come from the scheduler, the trigger endpoints and the guide's
 * SQL functions (all through queue_automation_run(), whose trigger sends
 * NOTIFY automation_run_queued at commit). The relay LISTENs on that channel
 * and also sweeps every sweep_ms, so a run is published within a second
 * either way, and one queued while the relay was down or disconnected is
 * published at the next sweep. Each sweep claims unpublished runs with
 * FOR UPDATE SKIP LOCKED and publishes them with qz_jobs_publish (which sets
 * published_at after the broker's ack) inside that transaction, so two
 * replicas never publish the same run; a crash between the ack and the
 * commit publishes it again later (the owner ignores a run already terminal).
 *
 * Runs on its own thread with its own Postgres connection; the producer and
 * the Avro registry are borrowed (thread-safe) and must outlive it. */
#ifndef API_RUNRELAY_H
#define API_RUNRELAY_H

#include "pg.h"

struct runrelay;
struct qz_kafka_producer;
struct prodref;
struct qz_avro_registry;
struct qz_metrics;

struct runrelay *runrelay_start(const struct qz_pg_opts *pg_opts, long sweep_ms,
                                struct prodref *producer, const struct qz_avro_registry *avro,
                                struct qz_metrics *metrics, char *errstr, size_t errstr_size);
void runrelay_stop(struct runrelay *r);

/* One sweep on pg (exposed for tests). *published (may be NULL) gets the count. 0 or -1. */
int runrelay_sweep(struct qz_pg *pg, struct qz_kafka_producer *producer,
                   const struct qz_avro_registry *avro, int *published, char *errstr,
                   size_t errstr_size);

#endif
