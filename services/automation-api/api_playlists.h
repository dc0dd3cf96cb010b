/* api_playlists.h - GET/POST /api/automation/smart-playlists: the caller's lists, and generation on
 * demand.
 *
 * POST follows DESIGN.md "Playlist on demand": register the request_id with
 * the playlist_ready waiter, publish a PlaylistRequest (reason manual) to
 * playlists.requests.v1 keyed by user, wait up to playlist_timeout_ms for the
 * builder's notification, then answer from smart_playlists. Timeout: 504
 * with success false (the request still completes). */
#ifndef API_PLAYLISTS_H
#define API_PLAYLISTS_H

#include "api.h"

#include <stddef.h>

/* Checks a playlist type and its params (object of strings/numbers) and
 * builds the PlaylistRequest params map (new reference, every value a
 * string). NULL with errstr (naming the valid types or the missing param). */
json_t *playlists_check_request(const char *type, const json_t *params, char *errstr,
                                size_t errstr_size);
/* True for a known playlist type. */
bool playlists_type_known(const char *type);

void api_playlists_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                          void *opaque);
void api_playlists_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                           void *opaque);

#endif
