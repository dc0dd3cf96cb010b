/* similarity.h - the compute-track-similarities job: co-listening CF and content similarity into
 * track_similarities.
 *
 * CF (kind 'cf'): every (user, track) pair of the last window_days of plays on live tracks,
 * weight log(1 + plays), cosine with shrinkage, top k per track (cf.h). Content (kind
 * 'content'): tracks with track_features (tempo and energy at least; a missing valence,
 * danceability or acousticness counts as 0.5), compared within their genre
 * (track_features.genre, else the track's first genre). Each kind is replaced as a whole in one
 * transaction, so readers see the old or the new set; then playlist_catalog_version is bumped
 * in a transaction of its own (sql/052: the rule for every writer of track_similarities).
 * Without any track_features the content rows are left as they are and the run says so: CF
 * alone still works. The CF window ends now, or at the job's param "as_of" (the offline
 * evaluation's cut-off).
 *
 * Ownership: the config is borrowed. */
#ifndef PL_SIMILARITY_H
#define PL_SIMILARITY_H

#include "jobs.h"

#include <stddef.h>

struct pl_similarity_cfg {
        long k;
        long window_days;
        long min_common;
        double shrink;
        long max_per_user;
};

/* The computation itself; as_of (a timestamptz literal, NULL = now) ends the CF window, so the
 * offline evaluation can build neighbours from the plays before its cut-off. Content
 * similarity has no time. */
int pl_similarity_compute(const struct pl_similarity_cfg *cfg, struct qz_pg *pg, const char *as_of,
                          struct qz_job_result *res, char *errstr, size_t errstr_size);

/* The job; param "as_of" (optional timestamptz) as above. */
int pl_similarity_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                      struct qz_job_result *res, char *errstr, size_t errstr_size);

#endif
