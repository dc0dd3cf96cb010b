/* connpool.h - a fixed set of Postgres + Redis connections lent to HTTP handlers one request at a
 * time.
 *
 * qz_pg and qz_redis handles are single-threaded; the handlers run on several
 * libmicrohttpd threads, so each request borrows one slot (both handles) and
 * gives it back. Slots connect lazily and reconnect by themselves (pg.h,
 * redis.h). Thread-safe. Ownership: the pool owns the handles; a borrowed
 * slot is valid until connpool_release. */
#ifndef API_CONNPOOL_H
#define API_CONNPOOL_H

#include "cfg.h"
#include "pg.h"
#include "redis.h"

#include <stddef.h>

struct connpool;
struct connpool_slot {
        struct qz_pg *pg;
        struct qz_redis *redis;
};

struct connpool *connpool_new(size_t n, const struct qz_pg_opts *pg_opts,
                              const struct qz_redis_url *redis_url, int redis_timeout_ms,
                              char *errstr, size_t errstr_size);
void connpool_free(struct connpool *p);
/* Waits up to wait_ms for a free slot; NULL when none came free (answer 503). */
struct connpool_slot *connpool_acquire(struct connpool *p, long wait_ms);
void connpool_release(struct connpool *p, struct connpool_slot *s);

#endif
