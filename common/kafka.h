/* kafka.h - Kafka clients: the acknowledged producer and the consume-process-commit loop.
 *
 * Producer (kafka_producer.c): idempotent (enable.idempotence, acks=all). A
 * caller produces a batch and waits until the broker acknowledged each record
 * or a timeout passed, and learns every record's outcome. Thread-safe: many
 * HTTP threads may call qz_kafka_produce_wait() at once; a background thread
 * serves delivery reports.
 *
 * Consumer (kafka_consumer.c): the one loop every consuming service runs.
 * It collects a batch, hands it to the service's callback, and commits exactly
 * that batch's offsets (synchronously) only after the callback returned 0,
 * i.e. after the effect is durable. -1 from the callback means "transient":
 * nothing is committed and the same batch is offered again after an
 * exponential backoff, never skipped. Messages the callback rejects
 * (qz_kafka_batch_reject) go to the DLQ, acknowledged, before their offsets
 * are committed. An out-of-range offset is an incident (error log with the
 * skipped range, metric), then consumption restarts at the earliest offset.
 * The consumer handle is used by one thread (the one running the loop);
 * qz_kafka_consumer_stop() and qz_kafka_consumer_ready() may be called from
 * any thread.
 *
 * Ownership: configs are read during _new() only (strings are copied); the
 * producer passed as dlq_producer, the Avro registry and the metrics registry
 * are borrowed and must outlive the consumer. Record buffers given to
 * qz_kafka_produce_wait() are copied by librdkafka. Message pointers handed to
 * the batch callback are valid until the callback returns. */
#ifndef QZ_KAFKA_H
#define QZ_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_metrics;
struct qz_avro_registry;

/* ---- shared ---------------------------------------------------------- */

/* librdkafka log callback that writes through log.h (set on every handle). */
void qz_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* Number of brokers in state "UP" in a librdkafka statistics JSON, -1 when
 * it does not parse. Bootstrap-only entries count too. */
int qz_kafka_stats_brokers_up(const char *json, size_t len);

/* ---- producer -------------------------------------------------------- */

struct qz_kafka_producer;

struct qz_kafka_producer_config {
        const char *brokers;     /* required: "host:port[,host:port]" */
        const char *client_id;   /* NULL = "qoqnuz" */
        int linger_ms;           /* 0 = 5 */
        int delivery_timeout_ms; /* librdkafka gives up on a record after this; 0 = 30000 */
        int queue_max_messages;  /* local queue bound; 0 = 100000 */
        int queue_full_wait_ms;  /* how long a produce waits for room before QUEUE_FULL; 0 = 50 */
        struct qz_metrics *metrics; /* NULL = none; else qz_kafka_produced_total{result} */
};

#define QZ_KAFKA_PARTITION_ANY (-1) /* partition by key (murmur2, like the Java client) */

struct qz_kafka_record {
        /* in */
        const char *topic;
        int32_t partition; /* QZ_KAFKA_PARTITION_ANY */
        const void *key;   /* NULL = no key */
        size_t key_len;
        const void *value;
        size_t value_len;
        /* out: set by qz_kafka_produce_wait */
        rd_kafka_resp_err_t err; /* 0 = acknowledged by the broker */
        int32_t out_partition;
        int64_t out_offset;
};

enum qz_kafka_status {
        QZ_KAFKA_OK = 0,      /* every record acknowledged */
        QZ_KAFKA_QUEUE_FULL,  /* local queue full: shed load (HTTP 429) */
        QZ_KAFKA_UNAVAILABLE, /* not all acknowledged in time, broker down, producer broken
                               * (HTTP 503). Unacknowledged records may still be delivered
                               * later: consumers dedup by id. */
        QZ_KAFKA_REJECTED,    /* a record was refused for good (too large, unknown topic) */
};

int qz_kafka_producer_new(const struct qz_kafka_producer_config *cfg,
                          struct qz_kafka_producer **out, char *errstr, size_t errstr_size);
/* Produces recs[0..n) and waits up to timeout_ms for every acknowledgement.
 * Fills each record's err/out_partition/out_offset (err RD_KAFKA_RESP_ERR__TIMED_OUT
 * when the wait ended first, __QUEUE_FULL when it was never queued). Returns
 * the worst status: QUEUE_FULL > UNAVAILABLE > REJECTED > OK, with errstr
 * describing the first failed record. */
enum qz_kafka_status qz_kafka_produce_wait(struct qz_kafka_producer *p,
                                           struct qz_kafka_record *recs, size_t n, int timeout_ms,
                                           char *errstr, size_t errstr_size);
/* For /readyz: a broker is connected and no fatal error happened. */
bool qz_kafka_producer_ready(struct qz_kafka_producer *p);
/* A fatal (idempotence) error happened: the producer must be recreated. */
bool qz_kafka_producer_broken(struct qz_kafka_producer *p);
/* The librdkafka handle, e.g. for metadata queries. Owned by p. */
rd_kafka_t *qz_kafka_producer_handle(struct qz_kafka_producer *p);
/* Flushes for up to flush_timeout_ms, logs how many records are left
 * (they are lost), destroys. No produce may be running. NULL is a no-op. */
