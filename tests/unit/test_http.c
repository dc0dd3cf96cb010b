/* test_http.c - HTTP server on a real ephemeral port, driven with libcurl: routing,
 * path params, 404/405/413 JSON errors, /healthz, /readyz, /metrics, slow clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http.h"
#include "log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BODY 1024

struct fixture {
        struct qz_metrics *metrics;
        struct qz_http_server *srv;
        atomic_bool ready;
        int port;
};

/* ---- handlers ---- */

static void list_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)op;
        const char *limit = qz_http_query(req, "limit");
        qz_http_reply_json_new(resp, 200,
                               json_pack("{s:s,s:s?}", "route", req->route, "limit", limit));
}

static void track_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        qz_http_reply_json_new(resp, 200,
                               json_pack("{s:s,s:s,s:s}", "id", qz_http_param(req, "id"), "route",
                                         req->route, "tag", (const char *)op));
}

static void features_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)op;
        qz_http_reply_json_new(resp, 200,
                               json_pack("{s:s,s:s}", "id", qz_http_param(req, "id"), "kind",
                                         qz_http_param(req, "kind")));
}

static void delete_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)req;
        (void)op;
        resp->status = 204;
}

static void echo_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)op;
        const char *h = qz_http_header(req, "x-test"); /* sent as X-Test */
        qz_http_reply_json_new(resp, 201,
                               json_pack("{s:I,s:s,s:s?,s:s}", "len", (json_int_t)req->body_len,
                                         "body", req->body, "hdr", h, "method", req->method));
}

static void files_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)op;
        qz_http_reply_json_new(resp, 200, json_pack("{s:s}", "rest", qz_http_param(req, "*")));
}

static void busy_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)req;
        (void)op;
        qz_http_add_header(resp, "Retry-After", "5");
        qz_http_reply_error(resp, 429, "rate_limited", "slow down, %s", "please");
}

static void broken_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *op)
{
        (void)req;
        (void)op;
        resp->body = strdup("half-made"); /* status left 0: the server answers 500 */
}

static bool ready_cb(void *opaque, json_t *checks)
{
        struct fixture *f = opaque;
        bool r = atomic_load(&f->ready);
        json_object_set_new(checks, "redis", json_string(r ? "ok" : "down: connection refused"));
        return r;
}

static const struct qz_http_route routes[] = {
    {"GET", "/api/tracks", list_cb, NULL},
    {"GET", "/api/tracks/{id}", track_cb, "one"},
    {"DELETE", "/api/tracks/{id}", delete_cb, NULL},
    {"GET", "/api/tracks/{id}/features/{kind}", features_cb, NULL},
    {"POST", "/api/echo", echo_cb, NULL},
    {"PUT", "/api/echo", echo_cb, NULL},
    {"GET", "/files/*", files_cb, NULL},
    {"GET", "/busy", busy_cb, NULL},
    {"GET", "/broken", broken_cb, NULL},
};

/* ---- client ---- */

struct reply {
        long status;
        char body[256 * 1024];
        size_t len;
        char allow[128];
        char ctype[128];
        char retry_after[32];
};

static size_t body_cb(char *p, size_t size, size_t n, void *ud)
{
        struct reply *r = ud;
        size_t k = size * n;
        if (r->len + k >= sizeof(r->body))
                k = sizeof(r->body) - 1 - r->len;
        memcpy(r->body + r->len, p, k);
        r->len += k;
        r->body[r->len] = '\0';
        return size * n;
}

static void copy_header(const char *line, size_t n, const char *name, char *out, size_t size)
{
        size_t nl = strlen(name);
        if (n > nl && strncasecmp(line, name, nl) == 0) {
                const char *v = line + nl;
                size_t vl = n - nl;
                while (vl && (*v == ' '))
                        v++, vl--;
                while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
                        vl--;
                snprintf(out, size, "%.*s", (int)vl, v);
        }
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
        struct reply *r = ud;
        copy_header(p, size * n, "Allow:", r->allow, sizeof(r->allow));
        copy_header(p, size * n, "Content-Type:", r->ctype, sizeof(r->ctype));
        copy_header(p, size * n, "Retry-After:", r->retry_after, sizeof(r->retry_after));
        return size * n;
}

