/* history.h - plays.v1 batches into play_history and user_listening_stats, idempotently, in one
 * transaction.
 *
 * history_batch_cb is the consume loop's batch callback: it decodes every
 * PlayEvent (undecodable or invalid ones are rejected to the DLQ), COPYs the
 * valid ones into a session-local staging table and calls the SQL function
 * listening_stats_ingest (sql/011_listening_stats_render.sql), which inserts
 * them with ON CONFLICT (event_id) DO NOTHING and adds exactly the new ones to
 * the per-user counters and marks their users dirty, all in one transaction
 * (render.h then rewrites those users' user_listening_stats rows). It
 * returns 0 only after that transaction committed, so the loop commits offsets
 * only for durable plays; a replayed message is a no-op.
 *
 * Ownership: borrows the Postgres handle, Avro registry and metrics registry;
 * history_free() frees only the struct. Runs on the consumer loop's thread. */
#ifndef HISTORY_H
#define HISTORY_H

#include "kafka.h"

#include <jansson.h>

#include <stddef.h>

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
 * (9 columns; NULL = SQL NULL). 0, or -1 with the reason. Pure; for tests. */
struct history_row {
        char event_id[37], user_id[37], track_id[37], played_at[40], duration[24];
        const char *completed, *source, *device_type;
        char playlist[37];
        const char *values[9];
};
int history_row_from_event(const json_t *ev, struct history_row *row, char *errstr,
                           size_t errstr_size);

/* The distinct partitions of msgs as a Postgres int[] literal, ascending ("{0,5,17}"):
 * the advisory locks that serialise two owners of one partition during a rebalance.
 * -1 when out doesn't fit or a partition is outside 0..1023. Pure; for tests. */
int history_partitions_literal(const struct qz_kafka_msg *msgs, size_t n, char *out,
                               size_t out_size);

/* The store path on its own (also for the benchmark): one transaction that COPYs rows
 * into play_stage and applies them (history + counters + dirty marks). *inserted gets the new
 * plays, *unknown those of them whose track is not in the catalog. 0, or -1 with err
 * (nothing applied; safe to repeat). */
int history_store(struct qz_pg *pg, struct history_row *rows, size_t nrows, const char *partitions,
                  long *inserted, long *unknown, char *err, size_t err_size);

#endif
