/* plays.c - parse and validate a POST /v1/plays body into PlayEvent values. */
#include "plays.h"

#include "json.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DURATION_MS (24LL * 3600 * 1000)

static const char *const known_fields[] = {
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
static int check_token(const json_t *item, const char *key, const char **out, char *errstr,
                       size_t errstr_size)
{
        if (qz_json_get_string(item, key, true, out, errstr, errstr_size) != 0)
                return -1;
        size_t n = strlen(*out);
        bool ok = n >= 1 && n <= 32;
        for (size_t i = 0; ok && i < n; i++) {
                char c = (*out)[i];
                ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        }
        if (!ok) {
                snprintf(errstr, errstr_size,
                         "field '%s' must be 1-32 characters of a-z, 0-9, '_' or '-'", key);
                return -1;
        }
        return 0;
}

static json_t *lower_uuid(const char *s)
{
        char buf[QZ_UUID_STR_LEN + 1];
        for (size_t i = 0; i <= QZ_UUID_STR_LEN; i++)
                buf[i] = (char)tolower((unsigned char)s[i]);
        return json_string(buf);
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
        const char *event_id = NULL, *user_id, *track_id, *source, *device, *playlist = NULL;
        int64_t played_at = rules->now_ms, duration;
        bool completed = false;
        const char *key;
        json_t *v;
        char generated[QZ_UUID_STR_LEN + 1];

        if (!json_is_object(item)) {
                *reason = "not_object";
                snprintf(errstr, errstr_size, "a play must be a JSON object");
                return NULL;
        }
        json_object_foreach((json_t *)item, key, v)
        {
                if (!known_field(key)) {
                        *reason = "unknown_field";
                        snprintf(errstr, errstr_size, "unknown field '%.64s'", key);
                        return NULL;
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
             qz_json_get_time(item, "played_at", false, &played_at, errstr, errstr_size) < 0) ||
            (*reason = "duration_played_ms", qz_json_get_int(item, "duration_played_ms", true,
                                                             &duration, errstr, errstr_size) < 0) ||
            (*reason = "completed",
             qz_json_get_bool(item, "completed", false, &completed, errstr, errstr_size) < 0) ||
            (*reason = "source", check_token(item, "source", &source, errstr, errstr_size) < 0) ||
            (*reason = "device_type",
             check_token(item, "device_type", &device, errstr, errstr_size) < 0) ||
            (*reason = "source_playlist_id", qz_json_get_uuid(item, "source_playlist_id", false,
                                                              &playlist, errstr, errstr_size) < 0))
                return NULL;
        if (duration < 0 || duration > MAX_DURATION_MS) {
                *reason = "duration_played_ms";
                snprintf(errstr, errstr_size, "field 'duration_played_ms' must be 0-%lld",
                         MAX_DURATION_MS);
                return NULL;
        }
        if (played_at > rules->now_ms + rules->max_future_ms) {
                *reason = "played_at_future";
                snprintf(errstr, errstr_size, "field 'played_at' is more than %lld s in the future",
                         (long long)(rules->max_future_ms / 1000));
                return NULL;
        }
        if (played_at < rules->now_ms - rules->horizon_ms) {
                *reason = "played_at_too_old";
                snprintf(errstr, errstr_size,
                         "field 'played_at' is older than the replay horizon (%lld days)",
                         (long long)(rules->horizon_ms / 86400000));
                return NULL;
        }
        *reason = NULL;
        if (!event_id) {
                qz_uuid_generate(generated);
                event_id = generated;
        }
        return json_pack("{s:o, s:o, s:o, s:I, s:I, s:b, s:s, s:s, s:o}", "event_id",
                         lower_uuid(event_id), "user_id", lower_uuid(user_id), "track_id",
                         lower_uuid(track_id), "played_at", (json_int_t)played_at,
                         "duration_played_ms", (json_int_t)duration, "completed", completed,
                         "source", source, "device_type", device, "source_playlist_id",
                         playlist ? lower_uuid(playlist) : json_null());
}

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
        it->event = NULL;
        it->reason = NULL;
        if (parse_err) {
                it->reason = "invalid_json";
                snprintf(it->error, sizeof(it->error), "%s", parse_err);
        } else {
                it->event =
                    plays_validate_reason(item, rules, &it->reason, it->error, sizeof(it->error));
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

int plays_parse(const char *body, size_t len, bool ndjson, const struct plays_rules *rules,
                struct plays_batch *out, char *errstr, size_t errstr_size)
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

void plays_batch_free(struct plays_batch *b)
{
        for (size_t i = 0; i < b->n; i++)
                json_decref(b->items[i].event);
        free(b->items);
        b->items = NULL;
        b->n = 0;
}
