/* checkpoint.h - the window's restart checkpoint in Postgres: per partition, the accepted
 * plays (binary, by hour of played_at) and the next Kafka offset they reflect, saved in one
 * transaction (sql/020_trending_checkpoint.sql).
 *
 * Save appends each owned partition's window journal (the plays accepted since the last save)
 * and sets the offset; restore claims the partitions (bumps their epoch, which fences a
 * previous owner's later saves) and replays the stored plays into the window. After a rebuild
 * (ckpt_mark_full) the first save writes the window's state instead of the journal. Plays older
 * than the 7 d window are deleted by hour; closed hours are compacted into one row.
 *
 * Not thread-safe: the consumer loop's thread owns it. The group/instance strings are copied. */
#ifndef TRENDING_CHECKPOINT_H
#define TRENDING_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;
struct window;
struct ckpt;

#define CKPT_NO_OFFSET INT64_MIN /* partition has no checkpoint */

struct ckpt *ckpt_new(const char *group_id, const char *instance_id, int nparts);
void ckpt_free(struct ckpt *c);

/* Claims the partitions want[p] and loads the stored plays of those with a checkpoint into w
 * (not journaled). offsets[p] gets the next offset to consume, or CKPT_NO_OFFSET when the
 * partition has no checkpoint (the caller rebuilds it). *plays: plays loaded. One transaction;
 * on -1 (errstr) the window may hold part of the plays: drop the partitions and retry. */
int ckpt_restore(struct ckpt *c, struct qz_pg *pg, struct window *w, const bool *want,
                 int64_t *offsets, long *plays, char *errstr, size_t errstr_size);

/* The next save of partition p writes the window's whole state for it (window_export) in
 * place of its stored plays and its journal: after a rebuild, which does not journal the
 * plays it loads. Cleared by that save's commit, by a restore and when p is fenced. */
void ckpt_mark_full(struct ckpt *c, int p);

/* Saves the journal of every owned[p] partition with offsets[p] (the next offset to consume;
 * a negative librdkafka logical offset such as "beginning" is stored as is), then consumes the
 * journal. A partition claimed by another instance meanwhile is skipped (*fenced counts them).
 * *plays: plays written. One transaction; on -1 nothing is saved and the journals are kept. */
int ckpt_save(struct ckpt *c, struct qz_pg *pg, struct window *w, const bool *owned,
              const int64_t *offsets, long *plays, int *fenced, char *errstr, size_t errstr_size);

#endif
