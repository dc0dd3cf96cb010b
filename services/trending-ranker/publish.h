/* publish.h - the ranked lists into Redis (the frontend's contract, docs/redis-keys.md) and
 * the top 100 into Postgres trending_tracks.
 *
 * Redis: qoqnuz:trending:global and qoqnuz:trending:genre:<genre> (ZSET, top max_list),
 * qoqnuz:trending:track:<id> (HASH) for every listed track, qoqnuz:trending:meta (HASH), all
 * swapped in atomically (common/redis_swap.h); keys of the previous publish that are no longer
 * listed are deleted in the same swap. Postgres: the table's rows replaced in one transaction.
 * Not thread-safe. */
#ifndef TRENDING_PUBLISH_H
#define TRENDING_PUBLISH_H

#include "rank.h"

#include <stddef.h>
#include <stdint.h>

struct qz_redis;
struct qz_pg;
struct qz_catalog;
struct publish;

struct publish *publish_new(struct qz_redis *r, const char *tmp_prefix, size_t max_list);
void publish_free(struct publish *p);
/* calculated_at_ms: the "now" of the ranking. 0 or -1 (errstr). */
int publish_redis(struct publish *p, const struct window *w, const struct qz_catalog *cat,
                  const struct rank_item *items, size_t n, int64_t calculated_at_ms,
                  const char *source, char *errstr, size_t errstr_size);
/* A trending_tracks row, free of the window (the job writes it from another thread). */
struct publish_row {
        uint8_t id[16];
        double score;
        struct window_counts c;
};
/* rows[0..n) replace trending_tracks in one transaction. */
int publish_pg(struct qz_pg *pg, const struct publish_row *rows, size_t n, int64_t calculated_at_ms,
               char *errstr, size_t errstr_size);

#endif
