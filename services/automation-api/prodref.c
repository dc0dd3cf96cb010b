/* prodref.c - the replaceable Kafka producer shared by the API, the relays and readiness. */
#include "prodref.h"

#include "kafka.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct prodref {
        pthread_rwlock_t lock; /* read: one use; write: the swap */
        struct qz_kafka_producer *producer;
        const struct qz_kafka_producer_config *pc;
};

struct prodref *prodref_new(const struct qz_kafka_producer_config *pc, char *errstr,
                            size_t errstr_size)
{
        struct prodref *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        pthread_rwlockattr_t attr;
        pthread_rwlockattr_init(&attr);
        /* glibc prefers readers by default: a steady stream of requests would starve the swap */
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        int rc = pthread_rwlock_init(&r->lock, &attr);
        pthread_rwlockattr_destroy(&attr);
        if (rc != 0) {
                snprintf(errstr, errstr_size, "cannot create the producer lock");
                free(r);
                return NULL;
        }
        r->pc = pc;
        if (qz_kafka_producer_new(pc, &r->producer, errstr, errstr_size) != 0) {
                pthread_rwlock_destroy(&r->lock);
                free(r);
                return NULL;
        }
        return r;
}

struct qz_kafka_producer *prodref_get(struct prodref *r)
{
        pthread_rwlock_rdlock(&r->lock);
        return r->producer;
}

void prodref_put(struct prodref *r)
{
        pthread_rwlock_unlock(&r->lock);
}

bool prodref_ready(struct prodref *r)
{
        bool ok = qz_kafka_producer_ready(prodref_get(r));
        prodref_put(r);
        return ok;
}

int prodref_renew_if_broken(struct prodref *r, char *errstr, size_t errstr_size)
{
        bool broken = qz_kafka_producer_broken(prodref_get(r));
        prodref_put(r);
        if (!broken)
                return 0;
        /* made outside the lock: creating a client takes a moment, uses go on meanwhile */
        struct qz_kafka_producer *fresh = NULL;
        if (qz_kafka_producer_new(r->pc, &fresh, errstr, errstr_size) != 0)
                return -1;
        pthread_rwlock_wrlock(&r->lock);
        struct qz_kafka_producer *old = r->producer;
        r->producer = fresh;
        pthread_rwlock_unlock(&r->lock);
        qz_kafka_producer_close(old, 0); /* nothing it holds can be delivered any more */
        return 1;
}

void prodref_free(struct prodref *r, int flush_ms)
{
        if (!r)
                return;
        qz_kafka_producer_close(r->producer, flush_ms);
        pthread_rwlock_destroy(&r->lock);
        free(r);
}
