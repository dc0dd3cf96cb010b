/* outbox.h - the tracks.v1 relay: every tracks row version with published_at NULL becomes a
 * TrackEvent.
 *
 * The tracks row is the outbox (DESIGN.md, "Upload atomicity"): an upload, a
 * catalog load or an edit leaves published_at NULL (the tracks_mark_changed
 * trigger clears it on a change), and this relay produces a TrackEvent
 * (op upsert, or delete when deleted_at is set) keyed by track_id, waits for
 * the broker's acknowledgement, and only then sets published_at, in the
 * transaction that claimed the rows (FOR UPDATE SKIP LOCKED: replicas share
 * the work, a row being published is not edited underneath). A crash between
 * the ack and the commit publishes that version again: consumers treat
 * tracks.v1 as upserts, so a repeat is harmless; nothing is ever lost.
 *
 * Wakes on NOTIFY tracks_outbox (sql/030) and sweeps every sweep_ms.
 * Own thread and Postgres connection; producer and registry borrowed. */
#ifndef API_OUTBOX_H
#define API_OUTBOX_H

#include "pg.h"

struct outbox;
struct qz_kafka_producer;
struct prodref;
struct qz_avro_registry;
struct qz_metrics;

struct outbox *outbox_start(const struct qz_pg_opts *pg_opts, const char *topic, long sweep_ms,
                            struct prodref *producer, const struct qz_avro_registry *avro,
                            struct qz_metrics *metrics, char *errstr, size_t errstr_size);
void outbox_stop(struct outbox *o);

/* One sweep (all pending rows, in batches); *published gets the count. 0 or -1. */
int outbox_sweep(struct qz_pg *pg, const char *topic, struct qz_kafka_producer *producer,
                 const struct qz_avro_registry *avro, long *published, char *errstr,
                 size_t errstr_size);

#endif
