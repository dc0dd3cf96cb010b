/* counts.h - a batch's counter deltas summed in C: per user (plays, ms, UTC hour and weekday)
 * and per (user, track).
 *
 * The direct ingest path (history.c) stores a batch in which every play is new, so the
 * counters grow by exactly the batch's own sums; summing here instead of in SQL saves the
 * RETURNING set and its GROUP BYs, and the sums go to Postgres in one COPY each
 * (sql/012_listening_stats_direct.sql). Keys are lower-cased uuid text, so two spellings of
 * one uuid are one key (Postgres would otherwise see two rows for one counter in a statement).
 * Output is sorted by key (= uuid order), the order the upserts take their rows in.
 *
 * Ownership: counts_build fills *out with arrays it allocates; counts_free frees them. Pure;
 * no I/O. */
#ifndef COUNTS_H
#define COUNTS_H

#include <stddef.h>
#include <stdint.h>

struct history_row;

struct counts_user {
        char user_id[37];
        long long plays, ms;
        long long hour[24]; /* UTC hour of played_at */
        long long day[7];   /* UTC weekday, 0 = Sunday (Postgres extract(dow)) */
};

struct counts_pair {
        char user_id[37], track_id[37];
        long long plays;
};

struct counts {
        struct counts_user *users;
        size_t nusers;
        struct counts_pair *pairs;
        size_t npairs;
};

/* UTC hour (0..23) and weekday (0 = Sunday) of a time in ms since the epoch, any sign. */
void counts_hour_day(int64_t ms, int *hour, int *day);

/* Sums rows[0..n) (their user_id, track_id, played_ms and duration_ms). 0, or -1 with errstr
 * (out of memory; *out is then empty). */
int counts_build(const struct history_row *rows, size_t n, struct counts *out, char *errstr,
                 size_t errstr_size);
void counts_free(struct counts *c);

#endif
