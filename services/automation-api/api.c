/* api.c - shared endpoint helpers: error shapes, bearer auth, body and query parsing. */
#include "api.h"

#include "json.h"
#include "log.h"
#include "pg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void api_error(struct qz_http_response *resp, int status, enum api_shape shape, const char *code,
               const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (shape == API_PLAIN) {
                qz_http_reply_error(resp, status, code, "%s", msg);
                return;
        }
        qz_http_reply_json_new(
            resp, status,
            json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code", code, "message", msg));
}

bool api_auth(const struct api *a, const struct qz_http_request *req, struct qz_http_response *resp,
              bool admin, enum api_shape shape, struct qz_auth_claims *who)
{
        char err[256];
        const char *header = qz_http_header(req, "Authorization");
        const char *token = qz_auth_bearer(header);
        if (!token) {
                api_error(resp, 401, shape, "unauthorized", "a bearer token is required");
                qz_http_add_header(resp, "WWW-Authenticate", "Bearer");
                return false;
        }
        if (qz_auth_verify(token, a->cfg.jwt_secret, time(NULL), who, err, sizeof(err)) !=
            QZ_AUTH_OK) {
                api_error(resp, 401, shape, "unauthorized", "%s", err);
                qz_http_add_header(resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
                return false;
        }
        if (admin && who->role != QZ_AUTH_ROLE_ADMIN) {
                api_error(resp, 403, shape, "forbidden", "this endpoint needs the admin role");
                return false;
        }
        return true;
}

static bool is_json_type(const char *ct)
{
        if (!ct)
                return true; /* curl -d without a type: assume JSON */
        size_t n = strcspn(ct, ";");
        while (n > 0 && ct[n - 1] == ' ')
                n--;
        return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

json_t *api_body(const struct qz_http_request *req, struct qz_http_response *resp,
                 enum api_shape shape, bool allow_empty)
{
        char err[256];
        if (req->body_len == 0 && allow_empty)
                return json_object();
        if (!is_json_type(qz_http_header(req, "Content-Type"))) {
                api_error(resp, 415, shape, "unsupported_media_type", "use application/json");
                return NULL;
        }
        json_t *body = qz_json_parse_object(req->body, req->body_len, err, sizeof(err));
        if (!body)
                api_error(resp, 400, shape, "bad_request", "%s", err);
        return body;
}

bool api_query_int(const struct qz_http_request *req, struct qz_http_response *resp,
                   enum api_shape shape, const char *name, long def, long min, long max, long *out)
{
        const char *s = qz_http_query(req, name);
        if (!s) {
                *out = def;
                return true;
        }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max) {
                api_error(resp, 400, shape, "bad_request", "%s must be an integer from %ld to %ld",
                          name, min, max);
                return false;
        }
        *out = v;
        return true;
}

void api_reply_text(struct qz_http_response *resp, int status, const char *json_text)
{
        free(resp->body);
        resp->body = strdup(json_text);
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        resp->content_type = "application/json";
        resp->status = resp->body ? status : 500;
}

void api_pg_failed(struct qz_http_response *resp, enum api_shape shape, struct qz_pg *pg,
                   const char *what, const char *err)
{
        if (qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg))) {
                qz_warn("%s: %s", what, err);
                api_error(resp, 503, shape, "unavailable", "database unavailable");
                qz_http_add_header(resp, "Retry-After", "2");
                return;
        }
        qz_error("%s: %s", what, err);
        api_error(resp, 500, shape, "internal", "%s failed", what);
}
