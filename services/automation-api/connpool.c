/* connpool.c - lends Postgres + Redis connection slots to concurrent HTTP handlers. */
#include "connpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct connpool {
        pthread_mutex_t lock;
        pthread_cond_t freed;
        size_t n, nfree;
        struct connpool_slot *slots;
        struct connpool_slot **free_list; /* stack of nfree slots */
};

struct connpool *connpool_new(size_t n, const struct qz_pg_opts *pg_opts,
                              const struct qz_redis_url *redis_url, int redis_timeout_ms,
                              char *errstr, size_t errstr_size)
{
        struct connpool *p = calloc(1, sizeof(*p));
        if (!p || !(p->slots = calloc(n, sizeof(*p->slots))) ||
            !(p->free_list = calloc(n, sizeof(*p->free_list)))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->freed, NULL);
        p->n = n;
        for (size_t i = 0; i < n; i++) {
                if (!(p->slots[i].pg = qz_pg_new(pg_opts, errstr, errstr_size)))
                        goto fail;
                if (!(p->slots[i].redis = qz_redis_new(redis_url, redis_timeout_ms))) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto fail;
                }
                p->free_list[p->nfree++] = &p->slots[i];
        }
        return p;
fail:
        connpool_free(p);
        return NULL;
}

void connpool_free(struct connpool *p)
{
        if (!p)
                return;
        for (size_t i = 0; p->slots && i < p->n; i++) {
                qz_pg_free(p->slots[i].pg);
                qz_redis_free(p->slots[i].redis);
        }
        if (p->slots) {
                pthread_mutex_destroy(&p->lock);
                pthread_cond_destroy(&p->freed);
        }
        free(p->slots);
        free(p->free_list);
        free(p);
}

struct connpool_slot *connpool_acquire(struct connpool *p, long wait_ms)
{
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += wait_ms / 1000;
        deadline.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        struct connpool_slot *s = NULL;
        pthread_mutex_lock(&p->lock);
        while (p->nfree == 0) {
                if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT)
                        break;
        }
        if (p->nfree > 0)
                s = p->free_list[--p->nfree];
        pthread_mutex_unlock(&p->lock);
        return s;
}

void connpool_release(struct connpool *p, struct connpool_slot *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&p->lock);
        p->free_list[p->nfree++] = s;
        pthread_cond_signal(&p->freed);
        pthread_mutex_unlock(&p->lock);
}
