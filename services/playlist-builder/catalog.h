/* catalog.h - the catalog and CF/content neighbours in memory, and a batch of users' play
 * aggregates, from which the four scheduled types' candidate pools are computed without a query
 * per user.
 *
 * The per-user SQL of gen.c is the definition: every pool computed here is the same list, in the
 * same order, as the statement named beside its function (bench/playlists compares the two paths
 * playlist by playlist; tests/integration/it_playlist_builder.c too). The catalog (tracks and
 * track_similarities) is loaded in one snapshot and reloaded when playlist_catalog_version
 * (sql/051, bumped by triggers on both tables) moves; a batch reads the version first, so a batch
 * never builds from a catalog older than its start. Users' plays come from one query per group
 * of a batch's users (gen.c splits a batch so that one load's rows stay bounded).
 *
 * Ownership: a pl_catalog owns its arrays; a pl_cat_batch owns its users and borrows the catalog
 * it was loaded for (free the batch before reloading). One thread. */
#ifndef PL_CATALOG_H
#define PL_CATALOG_H

#include "rules.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;
struct pl_catalog;

/* One user's plays of one track before "now" (the batch's instant). */
struct pl_cat_pair {
        char id[PL_ID_LEN];
        int32_t track; /* catalog index; -1 = no tracks row */
        int32_t cnt, cnt30;
        bool has_seed; /* a play in the last 90 days */
        bool old;      /* last play more than 60 days ago */
        double recent; /* pl_recent's score: completed 1, skip 0.5, recency-weighted, 30 days */
        double seed;   /* the seeds' weight: recency-weighted, 90 days */
        double fscore; /* pl_forgotten's score */
};

struct pl_cat_user {
        char id[PL_ID_LEN];
        bool known; /* a users row */
        long nplays;
        struct pl_cat_pair *pairs;
        size_t npairs;
        int32_t genres[5], artists[10]; /* the profile: catalog genre / artist indexes */
        size_t ngenres, nartists;
        size_t seeds[50]; /* indexes into pairs, best first */
        size_t nseeds;
};

struct pl_cat_batch {
        struct pl_catalog *cat;
        struct pl_cat_user *users;
        size_t nusers;
        int64_t now_ms;
        int32_t *umap; /* users by id (open addressing, -1 empty) */
        size_t umask;
};

/* Creates an empty catalog; pl_catalog_sync loads it. */
struct pl_catalog *pl_catalog_new(void);
void pl_catalog_free(struct pl_catalog *c);

/* Loads the catalog when it is not loaded or playlist_catalog_version moved. 0, or -1 (errstr;
 * sqlstate: the failure's SQLSTATE, "" when not Postgres'; a missing version row is P0002).
 * *reloaded says whether it read the tables. */
int pl_catalog_sync(struct pl_catalog *c, struct qz_pg *pg, bool *reloaded, char sqlstate[8],
                    char *errstr, size_t errstr_size);
size_t pl_catalog_tracks(const struct pl_catalog *c);
size_t pl_catalog_neighbours(const struct pl_catalog *c);

/* Loads users' play aggregates as of now (one query) and their profiles. tau: recency decay
 * in days, as gen.c passes it ("%g"). 0 or -1 (errstr). */
int pl_cat_batch_load(struct pl_cat_batch *b, struct pl_catalog *c, struct qz_pg *pg,
                      const char *const *user_ids, size_t n, int64_t now_ms, const char *now,
                      const char *tau, char *errstr, size_t errstr_size);
void pl_cat_batch_free(struct pl_cat_batch *b);
/* Each user's plays before now (plays[i] for user_ids[i]; 0 when none): an upper bound of the
 * rows pl_cat_batch_load holds for that user, so a batch can split its users into loads of
 * bounded size. user_ids: distinct and sorted by strcasecmp. 0 or -1 (errstr). */
int pl_cat_batch_plays(struct qz_pg *pg, const char *const *user_ids, size_t n, const char *now,
                       long long *plays, char *errstr, size_t errstr_size);
/* The loaded user (case-insensitive id); NULL when not in the batch. */
const struct pl_cat_user *pl_cat_batch_user(const struct pl_cat_batch *b, const char *user_id);

/* Pools, each the same as its gen.c statement; cw = content similarity's weight. 0 or -1 (no
 * memory). */
int pl_cat_recent(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                  struct pl_pool *out); /* pl_recent */
int pl_cat_neighbours(struct pl_cat_batch *b, const struct pl_cat_user *u, double cw, size_t limit,
                      struct pl_pool *out); /* pl_neighbours */
int pl_cat_artist_tracks(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                         struct pl_pool *out); /* pl_artist_tracks */
/* pl_popular: genres of u (or all when !by_genre); exclude "none", "recent" or "ever". */
int pl_cat_popular(struct pl_cat_batch *b, const struct pl_cat_user *u, bool by_genre,
                   const char *exclude, size_t limit, struct pl_pool *out);
int pl_cat_new_for_you(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                       struct pl_pool *out); /* pl_new_for_you */
int pl_cat_forgotten(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                     struct pl_pool *out); /* pl_forgotten */

/* pl_discovery's rows (unordered): never played, in u's genres, released in the last 90 days,
 * with popularity and the seeds' similarity. *rows is malloc'd (caller frees); -1 on no memory. */
struct pl_cat_disc {
        int32_t track;
        uint64_t key; /* pl_rules_hash(track id, 0), for pl_rules_rand_key */
        double pop, aff;
};
long pl_cat_discovery(struct pl_cat_batch *b, const struct pl_cat_user *u, double cw,
                      struct pl_cat_disc **rows);
/* Orders v so that its first k entries are the k first by (s desc, track asc), sorted; the
 * rest is left in any order. */
struct pl_cat_scored {
        int32_t track;
        double s;
};
void pl_cat_top(struct pl_cat_scored *v, size_t n, size_t k);

const char *pl_cat_track_id(const struct pl_catalog *c, int32_t track);
const char *pl_cat_track_artist(const struct pl_catalog *c, int32_t track);

#endif
