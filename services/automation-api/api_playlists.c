/* api_playlists.c - smart playlists: read the caller's current lists, generate one through the
 * builder. */
#include "api_playlists.h"

#include "avro.h"
#include "connpool.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "prodref.h"
#include "waiter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a parameter's value is checked (the builder's own rules, docs/playlist-builder.md
 * "Parameterised types", so a bad value is a 400 here instead of a 422 after a round trip). */
enum pkind { P_UUID, P_WORD, P_ACTIVITY, P_BPM, P_GENRES, P_DECADE };

struct pdef {
        const char *name;
        enum pkind kind;
        bool required;
};

/* The vocabulary (DESIGN.md, Algorithms) with each type's parameters; tempo needs min_bpm
 * and/or max_bpm (checked apart). Every type also takes `limit` (1..500, the builder's
 * QOQNUZ_PLAYLIST_MAX_TRACKS range; the builder checks its configured maximum). */
static const struct {
        const char *type;
        struct pdef p[2];
        size_t np;
} types[] = {
    {"daily_mix", {{0}}, 0},
    {"discovery_weekly", {{0}}, 0},
    {"new_for_you", {{0}}, 0},
    {"forgotten_favorites", {{0}}, 0},
    {"artist_radio", {{"artist_id", P_UUID, true}}, 1},
    {"track_radio", {{"track_id", P_UUID, true}}, 1},
    {"mood", {{"mood", P_WORD, true}}, 1},
    {"activity", {{"activity", P_ACTIVITY, true}}, 1},
    {"tempo", {{"min_bpm", P_BPM, false}, {"max_bpm", P_BPM, false}}, 2},
    {"genre_mix", {{"genres", P_GENRES, true}}, 1},
    {"decade", {{"decade", P_DECADE, true}}, 1},
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static const char *const activities[] = {"workout", "running", "party", "focus",
                                         "study",   "relax",   "sleep", "commute"};

static const char valid_list[] =
    "daily_mix, discovery_weekly, new_for_you, forgotten_favorites, artist_radio (artist_id: "
    "uuid), track_radio (track_id: uuid), mood (mood), activity (activity: workout, running, "
    "party, focus, study, relax, sleep, commute), tempo (min_bpm and/or max_bpm: 20-300), "
    "genre_mix (genres: 1-8 names, a list or comma-separated), decade (decade: 1990 or 1990s); "
    "every type also takes limit (1-500)";

bool playlists_type_known(const char *type)
{
        for (size_t i = 0; type && i < NTYPES; i++)
                if (strcmp(types[i].type, type) == 0)
                        return true;
        return false;
}

/* The type's parameter names for an error message: "mood, limit". */
static void names_of(size_t t, char *out, size_t out_size)
{
        size_t o = 0;
        out[0] = '\0';
        for (size_t i = 0; i < types[t].np && o < out_size; i++)
                o += (size_t)snprintf(out + o, out_size - o, "%s, ", types[t].p[i].name);
        if (o < out_size)
                snprintf(out + o, out_size - o, "limit");
}

/* A value as a string: strings as they are, numbers printed, a list of strings joined with
 * commas (genres). 0, or -1 when the value has another shape or does not fit. */
static int as_string(const json_t *v, char *out, size_t out_size)
{
        if (json_is_string(v))
                return json_string_length(v) < out_size
                           ? (snprintf(out, out_size, "%s", json_string_value(v)), 0)
                           : -1;
        if (json_is_integer(v))
                return snprintf(out, out_size, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) <
                               (int)out_size
                           ? 0
                           : -1;
        if (json_is_real(v))
                return snprintf(out, out_size, "%.17g", json_real_value(v)) < (int)out_size ? 0
                                                                                            : -1;
        if (!json_is_array(v))
                return -1;
        size_t o = 0, i;
        json_t *e;
        out[0] = '\0';
        json_array_foreach(v, i, e)
        {
                if (!json_is_string(e) || o + json_string_length(e) + 2 > out_size)
                        return -1;
                o += (size_t)snprintf(out + o, out_size - o, "%s%s", i ? "," : "",
                                      json_string_value(e));
        }
        return 0;
}

static bool number_in(const char *s, double lo, double hi, double *out)
{
        char *end = NULL;
        double x = strtod(s, &end);
        if (!*s || !end || *end || !isfinite(x) || x < lo || x > hi)
                return false;
        *out = x;
        return true;
}

/* Checks one value of the given kind; false with errstr. */
static bool value_ok(const struct pdef *d, const char *v, char *errstr, size_t errstr_size)
{
        double x;
        switch (d->kind) {
        case P_UUID:
                if (qz_uuid_valid(v))
                        return true;
                snprintf(errstr, errstr_size, "params.%s must be a UUID", d->name);
                return false;
        case P_WORD:
                if (*v && strlen(v) <= 64 && !strpbrk(v, "\"\\{},"))
                        return true;
                snprintf(errstr, errstr_size, "params.%s must be a word of 1-64 bytes", d->name);
                return false;
        case P_ACTIVITY:
                for (size_t i = 0; i < sizeof(activities) / sizeof(activities[0]); i++)
                        if (strcmp(v, activities[i]) == 0)
                                return true;
                snprintf(errstr, errstr_size,
                         "params.%s must be one of workout, running, party, focus, study, "
                         "relax, sleep, commute",
                         d->name);
                return false;
        case P_BPM:
                if (number_in(v, 20, 300, &x))
                        return true;
                snprintf(errstr, errstr_size, "params.%s must be a number from 20 to 300", d->name);
                return false;
        case P_DECADE: {
                char *end = NULL;
                long y = strtol(v, &end, 10);
                if (end != v && (!*end || strcmp(end, "s") == 0) && y >= 1900 && y <= 2100 &&
                    y % 10 == 0)
                        return true;
                snprintf(errstr, errstr_size, "params.%s must be a decade like 1990 or 1990s",
                         d->name);
                return false;
        }
        case P_GENRES: {
                size_t n = 0, len = 0;
                bool bad = false;
                for (const char *p = v;; p++) {
                        if (*p == ',' || !*p) {
                                if (len)
                                        n++;
                                if (len > 64)
                                        bad = true;
                                len = 0;
                                if (!*p)
                                        break;
                        } else if (strchr("\"\\{}", *p)) {
                                bad = true;
                        } else if (*p != ' ' || len) {
                                len++;
                        }
                }
                if (!bad && n >= 1 && n <= 8)
                        return true;
                snprintf(errstr, errstr_size,
                         "params.%s must be 1-8 genre names of at most 64 bytes (a list or "
                         "comma-separated, without quotes, backslashes or braces)",
                         d->name);
                return false;
        }
        }
        return false;
}

json_t *playlists_check_request(const char *type, const json_t *params, char *errstr,
                                size_t errstr_size)
{
        size_t t = NTYPES;
        for (size_t i = 0; type && i < NTYPES; i++)
                if (strcmp(types[i].type, type) == 0)
                        t = i;
        if (t == NTYPES) {
                snprintf(errstr, errstr_size, "unknown playlistType '%s'; valid: %s",
                         type ? type : "", valid_list);
                return NULL;
        }
        if (params && !json_is_null(params) && !json_is_object(params)) {
                snprintf(errstr, errstr_size, "params must be an object");
                return NULL;
        }
        char names[128];
        names_of(t, names, sizeof(names));
        json_t *out = json_object();
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)params, k, v)
        {
                const struct pdef *d = NULL;
                static const struct pdef limit = {"limit", P_BPM, false};
                for (size_t i = 0; i < types[t].np; i++)
                        if (strcmp(types[t].p[i].name, k) == 0)
                                d = &types[t].p[i];
                if (!d && strcmp(k, "limit") == 0)
                        d = &limit;
                if (!d) {
                        snprintf(errstr, errstr_size,
                                 "unknown params.%.64s for playlistType %s; valid params: %s", k,
                                 type, names);
                        goto fail;
                }
                char val[1024];
                if (as_string(v, val, sizeof(val)) != 0 ||
                    (json_is_array(v) && d->kind != P_GENRES)) {
                        snprintf(errstr, errstr_size, "params.%s must be a %s", k,
                                 d->kind == P_GENRES ? "string or a list of strings"
                                                     : "string or a number");
                        goto fail;
                }
                if (d == &limit) {
                        double x;
                        if (!number_in(val, 1, 500, &x) || x != (double)(long)x) {
                                snprintf(errstr, errstr_size,
                                         "params.limit must be an integer from 1 to 500");
                                goto fail;
                        }
                } else if (!value_ok(d, val, errstr, errstr_size)) {
                        goto fail;
                }
                json_object_set_new(out, k, json_string(val));
        }
        for (size_t i = 0; i < types[t].np; i++)
                if (types[t].p[i].required && !json_object_get(out, types[t].p[i].name)) {
                        snprintf(errstr, errstr_size, "playlistType %s needs params.%s", type,
                                 types[t].p[i].name);
                        goto fail;
                }
        if (strcmp(type, "tempo") == 0) {
                const char *lo = json_string_value(json_object_get(out, "min_bpm"));
                const char *hi = json_string_value(json_object_get(out, "max_bpm"));
                if (!lo && !hi) {
                        snprintf(errstr, errstr_size,
                                 "playlistType tempo needs params.min_bpm and/or params.max_bpm");
                        goto fail;
                }
                if (lo && hi && strtod(lo, NULL) > strtod(hi, NULL)) {
                        snprintf(errstr, errstr_size, "params.min_bpm is above params.max_bpm");
                        goto fail;
                }
        }
        return out;
