/* cleanup.h - the cleanup-expired-playlists job: expired playlists, old generations and request
 * log rows go.
 *
 * Deletes smart_playlists past expires_at, smart_playlist_generations older than 90 days (the
 * A/B attribution window) and playlist_requests_done older than 7 days. Idempotent. */
#ifndef PL_CLEANUP_H
#define PL_CLEANUP_H

#include "jobs.h"

int pl_cleanup_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                   struct qz_job_result *res, char *errstr, size_t errstr_size);

#endif