struct upload {
        size_t left;
};

static size_t read_cb(char *buf, size_t size, size_t n, void *ud)
{
        struct upload *u = ud;
        size_t k = size * n < u->left ? size * n : u->left;
        memset(buf, 'x', k);
        u->left -= k;
        return k;
}

/* body NULL: no body. chunked_len > 0: streams that many bytes chunked. */
static void request(struct fixture *f, const char *method, const char *path, const char *body,
                    size_t chunked_len, struct reply *r)
{
        CURL *c = curl_easy_init();
        struct curl_slist *hdrs = NULL;
        struct upload up = {chunked_len};
        char url[512];

        memset(r, 0, sizeof(*r));
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->port, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
        hdrs = curl_slist_append(hdrs, "X-Test: hello");
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (chunked_len) {
                curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
                curl_easy_setopt(c, CURLOPT_READDATA, &up);
                hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
                hdrs = curl_slist_append(hdrs, "Expect:");
        }
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK)
                fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
}

static json_t *body_json(const struct reply *r)
{
        json_t *j = json_loads(r->body, 0, NULL);
        if (!j)
                fail_msg("not JSON: %s", r->body);
        return j;
}

/* Checks the DESIGN.md error shape and the code. */
static void assert_error(const struct reply *r, long status, const char *code)
{
        assert_int_equal(r->status, status);
        assert_string_equal(r->ctype, "application/json");
        json_t *j = body_json(r);
        json_t *e = json_object_get(j, "error");
        assert_true(json_is_object(e));
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
        assert_true(json_is_string(json_object_get(e, "message")));
        assert_int_equal(json_object_size(j), 1);
        json_decref(j);
}

/* ---- tests ---- */

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        char err[256];

        qz_log_init("test_http", QZ_LOG_ERROR);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        f->metrics = qz_metrics_new();
        atomic_store(&f->ready, true);
        struct qz_http_options o = {
            .addr = {.host = "127.0.0.1", .port = 0},
            .routes = routes,
            .nroutes = sizeof(routes) / sizeof(routes[0]),
            .max_body = MAX_BODY,
            .conn_limit = 64,
            .conn_timeout_s = 1,
            .threads = 2,
            .metrics = f->metrics,
            .ready_cb = ready_cb,
            .ready_opaque = f,
        };
        f->srv = qz_http_start(&o, err, sizeof(err));
        if (!f->srv) {
                fprintf(stderr, "start: %s\n", err);
                return -1;
        }
        f->port = qz_http_port(f->srv);
        if (f->port <= 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        qz_http_stop(f->srv);
        qz_metrics_free(f->metrics);
        free(f);
        curl_global_cleanup();
        return 0;
}