fail:
        json_decref(out);
        return NULL;
}

/* One JSON text: {"playlists": [...]}, tracks joined from the catalog in list order. */
static const char *list_sql =
    "SELECT json_build_object('playlists', coalesce(json_agg(json_build_object("
    "'id', sp.id, 'playlist_type', sp.playlist_type, 'track_ids', to_json(sp.track_ids), "
    "'tracks', (SELECT coalesce(jsonb_agg(" API_TRACK_JSONB " ORDER BY x.ord), '[]'::jsonb) "
    "FROM unnest(sp.track_ids) WITH ORDINALITY AS x (id, ord) "
    "JOIN tracks t ON t.id = x.id AND t.deleted_at IS NULL "
    "JOIN artists ar ON ar.id = t.artist_id LEFT JOIN albums al ON al.id = t.album_id), "
    "'track_count', cardinality(sp.track_ids), "
    "'generated_at', " API_TS("sp.generated_at") ", 'expires_at', " API_TS(
        "sp.expires_at") ") ORDER BY sp.playlist_type), '[]'::json))::text "
                         "FROM smart_playlists sp WHERE sp.user_id = $1::uuid AND sp.expires_at > "
                         "now() "
                         "AND ($2::text IS NULL OR sp.playlist_type = $2::text)";

void api_playlists_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                          void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        if (!api_auth(a, req, resp, false, API_PLAIN, &who))
                return;
        if (!qz_uuid_valid(who.sub)) {
                api_error(resp, 400, API_PLAIN, "bad_request", "the token's sub is not a user id");
                return;
        }
        const char *type = qz_http_query(req, "type");
        if (type && !playlists_type_known(type)) {
                api_error(resp, 400, API_PLAIN, "bad_request", "unknown type '%s'; valid: %s", type,
                          valid_list);
                return;
        }
        struct connpool_slot *s = connpool_acquire(a->pool, a->cfg.pool_wait_ms);
        if (!s) {
                api_error(resp, 503, API_PLAIN, "unavailable", "server busy");
                return;
        }
        char err[512];
        const char *v[] = {who.sub, type};
        PGresult *res = qz_pg_query(s->pg, list_sql, 2, v, err, sizeof(err));
        if (!res)
                api_pg_failed(resp, API_PLAIN, s->pg, "smart playlists", err);
        else
                api_reply_text(resp, 200, PQgetvalue(res, 0, 0));
        PQclear(res);
        connpool_release(a->pool, s);
}