void qz_kafka_producer_close(struct qz_kafka_producer *p, int flush_timeout_ms);

/* ---- consumer -------------------------------------------------------- */

struct qz_kafka_consumer;
struct qz_kafka_batch; /* the callback's handle for rejections */

struct qz_kafka_msg {
        const char *topic;
        int32_t partition;
        int64_t offset;
        const void *key; /* NULL when the message has none */
        size_t key_len;
        const void *value;
        size_t value_len;
        int64_t timestamp_ms; /* -1 when unknown */
};

/* Makes the effect of msgs[0..n) durable; 0 = done (commit), -1 = transient
 * failure (retry the same batch later). Runs on the loop's thread. */
typedef int (*qz_kafka_batch_cb)(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                                 struct qz_kafka_batch *batch);

/* Marks msgs[index] as poison: after the callback returns 0 it is written to
 * the DLQ (RejectedEvent with reason and the optional errors list, copied)
 * before the batch is committed. Marks made during a failed attempt are
 * forgotten. -1 when no DLQ is configured or index is out of range (the
 * message is then not rejected: handle it or fail the batch). */
int qz_kafka_batch_reject(struct qz_kafka_batch *batch, size_t index, const char *reason,
                          const char *const *errors, size_t nerrors);

struct qz_kafka_consumer_config {
        const char *brokers;  /* required */
        const char *group_id; /* required */
        const char *const *topics;
        size_t ntopics;
        const char *service;    /* required: client.id, DLQ "service" field */
        size_t batch_size;      /* 0 = 500 */
        int batch_wait_ms;      /* max wait to fill a batch after its first message; 0 = 200 */
        int session_timeout_ms; /* 0 = 6000 (the dev-broker needs about that) */
        /* Longest time one batch may take before the group evicts us; 0 =
         * librdkafka's 300000. Raise it for long jobs (the jobs runner does). */
        int max_poll_interval_ms;
        /* fetch.wait.max.ms: how long the broker may hold a fetch with no new data; 0 =
         * librdkafka's 500. A broker that does not answer a held fetch when data arrives
         * (the dev-broker's mock cluster) adds up to this to every message's latency. */
        int fetch_wait_max_ms;
        int retry_min_ms;    /* first backoff after a failed batch; 0 = 100 */
        int retry_max_ms;    /* backoff cap; 0 = 10000 */
        int lag_interval_ms; /* lag gauge refresh; 0 = 5000 */
        /* DLQ: all three set, or none (then rejecting is refused). */
        struct qz_kafka_producer *dlq_producer;
        const struct qz_avro_registry *avro;
        const char *dlq_topic;
        int dlq_timeout_ms;         /* wait for the DLQ ack; 0 = 10000 */
        struct qz_metrics *metrics; /* NULL = none */
        /* Called on the loop's thread at most every idle_interval_ms (0 = 1000)
         * while no message arrives: the place to ping Postgres or Redis so a
         * dependency that came back is noticed (and readiness turns true)
         * without waiting for traffic. NULL = none. */
        void (*idle_cb)(void *idle_opaque);
        void *idle_opaque;
        int idle_interval_ms;
        /* Rebalance hooks (NULL = none), on the loop's thread. assign_cb runs when partitions
         * are assigned, before they are consumed: a service that keeps its own offsets (e.g.
         * with a state checkpoint) restores its state and sets parts->elems[i].offset; an
         * offset it leaves alone keeps the loop's choice (committed, else the beginning).
         * revoke_cb runs when partitions are revoked or lost, after their uncollected
         * messages were dropped, so the service can forget their state. */
        void (*assign_cb)(void *rebalance_opaque, rd_kafka_topic_partition_list_t *parts);
        void (*revoke_cb)(void *rebalance_opaque, const rd_kafka_topic_partition_list_t *parts);
        void *rebalance_opaque;
};

int qz_kafka_consumer_new(const struct qz_kafka_consumer_config *cfg,
                          struct qz_kafka_consumer **out, char *errstr, size_t errstr_size);
/* Runs the loop until qz_sig_stop_requested() or qz_kafka_consumer_stop().
 * A batch in progress is finished (or, when still failing, left uncommitted
 * for replay) before it returns. 0 on a clean stop, -1 on a fatal consumer
 * error (errstr says which). */
int qz_kafka_consumer_run(struct qz_kafka_consumer *c, qz_kafka_batch_cb cb, void *opaque,
                          char *errstr, size_t errstr_size);
/* Asks the loop to return (thread-safe). */
void qz_kafka_consumer_stop(struct qz_kafka_consumer *c);
/* For /readyz: joined the group and some broker is up. Thread-safe. */
bool qz_kafka_consumer_ready(struct qz_kafka_consumer *c);
/* Leaves the group (consumer close), then destroys. NULL is a no-op. */
void qz_kafka_consumer_close(struct qz_kafka_consumer *c);

#endif
