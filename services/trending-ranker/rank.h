/* rank.h - the merged counts of every partition and the ranked lists built from them.
 *
 * A merge sums, per track, the counts of the partitions this instance owns (from the window)
 * and of the partitions other instances own (their published partials): partitions hold
 * disjoint users, so the sums are the exact totals. Ranking: trend_score desc, then track id
 * asc, tracks with fewer than 3 plays in 7 d left out.
 *
 * Not thread-safe; the ranking borrows the window for track ids. */
#ifndef TRENDING_RANK_H
#define TRENDING_RANK_H

#include "window.h"

#include <stddef.h>
#include <stdint.h>

struct rank_item {
        uint32_t track;
        double score;
        struct window_counts c;
};

struct rank_merge {
        struct window_counts *totals; /* by track index */
        size_t n, cap;
        int64_t newest_ms; /* newest Kafka timestamp reflected (all partitions) */
};

void rank_merge_reset(struct rank_merge *m, size_t ntracks);
int rank_merge_add(struct rank_merge *m, uint32_t track, const struct window_counts *c);
void rank_merge_free(struct rank_merge *m);

/* Sorted items of every eligible track; *out malloc'd (caller frees). -1 when out of memory. */
int rank_build(const struct rank_merge *m, const struct window *w, struct rank_item **out,
               size_t *n);

/* A partition's counts as a partial (for the merger): header + (id, counts) per non-zero
 * track. *out malloc'd. */
int rank_partial_encode(const struct window *w, int part, int64_t newest_ms, uint8_t **out,
                        size_t *len);
/* Adds a partial into m (interning its track ids in w). -1 when malformed; *bucket gets
 * the partial's current bucket so the merger only sums partials of the same hour. */
int rank_partial_decode(struct window *w, struct rank_merge *m, const uint8_t *buf, size_t len,
                        int64_t *bucket);

#endif
