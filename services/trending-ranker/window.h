/* window.h - exact sliding 24 h / 7 d play and unique-listener counts per track, by event time.
 *
 * Time is cut into buckets of bucket_ms (default one hour). With cur = floor(now / bucket_ms),
 * the 24 h window holds the buckets b >= cur - 24h/bucket_ms and the 7 d window the buckets
 * b >= cur - 7d/bucket_ms, with no upper bound (a play slightly in the future counts, like the
 * guide's `played_at > now() - interval`). When now is on a bucket boundary this is exactly
 * `played_at >= now - 24 h` (resp. 7 d); between boundaries the window reaches back to the
 * start of the bucket 24 h before the current one.
 *
 * Exactness: every accepted play is logged in its bucket as (track, user); each (track, user)
 * pair remembers the bucket of its latest play, so a listener is counted while that bucket is
 * inside the window. Counters per (partition, track) are kept incrementally: a play costs O(1),
 * moving `now` into a new bucket costs O(plays leaving a window). Event ids are remembered for
 * the 7 d window (plus the future slack), so a repeated event_id is counted once.
 *
 * State is kept per Kafka partition: plays are keyed by user, so partitions hold disjoint users
 * and the per-partition counts of a track simply add up (the exact merge across instances).
 *
 * Not thread-safe: one thread owns a window. Ids are 16-byte binary UUIDs, copied. */
#ifndef TRENDING_WINDOW_H
#define TRENDING_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WINDOW_HOUR_MS   3600000LL
#define WINDOW_24H_MS    (24 * WINDOW_HOUR_MS)
#define WINDOW_7D_MS     (7 * WINDOW_24H_MS)
#define WINDOW_MAX_PARTS 256
#define WINDOW_FUTURE_MS WINDOW_24H_MS /* plays further ahead than this are refused */

struct window;

struct window_counts {
        uint32_t plays_24h, plays_7d, listeners_24h, listeners_7d;
};

/* A play as accepted (what the checkpoint journal and the rebuild carry). */
struct window_play {
        uint8_t event_id[16], user_id[16], track_id[16];
        int64_t played_at_ms;
};

enum window_result {
        WINDOW_ADDED,
        WINDOW_DUPLICATE, /* event_id already counted */
        WINDOW_TOO_OLD,   /* before the 7 d window: dropped */
        WINDOW_TOO_NEW,   /* more than WINDOW_FUTURE_MS ahead: dropped */
};

/* bucket_ms must divide 24 h. now_ms sets the first current bucket. NULL on bad input/OOM. */
struct window *window_new(int64_t bucket_ms, int nparts, int64_t now_ms);
void window_free(struct window *w);

/* Counts one play into partition part (0 <= part < nparts). With journal true an added play
 * is also appended to the partition's journal (for the next checkpoint). */
enum window_result window_add(struct window *w, int part, const struct window_play *p,
                              bool journal);
/* A hint for bulk loads: starts fetching the table slots window_add(w, part, p) will touch, so
 * calling it a few plays ahead overlaps their cache misses (the big tables are probed at
 * random; waiting for each miss in turn is most of a rebuild's time). Changes nothing. */
void window_prefetch(const struct window *w, int part, const struct window_play *p);
/* The first stage, a few plays further ahead: window_prefetch itself looks the track and user
 * ids up (to find the pair's slot); this starts loading those lookups' slots. */
void window_prefetch_ids(const struct window *w, const struct window_play *p);
/* Sizes partition part's tables (and with journal its journal) for plays more plays, so a bulk
 * load (rebuild, restore) does not grow them step by step. A hint: adding more still works.
 * -1 when out of memory (the window is unchanged but may hold the larger tables). */
int window_reserve(struct window *w, int part, size_t plays, bool journal);
/* Moves now forward (never back) and expires what left the windows. */
void window_advance(struct window *w, int64_t now_ms);
/* Forgets a partition entirely (revoked: its next owner restores it). */
void window_drop_part(struct window *w, int part);

int64_t window_cur_bucket(const struct window *w);
int64_t window_bucket_ms(const struct window *w);
int window_nparts(const struct window *w);
/* True when the partition holds state (it was added to since its last drop). */
bool window_part_active(const struct window *w, int part);
/* Marks a partition active without a play (assigned, empty). */
void window_part_activate(struct window *w, int part);

/* Tracks are interned: index 0..window_ntracks()-1, stable for the window's life. */
size_t window_ntracks(const struct window *w);
const uint8_t *window_track_id(const struct window *w, uint32_t idx);
/* Index of a track id, interning it; -1 only when out of memory. */
int64_t window_track_intern(struct window *w, const uint8_t id[16]);
/* The partition's counts, indexed by track; *n is how many entries are valid (tracks beyond
 * *n are zero). NULL (and *n 0) for an inactive partition. */
const struct window_counts *window_part_counts(const struct window *w, int part, size_t *n);

/* Accepted plays since the last window_journal_consume (in order). */
const struct window_play *window_journal(const struct window *w, int part, size_t *n);
/* Drops the first n journal entries (they were checkpointed). */
void window_journal_consume(struct window *w, int part, size_t n);

/* The partition's plays as the window holds them, for a checkpoint written from the window's
 * own state (a rebuild does not journal its plays: a journal of the whole window is 56 bytes
 * per play of fresh memory to fault in and fill). Bucket by bucket, oldest first, calls
 * emit(arg, plays, n) with that bucket's plays: played_at is the bucket's start (the window
 * keeps no finer time), and the bucket's event ids are paired with its (track, user) entries
 * in no particular order. Re-adding them to an empty window with the same bucket width gives
 * the same counts, pairs and event-id dedup (which is all a play's fields mean to the window),
 * not the original (event, user, track) records. -1 when out of memory, when the window's
 * tables disagree (never expected) or when emit returns non-zero. */
int window_export(const struct window *w, int part,
                  int (*emit)(void *arg, const struct window_play *plays, size_t n), void *arg);

struct window_stats {
        uint64_t plays_7d;      /* plays inside the 7 d window, all partitions */
        uint64_t pairs;         /* distinct (track, user) pairs inside the 7 d window */
        uint64_t event_ids;     /* event ids remembered for dedup */
        uint64_t users, tracks; /* interned ids */
        uint64_t bytes;         /* memory held by the window's tables and logs */
};
void window_stats(const struct window *w, struct window_stats *out);

/* The trend score the guide's users know; 0 when the track has fewer than 3 plays in 7 d. */
double window_score(const struct window_counts *c);

#endif
