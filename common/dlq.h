/* dlq.h - the dead-letter helper: a rejected message as a RejectedEvent on a DLQ topic.
 *
 * Every consumer that gives up on a message (poison, used-up attempts) writes
 * it here, keyed by the original key, and waits for the broker's
 * acknowledgement: a DLQ write that fails must make the caller retry, never
 * commit past the message. The value is Avro (schemas/RejectedEvent.avsc) in
 * single-object encoding.
 *
 * Ownership: events and their buffers are borrowed for the call; *out from
 * qz_dlq_encode is malloc'd and the caller frees it. Thread-safe. */
#ifndef QZ_DLQ_H
#define QZ_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "kafka.h"

struct qz_avro_registry;

struct qz_dlq_event {
        const char *original_topic;
        int32_t original_partition;
        int64_t original_offset;
        const void *original_key; /* NULL = the message had no key */
        size_t original_key_len;
        const void *original_value;
        size_t original_value_len;
        const char *reason;        /* short machine-readable cause: decode_error, max_attempts */
        const char *const *errors; /* NULL = none (null in the record); else nerrors strings */
        size_t nerrors;
        const char *service;    /* who rejected it */
        int64_t rejected_at_ms; /* 0 = now */
};

/* Encodes ev as a RejectedEvent (single-object Avro). */
int qz_dlq_encode(const struct qz_avro_registry *reg, const struct qz_dlq_event *ev,
                  unsigned char **out, size_t *out_len, char *errstr, size_t errstr_size);

/* Encodes evs[0..n) and produces them to dlq_topic (key = original key),
 * waiting up to timeout_ms for every acknowledgement. 0 when all were
 * acknowledged, -1 otherwise (nothing may be committed then). */
int qz_dlq_send(struct qz_kafka_producer *p, const struct qz_avro_registry *reg,
                const char *dlq_topic, const struct qz_dlq_event *evs, size_t n, int timeout_ms,
                char *errstr, size_t errstr_size);

#endif
