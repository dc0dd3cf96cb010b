/* http.c - HTTP server on libmicrohttpd: route table, JSON replies, health and metrics.
 *
 * libmicrohttpd calls the access handler several times per request: once
 * with the headers (we allocate the per-request state and refuse an
 * announced oversized body right there, before any of it is read), once per
 * body chunk (appended up to max_body, then discarded), and once at the end,
 * where the route runs and the response is queued. */
#include "http.h"

#include "log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define DEFAULT_MAX_BODY     (1024 * 1024)
#define DEFAULT_CONN_LIMIT   1024
#define DEFAULT_CONN_TIMEOUT 30
#define DEFAULT_THREADS      4

/* Indexes of the built-in routes' latency histograms after the user routes. */
enum { BUILTIN_HEALTHZ, BUILTIN_READYZ, BUILTIN_METRICS, BUILTIN_UNMATCHED, BUILTIN_COUNT };

static const char *builtin_paths[] = {"/healthz", "/readyz", "/metrics", "unmatched"};

struct qz_http_server {
        struct MHD_Daemon *daemon;
        struct qz_http_options opts;
        struct qz_metric **latency; /* nroutes + BUILTIN_COUNT, each may be NULL */
        int port;
};

/* Per request, from the first access call until MHD reports completion. */
struct conn_state {
        char *body;
        size_t len;
        bool too_large;
        struct timespec start;
};

struct req_internal {
        struct MHD_Connection *conn;
        int nparams;
        struct {
                const char *name; /* into the route pattern */
                size_t name_len;
                char *value; /* malloc'd */
        } params[QZ_HTTP_MAX_PARAMS];
};

/* ---- response helpers ---- */

static void set_body(struct qz_http_response *resp, char *body, size_t len, const char *ctype)
{
        free(resp->body);
        resp->body = body;
        resp->body_len = body ? len : 0;
        resp->content_type = ctype;
}

void qz_http_reply_json(struct qz_http_response *resp, int status, const json_t *body)
{
        char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        if (!s) {
                qz_http_reply_error(resp, 500, "internal", "cannot encode response");
                return;
        }
        resp->status = status;
        set_body(resp, s, strlen(s), "application/json");
}

void qz_http_reply_json_new(struct qz_http_response *resp, int status, json_t *body)
{
        qz_http_reply_json(resp, status, body);
        json_decref(body);
}

void qz_http_reply_error(struct qz_http_response *resp, int status, const char *code,
                         const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        json_t *j;
        char *s;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        resp->status = status;
        if (s)
                set_body(resp, s, strlen(s), "application/json");
        else /* out of memory (or invalid UTF-8 in msg): still answer in the JSON shape */
                set_body(resp, strdup("{\"error\":{\"code\":\"internal\",\"message\":\"\"}}"), 41,
                         "application/json");
}

void qz_http_add_header(struct qz_http_response *resp, const char *name, const char *value)
{
        if (resp->nheaders >= QZ_HTTP_MAX_HEADERS)
                return;
        snprintf(resp->headers[resp->nheaders].name, sizeof(resp->headers[0].name), "%s", name);
        snprintf(resp->headers[resp->nheaders].value, sizeof(resp->headers[0].value), "%s", value);
        resp->nheaders++;
}

/* ---- request accessors ---- */

const char *qz_http_param(const struct qz_http_request *req, const char *name)
{
        const struct req_internal *in = req->internal;

        for (int i = 0; i < in->nparams; i++)
                if (strlen(name) == in->params[i].name_len &&
                    strncmp(in->params[i].name, name, in->params[i].name_len) == 0)
                        return in->params[i].value;
        return NULL;
}

