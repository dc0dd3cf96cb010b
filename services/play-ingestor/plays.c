/* plays.c - parse and validate a POST /v1/plays body into PlayEvent values. */
#include "plays.h"

#include "json.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DURATION_MS (24LL * 3600 * 1000)

enum field {
        F_EVENT_ID,
        F_USER_ID,
        F_TRACK_ID,
        F_PLAYED_AT,
        F_DURATION,
        F_COMPLETED,
        F_SOURCE,
        F_DEVICE_TYPE,
        F_PLAYLIST,
        F_COUNT
};

static const char *const known_fields[F_COUNT + 1] = {
    "event_id",  "user_id", "track_id",    "played_at",          "duration_played_ms",
    "completed", "source",  "device_type", "source_playlist_id", NULL,
};

static bool known_field(const char *k)
{
        for (const char *const *f = known_fields; *f; f++)
                if (strcmp(*f, k) == 0)
                        return true;
        return false;
}

/* source and device_type are open vocabularies (DESIGN.md): any short
 * lowercase token is accepted so new clients need no schema change. */
static bool token_ok(const char *s, size_t n)
{
        bool ok = n >= 1 && n <= PLAYS_TOKEN_MAX;
        for (size_t i = 0; ok && i < n; i++) {
                char c = s[i];
                ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        }
        return ok;
}

static int check_token(const json_t *item, const char *key, char *out, char *errstr,
                       size_t errstr_size)
{
        const char *s;
        if (qz_json_get_string(item, key, true, &s, errstr, errstr_size) != 0)
                return -1;
        size_t n = strlen(s);
        if (!token_ok(s, n)) {
                snprintf(errstr, errstr_size,
                         "field '%s' must be 1-32 characters of a-z, 0-9, '_' or '-'", key);
                return -1;
        }
        memcpy(out, s, n + 1);
        return 0;
}

/* s is a valid UUID (36 characters). */
static void lower_uuid(char *out, const char *s)
{
        for (size_t i = 0; i < PLAYS_UUID_LEN; i++)
                out[i] = (char)tolower((unsigned char)s[i]);
        out[PLAYS_UUID_LEN] = '\0';
}

/* The rules that involve more than one field's type; shared by both paths. */
static int check_ranges(struct play *p, const struct plays_rules *rules, const char **reason,
                        char *errstr, size_t errstr_size)
{
        if (p->duration_played_ms < 0 || p->duration_played_ms > MAX_DURATION_MS) {
                *reason = "duration_played_ms";
                snprintf(errstr, errstr_size, "field 'duration_played_ms' must be 0-%lld",
                         MAX_DURATION_MS);
                return -1;
        }
        if (p->played_at > rules->now_ms + rules->max_future_ms) {
                *reason = "played_at_future";
                snprintf(errstr, errstr_size, "field 'played_at' is more than %lld s in the future",
                         (long long)(rules->max_future_ms / 1000));
                return -1;
        }
        if (p->played_at < rules->now_ms - rules->horizon_ms) {
                *reason = "played_at_too_old";
                snprintf(errstr, errstr_size,
                         "field 'played_at' is older than the replay horizon (%lld days)",
                         (long long)(rules->horizon_ms / 86400000));
                return -1;
        }
        *reason = NULL;
        return 0;
}