static void test_routing(void **state)
{
        struct fixture *f = *state;
        static struct reply r; /* large: keep off the stack */
        json_t *j;

        request(f, "GET", "/api/tracks?limit=5", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.ctype, "application/json");
        j = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "route")), "/api/tracks");
        assert_string_equal(json_string_value(json_object_get(j, "limit")), "5");
        json_decref(j);

        request(f, "GET", "/api/tracks/abc-123", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "id")), "abc-123");
        assert_string_equal(json_string_value(json_object_get(j, "route")), "/api/tracks/{id}");
        assert_string_equal(json_string_value(json_object_get(j, "tag")), "one");
        json_decref(j);

        request(f, "GET", "/api/tracks/t1/features/tempo", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "id")), "t1");
        assert_string_equal(json_string_value(json_object_get(j, "kind")), "tempo");
        json_decref(j);

        request(f, "DELETE", "/api/tracks/t1", NULL, 0, &r);
        assert_int_equal(r.status, 204);

        request(f, "GET", "/files/a/b/c.txt", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "rest")), "a/b/c.txt");
        json_decref(j);

        request(f, "POST", "/api/echo", "{\"a\":1}", 0, &r);
        assert_int_equal(r.status, 201);
        j = body_json(&r);
        assert_int_equal(json_integer_value(json_object_get(j, "len")), 7);
        assert_string_equal(json_string_value(json_object_get(j, "body")), "{\"a\":1}");
        assert_string_equal(json_string_value(json_object_get(j, "hdr")), "hello");
        json_decref(j);

        request(f, "GET", "/busy", NULL, 0, &r);
        assert_error(&r, 429, "rate_limited");
        assert_string_equal(r.retry_after, "5");
        assert_non_null(strstr(r.body, "slow down, please"));

        request(f, "GET", "/broken", NULL, 0, &r);
        assert_error(&r, 500, "internal");
}

static void test_not_found_and_method(void **state)
{
        struct fixture *f = *state;
        static struct reply r; /* large: keep off the stack */
        static const char *missing[] = {"/nope",   "/api/tracks/",    "/api/tracksX",
                                        "/files/", "/api/tracks/a/b", "/api/tracks/t1/features/"};

        for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
                request(f, "GET", missing[i], NULL, 0, &r);
                assert_error(&r, 404, "not_found");
        }
        request(f, "PUT", "/api/tracks/t1", "{}", 0, &r);
        assert_error(&r, 405, "method_not_allowed");
        assert_string_equal(r.allow, "GET, DELETE");
        request(f, "GET", "/api/echo", NULL, 0, &r);
        assert_error(&r, 405, "method_not_allowed");
        assert_string_equal(r.allow, "POST, PUT");
        request(f, "POST", "/healthz", "{}", 0, &r);
        assert_error(&r, 405, "method_not_allowed");
        assert_string_equal(r.allow, "GET");
}

static void test_body_limit(void **state)
{
        struct fixture *f = *state;
        static struct reply r; /* large: keep off the stack */
        char *big = malloc(64 * 1024 + 1);
        json_t *j;

        memset(big, 'y', 64 * 1024);
        big[MAX_BODY] = '\0'; /* exactly the limit is fine */
        request(f, "POST", "/api/echo", big, 0, &r);
        assert_int_equal(r.status, 201);
        j = body_json(&r);
        assert_int_equal(json_integer_value(json_object_get(j, "len")), MAX_BODY);
        json_decref(j);

        big[MAX_BODY] = 'y';
        big[MAX_BODY + 1] = '\0'; /* one byte over, announced by Content-Length */
        request(f, "POST", "/api/echo", big, 0, &r);
        assert_error(&r, 413, "payload_too_large");

        big[64 * 1024] = '\0'; /* bigger, sent with Expect: 100-continue by curl */
        request(f, "POST", "/api/echo", big, 0, &r);
        assert_error(&r, 413, "payload_too_large");

        request(f, "PUT", "/api/echo", NULL, 10 * MAX_BODY, &r); /* chunked, no length */
        assert_error(&r, 413, "payload_too_large");
        request(f, "PUT", "/api/echo", NULL, MAX_BODY / 2, &r); /* chunked, within limit */
        assert_int_equal(r.status, 201);
        j = body_json(&r);
        assert_int_equal(json_integer_value(json_object_get(j, "len")), MAX_BODY / 2);
        json_decref(j);

        /* an unknown path with a huge body is still a 404, not a 413 */
        request(f, "POST", "/nope", big, 0, &r);
        assert_error(&r, 404, "not_found");
        free(big);
}