const char *qz_http_query(const struct qz_http_request *req, const char *name)
{
        const struct req_internal *in = req->internal;
        return MHD_lookup_connection_value(in->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *qz_http_header(const struct qz_http_request *req, const char *name)
{
        const struct req_internal *in = req->internal;
        return MHD_lookup_connection_value(in->conn, MHD_HEADER_KIND, name);
}

/* ---- routing ---- */

static void params_clear(struct req_internal *in)
{
        for (int i = 0; i < in->nparams; i++)
                free(in->params[i].value);
        in->nparams = 0;
}

static bool param_add(struct req_internal *in, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
        if (in->nparams >= QZ_HTTP_MAX_PARAMS)
                return false;
        char *v = strndup(value, value_len);
        if (!v)
                return false;
        in->params[in->nparams].name = name;
        in->params[in->nparams].name_len = name_len;
        in->params[in->nparams].value = v;
        in->nparams++;
        return true;
}

/* Matches path against pattern (see http.h); fills in's params on success,
 * leaves none on failure. */
static bool route_match(const char *pat, const char *path, struct req_internal *in)
{
        const char *p = pat, *s = path;

        params_clear(in);
        for (;;) {
                if (*p == '\0') {
                        if (*s == '\0')
                                return true;
                        break;
                }
                if (p[0] == '*' && p[1] == '\0') {
                        if (*s == '\0' || !param_add(in, "*", 1, s, strlen(s)))
                                break;
                        return true;
                }
                if (*p == '{') {
                        const char *end = strchr(p, '}');
                        size_t seg = strcspn(s, "/");
                        if (!end || seg == 0 ||
                            !param_add(in, p + 1, (size_t)(end - p - 1), s, seg))
                                break;
                        p = end + 1;
                        s += seg;
                        continue;
                }
                if (*p != *s)
                        break;
                p++;
                s++;
        }
        params_clear(in);
        return false;
}

/* Method label values are a closed set so a client cannot grow the registry. */
static const char *method_label(const char *m)
{
        static const char *known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
                if (strcmp(m, known[i]) == 0)
                        return known[i];
        return "other";
}

static void builtin_healthz(struct qz_http_server *srv, struct qz_http_response *resp)
{
        (void)srv;
        qz_http_reply_json_new(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void builtin_readyz(struct qz_http_server *srv, struct qz_http_response *resp)
{
        json_t *checks = json_object();
        bool ready = true;

        if (!checks) {
                qz_http_reply_error(resp, 500, "internal", "out of memory");
                return;
        }
        if (srv->opts.ready_cb)
                ready = srv->opts.ready_cb(srv->opts.ready_opaque, checks);
        /* "o" steals checks */
        qz_http_reply_json_new(resp, ready ? 200 : 503,
                               json_pack("{s:b,s:o}", "ready", ready, "checks", checks));
}

static void builtin_metrics(struct qz_http_server *srv, struct qz_http_response *resp)
{
        char *text = srv->opts.metrics ? qz_metrics_render(srv->opts.metrics) : strdup("");

        if (!text) {
                qz_http_reply_error(resp, 500, "internal", "cannot render metrics");
                return;
        }
        resp->status = 200;
        set_body(resp, text, strlen(text), "text/plain; version=0.0.4; charset=utf-8");
}

/* Picks what answers method+url: a built-in (index into BUILTIN_*), a user
 * route (>= 0 index into routes, returned through *route), or an error
 * already written into resp. Returns the latency slot to record. */
static size_t dispatch(struct qz_http_server *srv, const char *method, const char *url,
                       struct req_internal *in, struct qz_http_response *resp,
                       const struct qz_http_route **route, int *builtin)
{
        size_t n = srv->opts.nroutes;
        char allow[128] = "";

        *route = NULL;
        *builtin = -1;
        for (int b = 0; b < BUILTIN_UNMATCHED; b++) {
                if (strcmp(url, builtin_paths[b]) != 0)
                        continue;
                if (strcmp(method, "GET") != 0) {
                        qz_http_add_header(resp, "Allow", "GET");
                        qz_http_reply_error(resp, 405, "method_not_allowed", "%s allows GET only",
                                            builtin_paths[b]);
                } else {
                        *builtin = b;
                }
                return n + (size_t)b;
        }
        size_t first_path_match = n;
        for (size_t i = 0; i < n; i++) {
                const struct qz_http_route *r = &srv->opts.routes[i];
                if (!route_match(r->path, url, in))
                        continue;
                if (strcmp(r->method, method) == 0) {
                        *route = r;
                        return i;
                }
                if (first_path_match == n)
                        first_path_match = i;
                /* Allow lists each method once */
                size_t ml = strlen(r->method);
                const char *hit = strstr(allow, r->method);
                bool dup =
                    hit && (hit == allow || hit[-1] == ' ') && (hit[ml] == ',' || hit[ml] == '\0');
                if (!dup && strlen(allow) + ml + 3 < sizeof(allow))
                        snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                                 *allow ? ", " : "", r->method);
        }
        params_clear(in);
        if (first_path_match < n) {
                qz_http_add_header(resp, "Allow", allow);
                qz_http_reply_error(resp, 405, "method_not_allowed", "%s does not allow %s", url,
                                    method);
                return first_path_match;
        }
        qz_http_reply_error(resp, 404, "not_found", "no such path: %s", url);
        return n + BUILTIN_UNMATCHED;
}

static double seconds_since(const struct timespec *t0)
{
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void record(struct qz_http_server *srv, size_t slot, const char *method, int status,
                   const struct timespec *start)
{
        const char *route;
        char labels[512];

        if (!srv->opts.metrics)
                return;
        route = slot < srv->opts.nroutes ? srv->opts.routes[slot].path
                                         : builtin_paths[slot - srv->opts.nroutes];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",code=\"%d\"", route,
                 method_label(method), status);
        qz_metric_inc(qz_metrics_counter(srv->opts.metrics, "http_requests_total", labels,
                                         "HTTP requests by route, method and status"));
        qz_metric_observe(srv->latency[slot], seconds_since(start));
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct qz_http_response *resp)
{
        struct MHD_Response *r;
        enum MHD_Result ret;

        if (resp->body)
                r = MHD_create_response_from_buffer(resp->body_len, resp->body,
                                                    MHD_RESPMEM_MUST_FREE);
        else
                r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
                return MHD_NO;
        resp->body = NULL; /* now owned by r */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                resp->content_type ? resp->content_type : "application/json");
        for (int i = 0; i < resp->nheaders; i++)
                MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
        ret = MHD_queue_response(conn, (unsigned)resp->status, r);
        MHD_destroy_response(r);
        return ret;
}

/* Runs the request to its response: routing, the 413 verdict, the handler. */
static enum MHD_Result finish(struct qz_http_server *srv, struct MHD_Connection *conn,
                              struct conn_state *cs, const char *url, const char *method)
{
        struct qz_http_response resp = {0};
        struct req_internal in = {.conn = conn};
        const struct qz_http_route *route = NULL;
        int builtin = -1;
        size_t slot;
        enum MHD_Result ret;

        slot = dispatch(srv, method, url, &in, &resp, &route, &builtin);
        if ((route || builtin >= 0) && cs->too_large) {
                qz_http_reply_error(&resp, 413, "payload_too_large",
                                    "request body exceeds %zu bytes", srv->opts.max_body);
                /* the rest of the body is not read: don't reuse the connection */
                qz_http_add_header(&resp, MHD_HTTP_HEADER_CONNECTION, "close");
        } else if (route) {
                struct qz_http_request req = {
                    .method = method,
                    .path = url,
                    .body = cs->body ? cs->body : "",
                    .body_len = cs->len,
                    .route = route->path,
                    .internal = &in,
                };
                route->handler(&req, &resp, route->opaque);
                if (resp.status < 100 || resp.status > 599) {
                        qz_error("http: handler for %s %s left status %d", method, route->path,
                                 resp.status);
                        qz_http_reply_error(&resp, 500, "internal", "internal error");
                }
        } else if (builtin == BUILTIN_HEALTHZ) {
                builtin_healthz(srv, &resp);
        } else if (builtin == BUILTIN_READYZ) {
                builtin_readyz(srv, &resp);
        } else if (builtin == BUILTIN_METRICS) {
                builtin_metrics(srv, &resp);
        }
        params_clear(&in);
        record(srv, slot, method, resp.status, &cs->start);
        ret = send_response(conn, &resp);
        free(resp.body);
        return ret;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
        struct qz_http_server *srv = cls;
        struct conn_state *cs = *con_cls;

        (void)version;
        if (!cs) {
                const char *cl;
                cs = calloc(1, sizeof(*cs));
                if (!cs)
                        return MHD_NO;
                clock_gettime(CLOCK_MONOTONIC, &cs->start);
                *con_cls = cs;
                cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl && strtoull(cl, NULL, 10) > srv->opts.max_body) {
                        /* Answer now, before libmicrohttpd reads (or asks for, with
                         * Expect: 100-continue) a single byte of the body. */
                        cs->too_large = true;
                        return finish(srv, conn, cs, url, method);
                }
                return MHD_YES;
        }
        if (*upload_data_size) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                if (cs->too_large)
                        return MHD_YES;
                if (cs->len + n > srv->opts.max_body) {
                        /* chunked body over the limit: drop what we have, keep
                         * draining (bounded by the connection timeout) and answer 413 */
                        cs->too_large = true;
                        free(cs->body);
                        cs->body = NULL;
                        cs->len = 0;
                        return MHD_YES;
                }
                char *b = realloc(cs->body, cs->len + n + 1);
                if (!b)
                        return MHD_NO;
                memcpy(b + cs->len, upload_data, n);
                cs->body = b;
                cs->len += n;
                cs->body[cs->len] = '\0';
                return MHD_YES;
        }
        return finish(srv, conn, cs, url, method);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct conn_state *cs = *con_cls;

        (void)cls;
        (void)conn;
        (void)toe;
        if (cs) {
                free(cs->body);
                free(cs);
        }
        *con_cls = NULL;
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
        char line[512];
        size_t n;

        (void)cls;
        vsnprintf(line, sizeof(line), fmt, ap);
        n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        qz_warn("http: %s", line);
}