int plays_check(const json_t *item, const struct plays_rules *rules, struct play *p,
                const char **reason, char *errstr, size_t errstr_size)
{
        const char *event_id = NULL, *user_id, *track_id, *playlist = NULL;
        const char *key;
        json_t *v;

        memset(p, 0, sizeof(*p));
        p->played_at = rules->now_ms;
        if (!json_is_object(item)) {
                *reason = "not_object";
                snprintf(errstr, errstr_size, "a play must be a JSON object");
                return -1;
        }
        json_object_foreach((json_t *)item, key, v)
        {
                if (!known_field(key)) {
                        *reason = "unknown_field";
                        snprintf(errstr, errstr_size, "unknown field '%.64s'", key);
                        return -1;
                }
        }
        /* Checked in this order; the first failing field names the reason. */
        if ((*reason = "event_id",
             qz_json_get_uuid(item, "event_id", false, &event_id, errstr, errstr_size) < 0) ||
            (*reason = "user_id",
             qz_json_get_uuid(item, "user_id", true, &user_id, errstr, errstr_size) < 0) ||
            (*reason = "track_id",
             qz_json_get_uuid(item, "track_id", true, &track_id, errstr, errstr_size) < 0) ||
            (*reason = "played_at",
             qz_json_get_time(item, "played_at", false, &p->played_at, errstr, errstr_size) < 0) ||
            (*reason = "duration_played_ms",
             qz_json_get_int(item, "duration_played_ms", true, &p->duration_played_ms, errstr,
                             errstr_size) < 0) ||
            (*reason = "completed",
             qz_json_get_bool(item, "completed", false, &p->completed, errstr, errstr_size) < 0) ||
            (*reason = "source", check_token(item, "source", p->source, errstr, errstr_size) < 0) ||
            (*reason = "device_type",
             check_token(item, "device_type", p->device_type, errstr, errstr_size) < 0) ||
            (*reason = "source_playlist_id", qz_json_get_uuid(item, "source_playlist_id", false,
                                                              &playlist, errstr, errstr_size) < 0))
                return -1;
        if (check_ranges(p, rules, reason, errstr, errstr_size) != 0)
                return -1;
        if (event_id) {
                lower_uuid(p->event_id, event_id);
        } else {
                qz_uuid_generate(p->event_id);
                p->event_id_generated = true;
        }
        lower_uuid(p->user_id, user_id);
        lower_uuid(p->track_id, track_id);
        if (playlist)
                lower_uuid(p->source_playlist_id, playlist);
        return 0;
}

json_t *plays_to_json(const struct play *p)
{
        return json_pack(
            "{s:s, s:s, s:s, s:I, s:I, s:b, s:s, s:s, s:o}", "event_id", p->event_id, "user_id",
            p->user_id, "track_id", p->track_id, "played_at", (json_int_t)p->played_at,
            "duration_played_ms", (json_int_t)p->duration_played_ms, "completed", p->completed,
            "source", p->source, "device_type", p->device_type, "source_playlist_id",
            p->source_playlist_id[0] ? json_string(p->source_playlist_id) : json_null());
}

json_t *plays_validate(const json_t *item, const struct plays_rules *rules, char *errstr,
                       size_t errstr_size)
{
        const char *reason;
        return plays_validate_reason(item, rules, &reason, errstr, errstr_size);
}

json_t *plays_validate_reason(const json_t *item, const struct plays_rules *rules,
                              const char **reason, char *errstr, size_t errstr_size)
{
        struct play p;
        if (plays_check(item, rules, &p, reason, errstr, errstr_size) != 0)
                return NULL;
        return plays_to_json(&p);
}

/* ---- the reference path: jansson ---- */

static int push_item(struct plays_batch *b, size_t *cap, const json_t *item, const char *parse_err,
                     const struct plays_rules *rules, char *errstr, size_t errstr_size)
{
        if (b->n >= rules->max_items) {
                snprintf(errstr, errstr_size, "too many plays in one request (max %zu)",
                         rules->max_items);
                return -2;
        }
        if (b->n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 16;
                struct plays_item *n = realloc(b->items, ncap * sizeof(*n));
                if (!n) {
                        snprintf(errstr, errstr_size, "out of memory");
                        return -1;
                }
                b->items = n;
                *cap = ncap;
        }
        struct plays_item *it = &b->items[b->n++];
        it->error[0] = '\0';
        it->reason = NULL;
        it->ok = false;
        if (parse_err) {
                memset(&it->play, 0, sizeof(it->play));
                it->reason = "invalid_json";
                snprintf(it->error, sizeof(it->error), "%s", parse_err);
        } else {
                it->ok = plays_check(item, rules, &it->play, &it->reason, it->error,
                                     sizeof(it->error)) == 0;
        }
        return 0;
}