/* Publishes the PlaylistRequest; returns the HTTP status to fail with, or 0. */
static int publish_request(struct api *a, const char *request_id, const char *user,
                           const char *type, json_t *params, char *errstr, size_t errstr_size)
{
        const struct qz_avro_schema *schema = qz_avro_schema_get(a->avro, "PlaylistRequest");
        unsigned char *buf = NULL;
        size_t len;
        int status = 500;
        json_t *msg =
            json_pack("{s:s, s:s, s:s, s:O, s:s, s:n}", "request_id", request_id, "user_id", user,
                      "playlist_type", type, "params", params, "reason", "manual", "run_id");
        if (!schema || !msg ||
            qz_avro_encode_json(schema, msg, &buf, &len, errstr, errstr_size) != 0) {
                if (!schema)
                        snprintf(errstr, errstr_size, "schema qoqnuz.PlaylistRequest not found");
                goto done;
        }
        struct qz_kafka_record rec = {.topic = a->cfg.playlists_topic,
                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                      .key = user,
                                      .key_len = strlen(user),
                                      .value = buf,
                                      .value_len = len};
        enum qz_kafka_status kr = qz_kafka_produce_wait(
            prodref_get(a->producer), &rec, 1, (int)a->cfg.ack_timeout_ms, errstr, errstr_size);
        prodref_put(a->producer);
        switch (kr) {
        case QZ_KAFKA_OK:
                status = 0;
                break;
        case QZ_KAFKA_QUEUE_FULL:
                status = 429;
                break;
        case QZ_KAFKA_UNAVAILABLE:
                status = 503;
                break;
        case QZ_KAFKA_REJECTED:
                status = 500;
                break;
        }
done:
        json_decref(msg);
        free(buf);
        return status;
}

