/* rules.h - the pure selection rules of every playlist: ranking, 60/40 interleaving, dedup,
 * artist spacing, fallback filling, seeded randomness and A/B variant assignment.
 *
 * Nothing here touches Postgres or Kafka: gen.c loads candidate pools with SQL and hands them to
 * pl_rules_assemble(), so each rule is unit-testable (tests/unit/test_playlist_rules.c).
 *
 * Ownership: pools own their candidate arrays (pl_pool_free); pl_rules_assemble writes into a
 * caller-allocated output array of at least `target` entries. Not thread-safe per pool. */
#ifndef PL_RULES_H
#define PL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_ID_LEN 37 /* a UUID and its NUL */

struct pl_cand {
        char track_id[PL_ID_LEN];
        char artist_id[PL_ID_LEN];
        double score;
        int source; /* index of the pool it came from (metadata "sources") */
};

struct pl_pool {
        const char *name; /* e.g. "recent", "similar", "fallback_genre" (a literal) */
        struct pl_cand *c;
        size_t n, cap;
};

int pl_pool_push(struct pl_pool *p, const char *track_id, const char *artist_id, double score);
void pl_pool_free(struct pl_pool *p);
/* Score descending, then track_id ascending: a total order, so results are reproducible. */
void pl_rules_sort(struct pl_cand *c, size_t n);

/* How pools become one list.
 * The first nshared pools share the playlist by `shares` (e.g. daily_mix: recent 0.6,
 * similar 0.4): positions are handed out so each pool stays closest to its share all along
 * the list (R S R S R R S ...), and when a pool runs dry the others take its places. The
 * remaining pools (fallbacks) then fill up to target in their order. Every pool is taken in
 * its own order (sort it first). A track appears once; tracks in `exclude` never. */
struct pl_assembly {
        const struct pl_pool *pools;
        size_t npools;
        const double *shares; /* nshared entries, > 0 */
        size_t nshared;
        size_t target;
        const char *const *exclude; /* track ids; may be NULL */
        size_t nexclude;
};
/* Writes up to target candidates to out (each with .source = its pool index) and the count per
 * pool to per_pool (npools entries; may be NULL). Returns the number written; -1 on no memory. */
long pl_rules_assemble(const struct pl_assembly *a, struct pl_cand *out, size_t *per_pool);

/* Reorders items so no two neighbours share an artist where some order allows it: a repeat is
 * replaced by the next later item of another artist (the rest keep their order); an item that
 * cannot move forward is moved back to the first gap between two other artists. Returns the
 * number of same-artist neighbours left. */
size_t pl_rules_space_artists(struct pl_cand *items, size_t n);
size_t pl_rules_artist_repeats(const struct pl_cand *items, size_t n);

/* ISO 8601 week (Monday first; week 1 holds the first Thursday) of a UTC time; *weekday is
 * 1 (Monday) .. 7 (Sunday). */
void pl_rules_iso_week(int64_t ms, int *iso_year, int *iso_week, int *weekday);
/* The discovery seed: a 64-bit hash of "user_id/YYYY-Www", so a user's list is the same all week
 * on every builder instance and differs between users and weeks. */
uint64_t pl_rules_seed(const char *user_id, int iso_year, int iso_week);
/* A uniform number in [0, 1) for (seed, track): independent of candidate order. Equal to
 * pl_rules_rand_key(seed, pl_rules_hash(track_id, 0)): the catalog keeps each track's hash, so
 * the discovery scoring of thousands of candidates per user does not rehash their ids. */
double pl_rules_rand(uint64_t seed, const char *track_id);
double pl_rules_rand_key(uint64_t seed, uint64_t track_key);
uint64_t pl_rules_hash(const char *s, uint64_t h);

/* A/B assignment. spec: "variant:weight,variant:weight" (weights > 0); a user lands in a
 * variant by a hash of "salt/user_id", deterministic across instances and restarts. Writes the
 * variant into out. -1 (errstr) on a malformed spec. With out == NULL only validates. */
int pl_rules_variant(const char *spec, const char *salt, const char *user_id, char *out,
                     size_t out_size, char *errstr, size_t errstr_size);

#endif
