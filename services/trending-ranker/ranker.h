/* ranker.h - the trending-ranker's engine: plays.v1 batches into the window, the window (and
 * the partials of other instances) into Redis every publish interval and into trending_tracks
 * on an interval and on the calculate-trending job; partition assignment rebuilds state.
 *
 * Scaling: with all partitions assigned, an instance publishes from its own window. With a
 * share of them, it writes each owned partition's counts as a partial
 * (qoqnuz:trending:internal:partial:<group>:<p>), and the instance holding the merger lock
 * (qoqnuz:trending:internal:merger:<group>) sums the partials of every partition (exact:
 * partitions hold disjoint users) and publishes. A partition without a fresh partial, or one
 * of another hour bucket, holds the publish back (never a partial sum).
 *
 * Everything runs on the consumer loop's thread (batch, idle and rebalance callbacks) except
 * the job function (jobs runner thread, own Postgres handle), which reads the last merged
 * ranking under a mutex. */
#ifndef TRENDING_RANKER_H
#define TRENDING_RANKER_H

#include "kafka.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct qz_pg;
struct qz_redis;
struct qz_metrics;
struct qz_avro_registry;
struct qz_job_result;
struct ranker;

struct ranker_config {
        int nparts;              /* partitions of the plays topic */
        int64_t bucket_ms;       /* window bucket width */
        int64_t fixed_now_ms;    /* 0 = the wall clock (tests pin "now") */
        bool now_moves;          /* "now" starts at fixed_now_ms and moves with the clock */
        long publish_ms;         /* Redis publish interval */
        long refresh_ms;         /* full rewrite of unchanged lists at least this often */
        long snapshot_ms;        /* trending_tracks interval */
        long checkpoint_ms;      /* window + offsets checkpoint interval */
        long max_list;           /* ZSET length */
        long pg_top;             /* trending_tracks rows */
        const char *group_id;    /* names the partial and lock keys */
        const char *instance_id; /* unique per process */
        const char *topic;
};

struct ranker *ranker_new(const struct ranker_config *cfg, struct qz_pg *pg, struct qz_redis *redis,
                          const struct qz_avro_registry *avro, struct qz_metrics *metrics);
void ranker_free(struct ranker *r);

/* qz_kafka consumer callbacks; opaque = the ranker. */
int ranker_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                    struct qz_kafka_batch *batch);
void ranker_idle_cb(void *opaque);
void ranker_assign_cb(void *opaque, rd_kafka_topic_partition_list_t *parts);
void ranker_revoke_cb(void *opaque, const rd_kafka_topic_partition_list_t *parts);

/* The calculate-trending job (qz_job_fn): the current merged ranking into trending_tracks. */
int ranker_job_calculate(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                         struct qz_job_result *res, char *errstr, size_t errstr_size);

/* Readiness: Redis reachable and the last publish succeeded recently. Any thread. */
bool ranker_redis_ok(struct ranker *r);

#endif
