/* requests.h - playlists.requests.v1 batches: build each requested playlist, store it, then
 * announce it on playlists.generated.v1.
 *
 * Per request: decode (undecodable or invalid ids -> DLQ), build (gen.c), store the playlist or
 * the failure with its notification (store.c, one transaction). After the whole batch, one
 * PlaylistGenerated per stored playlist is produced and acknowledged; only then does the batch
 * callback return 0 and the loop commit offsets. A lost Postgres connection or an unacknowledged
 * produce returns -1: the batch is offered again, requests already stored are recognised by
 * request_id and only their events are sent again (at least once; consumers dedup by
 * request_id).
 *
 * Ownership: borrows everything it is given; runs on the consumer loop's thread. */
#ifndef PL_REQUESTS_H
#define PL_REQUESTS_H

#include "gen.h"
#include "kafka.h"

struct qz_pg;
struct qz_avro_registry;
struct qz_metrics;
struct pl_requests;

struct pl_requests_cfg {
        struct qz_pg *pg;
        struct pl_gen *gen;
        const struct qz_avro_registry *avro;
        struct qz_kafka_producer *producer;
        const char *generated_topic;
        struct qz_metrics *metrics;
};

struct pl_requests *pl_requests_new(const struct pl_requests_cfg *cfg, char *errstr,
                                    size_t errstr_size);
void pl_requests_free(struct pl_requests *r);
int pl_requests_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                         struct qz_kafka_batch *batch);

#endif
