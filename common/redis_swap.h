/* redis_swap.h - publish a set of Redis keys as one atomic change: write aside, then swap.
 *
 * The caller names each final key it publishes and writes its new content into the temporary
 * key handed back (through qz_redis_append* on the same handle); commit sends those writes,
 * then one MULTI/EXEC that RENAMEs every temporary key over its final key and DELetes the
 * keys the caller declares stale. A reader therefore sees either the whole old set or the
 * whole new set, never a half-written list. A key whose temporary was left empty (an empty
 * ZSET is no key in Redis) is deleted in the same transaction. On any failure nothing final
 * is touched; the temporaries are dropped on the next attempt.
 *
 * Ownership: a swap borrows the Redis handle; key strings are copied. Not thread-safe. */
#ifndef QZ_REDIS_SWAP_H
#define QZ_REDIS_SWAP_H

#include <stddef.h>

struct qz_redis;
struct qz_redis_swap;

/* tmp_prefix must be unique per writer (e.g. "qoqnuz:trending:tmp:<instance>:"). */
struct qz_redis_swap *qz_redis_swap_new(struct qz_redis *r, const char *tmp_prefix);
/* Starts the key: queues DEL of its temporary and returns the temporary's name (valid until
 * commit/abort). NULL when out of memory. */
const char *qz_redis_swap_key(struct qz_redis_swap *s, const char *final_key);
/* A final key to delete in the swap (it is not part of the new set). */
int qz_redis_swap_delete(struct qz_redis_swap *s, const char *final_key);
/* Sends the queued writes, then the atomic swap. 0 or -1 (errstr). Resets the swap. */
int qz_redis_swap_commit(struct qz_redis_swap *s, char *errstr, size_t errstr_size);
void qz_redis_swap_free(struct qz_redis_swap *s);

#endif