static int parse_ndjson(const char *body, size_t len, const struct plays_rules *rules,
                        struct plays_batch *out, size_t *cap, char *errstr, size_t errstr_size)
{
        size_t pos = 0;
        while (pos < len) {
                const char *nl = memchr(body + pos, '\n', len - pos);
                size_t end = nl ? (size_t)(nl - body) : len;
                size_t a = pos, z = end;
                while (a < z && isspace((unsigned char)body[a]))
                        a++;
                while (z > a && isspace((unsigned char)body[z - 1]))
                        z--;
                if (z > a) {
                        char perr[200];
                        json_t *item = qz_json_parse(body + a, z - a, perr, sizeof(perr));
                        int rc = push_item(out, cap, item, item ? NULL : perr, rules, errstr,
                                           errstr_size);
                        json_decref(item);
                        if (rc != 0)
                                return rc;
                }
                pos = end + 1;
        }
        return 0;
}

int plays_parse_reference(const char *body, size_t len, bool ndjson,
                          const struct plays_rules *rules, struct plays_batch *out, char *errstr,
                          size_t errstr_size)
{
        size_t cap = 0;
        json_t *doc = NULL;
        int rc = -1;
        memset(out, 0, sizeof(*out));

        if (ndjson) {
                rc = parse_ndjson(body, len, rules, out, &cap, errstr, errstr_size);
                if (rc != 0)
                        goto fail;
        } else {
                doc = qz_json_parse(body, len, errstr, errstr_size);
                if (!doc)
                        goto fail;
                if (json_is_array(doc)) {
                        size_t i;
                        json_t *item;
                        json_array_foreach(doc, i, item)
                        {
                                rc = push_item(out, &cap, item, NULL, rules, errstr, errstr_size);
                                if (rc != 0)
                                        goto fail;
                        }
                } else if (json_is_object(doc)) {
                        if (push_item(out, &cap, doc, NULL, rules, errstr, errstr_size) != 0)
                                goto fail;
                } else {
                        snprintf(errstr, errstr_size,
                                 "body must be a play object or an array of plays");
                        goto fail;
                }
        }
        if (out->n == 0) {
                snprintf(errstr, errstr_size, "no plays in the request body");
                goto fail;
        }
        json_decref(doc);
        return 0;
fail:
        json_decref(doc);
        plays_batch_free(out);
        return rc == -2 ? -2 : -1;
}

/* ---- the fast path: a strict scanner ----
 * Each function returns false to give up ("not sure"): the body then goes to
 * the reference path, which also produces every error text. So the scanner
 * only has to be right about what it accepts: plain JSON without escapes,
 * non-ASCII, nesting, fractions or negative numbers, duplicate or unknown keys,
 * and plays that pass every rule. */

struct scan {
        const char *p, *end;
};

static void skip_ws(struct scan *s)
{
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
                s->p++;
}

/* A string without escapes, control characters or non-ASCII bytes; s->p at '"'. */
static bool scan_string(struct scan *s, const char **str, size_t *n)
{
        const char *a = ++s->p;
        while (s->p < s->end) {
                unsigned char c = (unsigned char)*s->p;
                if (c == '"') {
                        *str = a;
                        *n = (size_t)(s->p - a);
                        s->p++;
                        return true;
                }
                if (c == '\\' || c < 0x20 || c >= 0x80)
                        return false;
                s->p++;
        }
        return false;
}

static bool scan_literal(struct scan *s, const char *lit, size_t n)
{
        if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
                return false;
        s->p += n;
        /* "truex" is not JSON: the next byte must end the value */
        return s->p == s->end || strchr(" \t\n\r,}]", *s->p) != NULL;
}

enum vtype { V_STRING, V_INT, V_TRUE, V_FALSE, V_NULL };

struct value {
        enum vtype type;
        const char *str;
        size_t len;
        int64_t i;
};

static bool scan_value(struct scan *s, struct value *v)
{
        if (s->p == s->end)
                return false;
        char c = *s->p;
        if (c == '"') {
                v->type = V_STRING;
                return scan_string(s, &v->str, &v->len);
        }
        if (c >= '0' && c <= '9') {
                const char *a = s->p;
                int64_t x = 0;
                while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
                        if (s->p - a >= 18)
                                return false; /* big numbers: the reference decides */
                        x = x * 10 + (*s->p - '0');
                        s->p++;
                }
                if (*a == '0' && s->p - a > 1)
                        return false;
                if (s->p < s->end && !strchr(" \t\n\r,}]", *s->p))
                        return false; /* fraction, exponent or garbage */
                v->type = V_INT;
                v->i = x;
                return true;
        }
        if (c == 't') {
                v->type = V_TRUE;
                return scan_literal(s, "true", 4);
        }
        if (c == 'f') {
                v->type = V_FALSE;
                return scan_literal(s, "false", 5);
        }
        if (c == 'n') {
                v->type = V_NULL;
                return scan_literal(s, "null", 4);
        }
        return false;
}

