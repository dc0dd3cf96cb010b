/* prodref.h - the service's one Kafka producer, replaceable after a fatal error.
 *
 * An idempotent producer that hit a fatal error cannot produce again; the
 * process keeps running and main.c replaces the producer (as play-ingestor
 * does) instead of exiting. Every user (HTTP handlers, the run and tracks
 * relays, readiness) takes the producer with prodref_get and gives it back
 * with prodref_put around one use: a read lock, so uses run concurrently and
 * the swap waits for the uses in flight (writer-preferring, so a busy server
 * cannot starve it). Records queued in the broken producer are lost to it;
 * their callers saw the error (503, or a relay sweep that retries). */
#ifndef API_PRODREF_H
#define API_PRODREF_H

#include <stdbool.h>
#include <stddef.h>

struct qz_kafka_producer_config;
struct qz_kafka_producer;
struct prodref;

/* Creates the holder and its first producer; the config (and its strings,
 * metrics) is borrowed for the holder's life: renewals use it again. */
struct prodref *prodref_new(const struct qz_kafka_producer_config *pc, char *errstr,
                            size_t errstr_size);
/* The current producer, read-locked until prodref_put. Never NULL. */
struct qz_kafka_producer *prodref_get(struct prodref *r);
void prodref_put(struct prodref *r);
/* For /readyz: a broker is connected and no fatal error. */
bool prodref_ready(struct prodref *r);
/* Replaces the producer when it is broken: 1 replaced, 0 healthy (nothing
 * done), -1 a new one could not be made (errstr; the broken one stays, retry
 * later). Call from one thread (main loop). */
int prodref_renew_if_broken(struct prodref *r, char *errstr, size_t errstr_size);
/* Flushes (up to flush_ms) and closes the producer, frees. NULL ok. */
void prodref_free(struct prodref *r, int flush_ms);

#endif