static void test_health_ready(void **state)
{
        struct fixture *f = *state;
        static struct reply r; /* large: keep off the stack */
        json_t *j;

        request(f, "GET", "/healthz", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "{\"status\":\"ok\"}");

        atomic_store(&f->ready, true);
        request(f, "GET", "/readyz", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_true(json_is_true(json_object_get(j, "ready")));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(j, "checks"), "redis")), "ok");
        json_decref(j);

        atomic_store(&f->ready, false);
        request(f, "GET", "/readyz", NULL, 0, &r);
        assert_int_equal(r.status, 503);
        j = body_json(&r);
        assert_true(json_is_false(json_object_get(j, "ready")));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(j, "checks"), "redis")),
            "down: connection refused");
        json_decref(j);
        atomic_store(&f->ready, true);
}

static void test_metrics_endpoint(void **state)
{
        struct fixture *f = *state;
        static struct reply r; /* large: keep off the stack */

        qz_metric_add(qz_metrics_counter(f->metrics, "app_things_total", NULL, "Things"), 7);
        request(f, "GET", "/api/tracks/m1", NULL, 0, &r);
        request(f, "GET", "/api/tracks/m2", NULL, 0, &r);
        request(f, "GET", "/metrics", NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert_non_null(strstr(r.body, "# TYPE app_things_total counter\napp_things_total 7\n"));
        /* earlier tests made one GET to the {id} route and one DELETE; here two more */
        assert_non_null(strstr(r.body, "http_requests_total{route=\"/api/tracks/{id}\","
                                       "method=\"GET\",code=\"200\"} 3\n"));
        assert_non_null(strstr(r.body, "http_requests_total{route=\"/api/tracks/{id}\","
                                       "method=\"DELETE\",code=\"204\"} 1\n"));
        assert_non_null(strstr(r.body, "http_requests_total{route=\"unmatched\",method=\"GET\","
                                       "code=\"404\"}"));
        assert_non_null(strstr(r.body, "# TYPE http_request_duration_seconds histogram\n"));
        assert_non_null(strstr(r.body, "http_requests_total{route=\"/api/tracks/{id}\","
                                       "method=\"PUT\",code=\"405\"} 1\n"));
        /* latency is per route pattern: 3 GET + 1 DELETE + 1 PUT (405) */
        assert_non_null(strstr(r.body, "http_request_duration_seconds_count{route=\"/api/tracks/"
                                       "{id}\"} 5\n"));
        /* one HELP per family even with many series */
        const char *first = strstr(r.body, "# HELP http_requests_total");
        assert_non_null(first);
        assert_null(strstr(first + 1, "# HELP http_requests_total"));
}

static void test_slow_client_closed(void **state)
{
        struct fixture *f = *state;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        char buf[256];

        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        /* half a request line, then silence */
        assert_true(write(fd, "GET /heal", 9) == 9);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        /* timeout is 1 s: the server must hang up well within 5 s */
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = read(fd, buf, sizeof(buf));
        assert_true(n <= 0);
        close(fd);
        /* and the server still serves others */
        static struct reply r; /* large: keep off the stack */
        request(f, "GET", "/healthz", NULL, 0, &r);
        assert_int_equal(r.status, 200);
}

static void test_start_errors(void **state)
{
        struct fixture *f = *state;
        char err[256];
        struct qz_http_options o = {.addr = {.host = "127.0.0.1", .port = f->port}};

        assert_null(qz_http_start(&o, err, sizeof(err))); /* port taken */
        assert_non_null(strstr(err, "cannot listen"));
        static const struct qz_http_route bad[] = {{"GET", "no-slash", list_cb, NULL}};
        struct qz_http_options o2 = {.addr = {.host = "127.0.0.1"}, .routes = bad, .nroutes = 1};
        assert_null(qz_http_start(&o2, err, sizeof(err)));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_routing),          cmocka_unit_test(test_not_found_and_method),
            cmocka_unit_test(test_body_limit),       cmocka_unit_test(test_health_ready),
            cmocka_unit_test(test_metrics_endpoint), cmocka_unit_test(test_slow_client_closed),
            cmocka_unit_test(test_start_errors),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