static int field_index(const char *k, size_t n)
{
        for (int f = 0; f < F_COUNT; f++)
                if (strlen(known_fields[f]) == n && memcmp(known_fields[f], k, n) == 0)
                        return f;
        return -1;
}

/* qz_uuid_valid and lower_uuid in one pass, without the locale's isxdigit
 * (it was the scanner's largest cost). */
static bool take_uuid(const struct value *v, char *out)
{
        if (v->type != V_STRING || v->len != PLAYS_UUID_LEN)
                return false;
        for (size_t i = 0; i < PLAYS_UUID_LEN; i++) {
                char c = v->str[i];
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (c != '-')
                                return false;
                } else if (c >= 'A' && c <= 'F') {
                        c = (char)(c - 'A' + 'a');
                } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                        return false;
                }
                out[i] = c;
        }
        out[PLAYS_UUID_LEN] = '\0';
        return true;
}

static bool take_token(const struct value *v, char *out)
{
        if (v->type != V_STRING || !token_ok(v->str, v->len))
                return false;
        memcpy(out, v->str, v->len);
        out[v->len] = '\0';
        return true;
}

static bool take_field(int f, const struct value *v, struct play *p)
{
        char tmp[64], why[128];
        switch (f) {
        case F_EVENT_ID:
                return take_uuid(v, p->event_id);
        case F_USER_ID:
                return take_uuid(v, p->user_id);
        case F_TRACK_ID:
                return take_uuid(v, p->track_id);
        case F_PLAYLIST:
                return take_uuid(v, p->source_playlist_id);
        case F_SOURCE:
                return take_token(v, p->source);
        case F_DEVICE_TYPE:
                return take_token(v, p->device_type);
        case F_DURATION:
                p->duration_played_ms = v->i;
                return v->type == V_INT;
        case F_COMPLETED:
                p->completed = v->type == V_TRUE;
                return v->type == V_TRUE || v->type == V_FALSE;
        case F_PLAYED_AT:
                if (v->type != V_STRING || v->len >= sizeof(tmp))
                        return false;
                memcpy(tmp, v->str, v->len);
                tmp[v->len] = '\0';
                return qz_time_parse(tmp, &p->played_at, why, sizeof(why)) == 0;
        }
        return false;
}

/* One play object, s->p at '{'; true only when it is valid by every rule. */
static bool scan_play(struct scan *s, const struct plays_rules *rules, struct play *p)
{
        unsigned seen = 0;
        memset(p, 0, sizeof(*p));
        p->played_at = rules->now_ms;
        s->p++;
        skip_ws(s);
        if (s->p == s->end || *s->p != '"')
                return false; /* "{}" or garbage: the reference explains */
        for (;;) {
                const char *k;
                size_t kn;
                struct value v = {0};
                if (s->p == s->end || *s->p != '"' || !scan_string(s, &k, &kn))
                        return false;
                int f = field_index(k, kn);
                if (f < 0 || (seen & (1u << f)))
                        return false;
                seen |= 1u << f;
                skip_ws(s);
                if (s->p == s->end || *s->p != ':')
                        return false;
                s->p++;
                skip_ws(s);
                if (!scan_value(s, &v))
                        return false;
                /* null is "absent": fine for optional fields, an error for required ones */
                if (v.type == V_NULL) {
                        if (f == F_USER_ID || f == F_TRACK_ID || f == F_DURATION || f == F_SOURCE ||
                            f == F_DEVICE_TYPE)
                                return false;
                        seen &= ~(1u << f);
                        seen |= 1u << (F_COUNT + f); /* still a duplicate if it comes again */
                } else if (!take_field(f, &v, p)) {
                        return false;
                }
                skip_ws(s);
                if (s->p == s->end)
                        return false;
                if (*s->p == '}') {
                        s->p++;
                        break;
                }
                if (*s->p != ',')
                        return false;
                s->p++;
                skip_ws(s);
        }
        /* a null that came twice or a value after a null: let the reference judge */
        for (int f = 0; f < F_COUNT; f++)
                if ((seen & (1u << f)) && (seen & (1u << (F_COUNT + f))))
                        return false;
        unsigned required = 1u << F_USER_ID | 1u << F_TRACK_ID | 1u << F_DURATION | 1u << F_SOURCE |
                            1u << F_DEVICE_TYPE;
        if ((seen & required) != required)
                return false;
        const char *reason;
        char err[8];
        if (check_ranges(p, rules, &reason, err, sizeof(err)) != 0)
                return false;
        if (!(seen & (1u << F_EVENT_ID))) {
                qz_uuid_generate(p->event_id);
                p->event_id_generated = true;
        }
        return true;
}

