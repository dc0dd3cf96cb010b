/* api.h - the automation API's shared request context and the helpers every endpoint uses.
 *
 * One struct api lives in main.c for the life of the server; the HTTP
 * handlers (api_*.c) receive it as their opaque pointer and run on
 * libmicrohttpd's threads, several at once: everything reachable from it is
 * either immutable after start, thread-safe (producer, metrics, waiter,
 * trending cache) or borrowed per request from the connection pool.
 *
 * Errors follow DESIGN.md "HTTP conventions": {"error":{"code","message"}};
 * endpoints of the guide that answer "success" (shape API_SUCCESS) answer
 * {"success": false, "error": {...}} instead. */
#ifndef API_API_H
#define API_API_H

#include "auth.h"
#include "http.h"

#include <jansson.h>
#include <stdbool.h>

struct connpool;
struct prodref;
struct qz_avro_registry;
struct qz_metrics;
struct waiter;
struct trending_cache;

struct api_config {
        const char *jwt_secret;
        const char *worker_secret;
        const char *playlists_topic; /* playlists.requests.v1 */
        long playlist_timeout_ms;    /* POST smart-playlists: wait for playlist_ready */
        long ack_timeout_ms;         /* broker acknowledgement of a produced request */
        long trending_wait_ms;       /* POST trending: wait for the run to finish */
        long trending_cache_ms;      /* GET trending: reuse a rendered answer this long */
        bool trending_naive;         /* GET trending: always query Postgres (the bench baseline) */
        long pool_wait_ms;           /* wait for a free connection before 503 */
        const char *media_dir;       /* POST /api/tracks multipart uploads are stored here */
};

struct api {
        struct api_config cfg;
        struct connpool *pool;
        struct prodref *producer; /* replaceable: prodref_get/put around a use */
        const struct qz_avro_registry *avro;
        struct qz_metrics *metrics;
        struct waiter *waiter;           /* playlist_ready listener */
        struct trending_cache *trending; /* rendered GET trending answers */
};

enum api_shape { API_PLAIN, API_SUCCESS };

/* Writes an error in the endpoint's shape; message is printf-style. */
void api_error(struct qz_http_response *resp, int status, enum api_shape shape, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Verifies the bearer JWT. admin: the role claim must be admin. Returns true
 * with *who filled, or false after answering 401 (no/bad/expired token) or 403. */
bool api_auth(const struct api *a, const struct qz_http_request *req, struct qz_http_response *resp,
              bool admin, enum api_shape shape, struct qz_auth_claims *who);

/* Parses a JSON object body (an empty body is {} when allow_empty). Answers
 * 415 (not application/json) or 400 and returns NULL. New reference. */
json_t *api_body(const struct qz_http_request *req, struct qz_http_response *resp,
                 enum api_shape shape, bool allow_empty);

/* Integer query parameter in [min, max], def when absent. false after a 400. */
bool api_query_int(const struct qz_http_request *req, struct qz_http_response *resp,
                   enum api_shape shape, const char *name, long def, long min, long max, long *out);

/* Answers a JSON text produced by Postgres as is (no re-encoding). */
void api_reply_text(struct qz_http_response *resp, int status, const char *json_text);

/* Answers 503 for a failed Postgres call (a lost connection) or 500 (anything else). */
struct qz_pg;
void api_pg_failed(struct qz_http_response *resp, enum api_shape shape, struct qz_pg *pg,
                   const char *what, const char *err);

/* SQL pieces: a track object in DESIGN.md's shape from aliases t (tracks), ar
 * (artists), al (albums, LEFT JOIN), and a UTC RFC 3339 time with milliseconds. */
#define API_TRACK_JSONB                                                                            \
        "jsonb_build_object('id', t.id, 'title', t.title, 'duration_ms', t.duration_ms, "          \
        "'genres', to_jsonb(t.genres), 'artists', jsonb_build_object('id', ar.id, 'name', "        \
        "ar.name), 'albums', CASE WHEN al.id IS NULL THEN NULL ELSE jsonb_build_object('id', "     \
        "al.id, 'title', al.title) END)"
#define API_TS(x) "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#endif
