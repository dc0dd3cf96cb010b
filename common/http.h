/* http.h - HTTP server on libmicrohttpd: route table, JSON replies, health and metrics.
 *
 * Every server also answers GET /healthz, GET /readyz (the options' ready_cb)
 * and GET /metrics (the options' registry). Errors are always JSON:
 * {"error": {"code": "...", "message": "..."}}; unknown path 404, known path
 * with another method 405 with Allow, body over max_body 413.
 *
 * Threads: handlers and ready_cb run on libmicrohttpd's threads, several at
 * once (a pool of `threads` epoll loops), so whatever they touch through
 * `opaque` must be thread-safe or locked. A handler must not block for long:
 * it holds one of the pool's threads.
 *
 * Ownership: the route table and the strings in the options must outlive the
 * server (they are not copied). struct qz_http_request and everything it
 * points to are valid only during the handler call. A handler hands the
 * response body to the server (malloc'd; the server frees it). */
#ifndef QZ_HTTP_H
#define QZ_HTTP_H

#include "cfg.h"
#include "metrics.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct qz_http_server;
struct qz_http_request;

#define QZ_HTTP_MAX_PARAMS  8
#define QZ_HTTP_MAX_HEADERS 8

struct qz_http_request {
        const char *method; /* "GET", "POST", ... */
        const char *path;   /* decoded path without the query string */
        const char *body;   /* NUL-terminated (the NUL is not counted); "" when none */
        size_t body_len;
        const char *route; /* the matching route's pattern, e.g. "/api/tracks/{id}" */
        void *internal;    /* the server's; use the accessors below */
};

struct qz_http_response {
        int status; /* 0 after the handler = 500 */
        char *body; /* malloc'd; the server frees it; NULL = empty */
        size_t body_len;
        const char *content_type; /* static string; NULL = application/json */
        int nheaders;
        struct {
                char name[64];
                char value[256];
        } headers[QZ_HTTP_MAX_HEADERS];
};

typedef void (*qz_http_handler_cb)(const struct qz_http_request *req, struct qz_http_response *resp,
                                   void *opaque);

/* A route's path is matched segment by segment:
 *   "/api/tracks"             exact
 *   "/api/tracks/{id}"        {name} matches one non-empty segment
 *   "/files/" + '*'           a final '*' matches the non-empty rest (param "*"),
 *                             slashes included
 * Routes are tried in table order; the first whose path and method match wins.
 * If paths match but no method does, the answer is 405 with Allow. */
struct qz_http_route {
        const char *method;
        const char *path;
        qz_http_handler_cb handler;
        void *opaque;
};

/* Fills checks (a JSON object, e.g. {"redis": "ok", "postgres": "down: ..."})
 * and returns whether the service is ready: /readyz then answers 200 or 503
 * with {"ready": bool, "checks": {...}}. */
typedef bool (*qz_http_ready_cb)(void *opaque, json_t *checks);

struct qz_http_options {
        struct qz_addr addr; /* host "" = all IPv4 addresses; port 0 = ephemeral */
        const struct qz_http_route *routes;
        size_t nroutes;
        size_t max_body;            /* bytes; 0 = 1 MiB */
        unsigned conn_limit;        /* 0 = 1024 */
        unsigned conn_timeout_s;    /* idle/slow client timeout; 0 = 30 */
        unsigned threads;           /* 0 = 4 */
        struct qz_metrics *metrics; /* may be NULL: no /metrics body, no request metrics */
        qz_http_ready_cb ready_cb;  /* NULL = always ready */
        void *ready_opaque;
};

/* Starts listening. Returns NULL with errstr on failure (bad address, port taken). */
struct qz_http_server *qz_http_start(const struct qz_http_options *opts, char *errstr,
                                     size_t errstr_size);
/* The bound port (useful with port 0). */
int qz_http_port(const struct qz_http_server *srv);
/* Stops accepting, waits for the running handlers, closes connections, frees. */
void qz_http_stop(struct qz_http_server *srv);

/* Request accessors; the returned strings live as long as the request. */
const char *qz_http_param(const struct qz_http_request *req, const char *name); /* path {name} */
const char *qz_http_query(const struct qz_http_request *req, const char *name);
const char *qz_http_header(const struct qz_http_request *req, const char *name); /* any case */

/* Response helpers. They replace any body already set. */
/* Takes a reference to nothing: body is serialised, the caller keeps (and decrefs) it. */
void qz_http_reply_json(struct qz_http_response *resp, int status, const json_t *body);
/* Same, stealing the reference (convenient for json_pack results). */
void qz_http_reply_json_new(struct qz_http_response *resp, int status, json_t *body);
/* {"error": {"code": code, "message": message}}; message is printf-style. */
void qz_http_reply_error(struct qz_http_response *resp, int status, const char *code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Adds a response header (copied; silently dropped beyond QZ_HTTP_MAX_HEADERS). */
void qz_http_add_header(struct qz_http_response *resp, const char *name, const char *value);

#endif
