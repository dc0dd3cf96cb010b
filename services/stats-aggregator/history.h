/* history.h - plays.v1 batches into play_history and user_listening_stats, idempotently, in one
 * transaction.
 *
 * history_batch_cb is the consume loop's batch callback: it decodes every
 * PlayEvent (undecodable or invalid ones are rejected to the DLQ) and stores the
 * valid ones with history_store (below): play_history rows, the per-user
 * counters for exactly the new plays, and dirty marks for their users, all in
 * one transaction (render.h then rewrites those users' user_listening_stats
 * rows). It returns 0 only after that transaction committed, so the loop
 * commits offsets only for durable plays; a replayed message is a no-op.
 *
 * Ownership: borrows the Postgres handle, Avro registry and metrics registry;
 * history_free() frees only the struct. Runs on the consumer loop's thread. */
#ifndef HISTORY_H
#define HISTORY_H

#include "kafka.h"

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;
struct qz_avro_registry;
struct qz_metrics;
struct history;

struct history *history_new(struct qz_pg *pg, const struct qz_avro_registry *avro,
                            struct qz_metrics *metrics);
void history_free(struct history *h);
int history_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                     struct qz_kafka_batch *batch);

/* Checks one decoded PlayEvent and formats its play_history COPY row
 * (9 columns; NULL = SQL NULL); played_ms and duration_ms are the same values as numbers,
 * for the counters (counts.h). 0, or -1 with the reason. Pure; for tests. */
struct history_row {
        char event_id[37], user_id[37], track_id[37], played_at[40], duration[24];
        const char *completed, *source, *device_type;
        char playlist[37];
        const char *values[9];
        int64_t played_ms, duration_ms;
};
int history_row_from_event(const json_t *ev, struct history_row *row, char *errstr,
                           size_t errstr_size);

/* The distinct partitions of msgs as a Postgres int[] literal, ascending ("{0,5,17}"):
 * the advisory locks that serialise two owners of one partition during a rebalance.
 * -1 when out doesn't fit or a partition is outside 0..1023. Pure; for tests. */
int history_partitions_literal(const struct qz_kafka_msg *msgs, size_t n, char *out,
                               size_t out_size);

/* What one history_store stored. */
struct history_stored {
        long inserted; /* new plays (the others were duplicates) */
        long unknown;  /* of those, plays of a track not in the catalog */
        bool deduped;  /* the batch held a stored or repeated event_id: the staging path ran */
};

/* The store path on its own (also for the benchmark and tests): one transaction that makes
 * rows durable in play_history with their counters and dirty marks. The direct path COPYs
 * the rows into play_history under a savepoint and adds the batch's own sums (counts.h) to
 * the counters (listening_stats_apply, sql/012); if that COPY fails (a duplicate event_id:
 * unique_violation), it rolls back to the savepoint and takes the staging path: COPY into
 * play_stage, listening_stats_ingest (sql/011: ON CONFLICT DO NOTHING, counters from the
 * rows actually inserted). 0, or -1 with err (nothing applied; safe to repeat). */
int history_store(struct qz_pg *pg, struct history_row *rows, size_t nrows, const char *partitions,
                  struct history_stored *out, char *err, size_t err_size);

#endif