static bool fast_push(struct plays_batch *b, size_t cap, struct scan *s,
                      const struct plays_rules *rules)
{
        if (b->n >= cap || s->p == s->end || *s->p != '{')
                return false;
        struct plays_item *it = &b->items[b->n];
        if (!scan_play(s, rules, &it->play))
                return false;
        it->ok = true;
        it->reason = NULL;
        it->error[0] = '\0';
        b->n++;
        return true;
}

static bool fast_json(const char *body, size_t len, const struct plays_rules *rules,
                      struct plays_batch *b, size_t cap)
{
        struct scan s = {body, body + len};
        skip_ws(&s);
        if (s.p == s.end)
                return false;
        if (*s.p == '{') {
                if (!fast_push(b, cap, &s, rules))
                        return false;
        } else if (*s.p == '[') {
                s.p++;
                for (;;) {
                        skip_ws(&s);
                        if (!fast_push(b, cap, &s, rules))
                                return false;
                        skip_ws(&s);
                        if (s.p == s.end)
                                return false;
                        if (*s.p == ']') {
                                s.p++;
                                break;
                        }
                        if (*s.p != ',')
                                return false;
                        s.p++;
                }
        } else {
                return false;
        }
        skip_ws(&s);
        return s.p == s.end;
}

/* The reference's line splitting, each line one play object. */
static bool fast_ndjson(const char *body, size_t len, const struct plays_rules *rules,
                        struct plays_batch *b, size_t cap)
{
        size_t pos = 0;
        while (pos < len) {
                const char *nl = memchr(body + pos, '\n', len - pos);
                size_t end = nl ? (size_t)(nl - body) : len;
                size_t a = pos, z = end;
                while (a < z && isspace((unsigned char)body[a]))
                        a++;
                while (z > a && isspace((unsigned char)body[z - 1]))
                        z--;
                if (z > a) {
                        struct scan s = {body + a, body + z};
                        if (!fast_push(b, cap, &s, rules))
                                return false;
                        skip_ws(&s);
                        if (s.p != s.end)
                                return false;
                }
                pos = end + 1;
        }
        return true;
}

int plays_parse(const char *body, size_t len, bool ndjson, const struct plays_rules *rules,
                struct plays_batch *out, char *errstr, size_t errstr_size)
{
        memset(out, 0, sizeof(*out));
        /* Every play the scanner accepts opens with '{': that bounds the items. */
        size_t cap = 0;
        const char *p = body, *e = body ? body + len : body;
        while (cap <= rules->max_items && p < e && (p = memchr(p, '{', (size_t)(e - p)))) {
                cap++;
                p++;
        }
        if (cap > 0 && cap <= rules->max_items) {
                out->items = malloc(cap * sizeof(*out->items));
                if (out->items) {
                        bool ok = ndjson ? fast_ndjson(body, len, rules, out, cap)
                                         : fast_json(body, len, rules, out, cap);
                        if (ok && out->n > 0)
                                return 0;
                        plays_batch_free(out);
                }
        }
        return plays_parse_reference(body, len, ndjson, rules, out, errstr, errstr_size);
}

void plays_batch_free(struct plays_batch *b)
{
        free(b->items);
        b->items = NULL;
        b->n = 0;
}
