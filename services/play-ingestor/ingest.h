/* ingest.h - the POST /v1/plays handler: auth, validation, Avro, produce, answer.
 *
 * By default the handler answers 202 only after the broker acknowledged every
 * valid play of the request (acks=all, idempotent producer). When any of them
 * could not be acknowledged it answers 503 (or 429 when the local queue is
 * full) with Retry-After, so the player retries with the same event_ids;
 * plays that did reach Kafka are deduplicated downstream by event_id. With
 * ack_on_enqueue the 202 comes once the plays are in the producer's queue
 * (lowest latency; a play can then be lost if the process dies or the broker
 * stays away longer than the delivery timeout): see docs/play-ingestor.md.
 * Whatever the mode, no broker reachable means 503 at once.
 *
 * Threads: the handler runs on the HTTP server's threads. The producer can be
 * replaced by ingest_producer_swap() while requests run (an rwlock guards it).
 *
 * Ownership: the ctx borrows the Avro registry, the metrics registry and the
 * catalog (may be NULL: no unknown-track counting); it
 * owns the producer given to ingest_new()/ingest_producer_swap() and closes it
 * in ingest_free(). */
#ifndef INGEST_H
#define INGEST_H

#include "http.h"
#include "kafka.h"

#include <stdbool.h>
#include <stddef.h>

struct qz_avro_registry;
struct qz_metrics;
struct trackset;

struct ingest_config {
        const char *jwt_secret;
        const char *topic;
        long max_items;
        long ack_timeout_ms;
        long horizon_days;
        long max_future_s;
        bool ack_on_enqueue; /* 202 after enqueue instead of after the broker's ack */
};

struct ingest;

struct ingest *ingest_new(const struct ingest_config *cfg, const struct qz_avro_registry *avro,
                          struct qz_metrics *metrics, struct trackset *catalog,
                          struct qz_kafka_producer *producer, char *errstr, size_t errstr_size);
void ingest_free(struct ingest *in);
/* Replaces a broken producer with a fresh one (closes the old one). */
void ingest_producer_swap(struct ingest *in, struct qz_kafka_producer *fresh);
bool ingest_producer_broken(struct ingest *in);
/* For /readyz. */
bool ingest_ready_cb(void *opaque, json_t *checks);
/* The POST /v1/plays route handler; opaque is the struct ingest. */
void ingest_plays_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                     void *opaque);

#endif