void api_playlists_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                           void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        json_t *body = NULL, *params = NULL;
        struct waiter_entry *wait = NULL;
        struct connpool_slot *s = NULL;
        char err[512];
        if (!api_auth(a, req, resp, false, API_SUCCESS, &who))
                return;
        if (!qz_uuid_valid(who.sub)) {
                api_error(resp, 400, API_SUCCESS, "bad_request",
                          "the token's sub is not a user id");
                return;
        }
        if (!(body = api_body(req, resp, API_SUCCESS, false)))
                return;
        const char *type = NULL;
        static const char *const known[] = {"playlistType", "params"};
        if (qz_json_check_keys(body, known, 2, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_SUCCESS, "bad_request", "%s", err);
                goto done;
        }
        if (qz_json_get_string(body, "playlistType", true, &type, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_SUCCESS, "bad_request", "%s; valid types: %s", err,
                          valid_list);
                goto done;
        }
        if (!(params = playlists_check_request(type, json_object_get(body, "params"), err,
                                               sizeof(err)))) {
                api_error(resp, 400, API_SUCCESS, "bad_request", "%s", err);
                goto done;
        }
        if (!waiter_ready(a->waiter)) {
                api_error(resp, 503, API_SUCCESS, "unavailable",
                          "not listening for playlist_ready (database unavailable)");
                qz_http_add_header(resp, "Retry-After", "2");
                goto done;
        }
        char request_id[QZ_UUID_STR_LEN + 1];
        qz_uuid_generate(request_id);
        if (!(wait = waiter_register(a->waiter, request_id))) {
                api_error(resp, 500, API_SUCCESS, "internal", "out of memory");
                goto done;
        }
        int st = publish_request(a, request_id, who.sub, type, params, err, sizeof(err));
        if (st != 0) {
                waiter_cancel(a->waiter, wait);
                wait = NULL;
                qz_warn("playlist request not published: %s", err);
                api_error(resp, st, API_SUCCESS, st == 429 ? "overloaded" : "unavailable",
                          "the playlist request could not be queued: %s", err);
                if (st != 500)
                        qz_http_add_header(resp, "Retry-After", "2");
                goto done;
        }
        bool ok = false;
        char builder_err[256];
        int got = waiter_wait(a->waiter, wait, a->cfg.playlist_timeout_ms, &ok, builder_err,
                              sizeof(builder_err));
        wait = NULL;
        if (!got) {
                qz_http_reply_json_new(
                    resp, 504,
                    json_pack("{s:b, s:s, s:s, s:{s:s, s:s}}", "success", 0, "playlist_type", type,
                              "request_id", request_id, "error", "code", "timeout", "message",
                              "the playlist builder did not answer in time; the playlist will "
                              "still be generated"));
                goto done;
        }
        if (!ok) {
                qz_http_reply_json_new(resp, 422,
                                       json_pack("{s:b, s:s, s:s, s:{s:s, s:s}}", "success", 0,
                                                 "playlist_type", type, "request_id", request_id,
                                                 "error", "code", "generation_failed", "message",
                                                 builder_err));
                goto done;
        }
        if (!(s = connpool_acquire(a->pool, a->cfg.pool_wait_ms))) {
                api_error(resp, 503, API_SUCCESS, "unavailable", "server busy");
                goto done;
        }
        const char *v[] = {who.sub, type};
        PGresult *res = qz_pg_query(s->pg,
                                    "SELECT id, to_json(track_ids)::text FROM smart_playlists "
                                    "WHERE user_id = $1::uuid AND playlist_type = $2",
                                    2, v, err, sizeof(err));
        if (!res) {
                api_pg_failed(resp, API_SUCCESS, s->pg, "reading the new playlist", err);
                goto done;
        }
        json_t *ids = PQntuples(res) ? json_loads(PQgetvalue(res, 0, 1), 0, NULL) : NULL;
        qz_http_reply_json_new(
            resp, 200,
            json_pack("{s:b, s:s, s:o, s:s, s:s?, s:s}", "success", 1, "playlist_type", type,
                      "track_ids", ids ? ids : json_array(), "message",
                      "Playlist generated successfully", "playlist_id",
                      PQntuples(res) ? PQgetvalue(res, 0, 0) : NULL, "request_id", request_id));
        PQclear(res);
done:
        if (s)
                connpool_release(a->pool, s);
        if (wait)
                waiter_cancel(a->waiter, wait);
        json_decref(params);
        json_decref(body);
}
