/* api_tracks.h - POST /api/tracks (admin): register an uploaded track in the catalog.
 *
 * Body (application/json): title, artist_id or artist_name (found or
 * created), optional album_id or album_title (found or created under the
 * artist), duration_ms, audio_url, genres[], popularity 0-100, released_at
 * YYYY-MM-DD. One transaction writes the artist/album if new and the tracks
 * row, whose triggers queue the three analysis tasks (sql/005) and wake the
 * tracks.v1 relay (sql/030); the row stays the outbox until the relay's ack.
 * Answers 201 {"id", "track": {...}}. */
#ifndef API_TRACKS_H
#define API_TRACKS_H

#include "api.h"

void api_tracks_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque);

#endif
