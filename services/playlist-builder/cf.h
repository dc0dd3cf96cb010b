/* cf.h - track-to-track similarity: item-item collaborative filtering from co-listening, and
 * content similarity from audio features. Pure computations over integer ids; similarity.c
 * loads the inputs from Postgres and stores the outputs in track_similarities.
 *
 * CF: each (user, track) pair with weight w = log(1 + plays) in the window. Two tracks are
 * similar when the same users play them: cosine of their user vectors, shrunk by the number of
 * common listeners c as c / (c + shrink) so a pair seen by one user does not rank as high as a
 * pair seen by fifty. A user's pairs beyond max_per_user (their most played) are dropped: the
 * cost per user is quadratic in their distinct tracks.
 *
 * Content: features in [0, 1] (tempo / 200 clamped, energy, valence, danceability,
 * acousticness); similarity 1 - distance / sqrt(5), times 1 for the same genre group. Only
 * tracks in one group are compared (the caller groups by genre), which keeps the cost at the sum
 * of the groups' squares.
 *
 * Ownership: *out arrays are malloc'd, the caller frees them. */
#ifndef PL_CF_H
#define PL_CF_H

#include <stddef.h>
#include <stdint.h>

struct pl_cf_pair {
        uint32_t user, track;
        float w;
};

struct pl_cf_nb {
        uint32_t track, similar;
        float score;
};

struct pl_cf_opts {
        size_t k;            /* neighbours kept per track */
        size_t min_common;   /* common listeners needed (>= 1) */
        double shrink;       /* c / (c + shrink); 0 = plain cosine */
        size_t max_per_user; /* 0 = no cap */
};

/* pairs: distinct (user, track); user < nusers, track < ntracks. Returns 0, -1 on no memory. */
int pl_cf_compute(const struct pl_cf_pair *pairs, size_t npairs, uint32_t nusers, uint32_t ntracks,
                  const struct pl_cf_opts *o, struct pl_cf_nb **out, size_t *nout);

#define PL_CF_NFEAT 5
struct pl_cf_feat {
        uint32_t track;
        uint32_t group; /* genre group: only the same group is compared */
        float f[PL_CF_NFEAT];
};
/* Top-k content neighbours with score >= min_score within each group. */
int pl_cf_content(const struct pl_cf_feat *items, size_t n, size_t k, double min_score,
                  struct pl_cf_nb **out, size_t *nout);

#endif