struct qz_http_server *qz_http_start(const struct qz_http_options *opts, char *errstr,
                                     size_t errstr_size)
{
        struct qz_http_server *srv = NULL;
        struct addrinfo hints = {0}, *ai = NULL;
        char port[16];
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
        int rc;

        srv = calloc(1, sizeof(*srv));
        if (!srv) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        srv->opts = *opts;
        if (!srv->opts.max_body)
                srv->opts.max_body = DEFAULT_MAX_BODY;
        if (!srv->opts.conn_limit)
                srv->opts.conn_limit = DEFAULT_CONN_LIMIT;
        if (!srv->opts.conn_timeout_s)
                srv->opts.conn_timeout_s = DEFAULT_CONN_TIMEOUT;
        if (!srv->opts.threads)
                srv->opts.threads = DEFAULT_THREADS;
        for (size_t i = 0; i < srv->opts.nroutes; i++) {
                const struct qz_http_route *r = &srv->opts.routes[i];
                if (!r->method || !r->path || r->path[0] != '/' || !r->handler) {
                        snprintf(errstr, errstr_size, "http: route %zu is incomplete", i);
                        goto fail;
                }
        }
        srv->latency = calloc(srv->opts.nroutes + BUILTIN_COUNT, sizeof(*srv->latency));
        if (!srv->latency) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        for (size_t i = 0; srv->opts.metrics && i < srv->opts.nroutes + BUILTIN_COUNT; i++) {
                char labels[300];
                const char *path = i < srv->opts.nroutes ? srv->opts.routes[i].path
                                                         : builtin_paths[i - srv->opts.nroutes];
                snprintf(labels, sizeof(labels), "route=\"%s\"", path);
                srv->latency[i] =
                    qz_metrics_histogram(srv->opts.metrics, "http_request_duration_seconds", labels,
                                         "HTTP request latency by route", NULL, 0);
        }

        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        snprintf(port, sizeof(port), "%d", opts->addr.port);
        rc = getaddrinfo(opts->addr.host[0] ? opts->addr.host : "0.0.0.0", port, &hints, &ai);
        if (rc != 0) {
                snprintf(errstr, errstr_size, "http: cannot resolve %s: %s", opts->addr.host,
                         gai_strerror(rc));
                goto fail;
        }
        if (ai->ai_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        /* The logger goes first so MHD routes even option warnings through it; the
         * pool option is given only for a real pool (MHD warns about 0 or 1). */
        struct MHD_OptionItem mhd_opts[] = {
            {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log_cb, srv},
            {MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr},
            {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)srv->opts.conn_limit, NULL},
            {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)srv->opts.conn_timeout_s, NULL},
            {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed_cb, srv},
            {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)srv->opts.threads, NULL},
            {MHD_OPTION_END, 0, NULL},
        };
        if (srv->opts.threads <= 1)
                mhd_opts[5].option = MHD_OPTION_END;
        srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, srv, MHD_OPTION_ARRAY,
                                       mhd_opts, MHD_OPTION_END);
        if (!srv->daemon) {
                snprintf(errstr, errstr_size, "http: cannot listen on %s:%d (in use?)",
                         opts->addr.host, opts->addr.port);
                goto fail;
        }
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_LISTEN_FD);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (info && getsockname(info->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
                srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                           : ((struct sockaddr_in *)&ss)->sin_port);
        freeaddrinfo(ai);
        return srv;
fail:
        if (ai)
                freeaddrinfo(ai);
        if (srv)
                free(srv->latency);
        free(srv);
        return NULL;
}

int qz_http_port(const struct qz_http_server *srv)
{
        return srv ? srv->port : 0;
}

void qz_http_stop(struct qz_http_server *srv)
{
        if (!srv)
                return;
        if (srv->daemon)
                MHD_stop_daemon(srv->daemon); /* joins the pool threads */
        free(srv->latency);
        free(srv);
}
