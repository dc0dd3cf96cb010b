/* api_tracks.c - POST /api/tracks: validate, write artist/album/track in one transaction, answer
 * the id. */
#include "api_tracks.h"

#include "connpool.h"
#include "json.h"
#include "log.h"
#include "multipart.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct track_in {
        const char *title, *artist_id, *artist_name, *album_id, *album_title, *audio_url,
            *released_at;
        int64_t duration_ms, popularity;
        char *genres; /* Postgres array literal, malloc'd */
};

/* A real calendar date YYYY-MM-DD (year >= 1): checked here so that "2024-02-30" is a 400
 * naming the field, not Postgres's SQLSTATE 22008 text. */
static bool date_ok(const char *s)
{
        static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
                return false;
        for (int i = 0; i < 10; i++)
                if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
                        return false;
        int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return y >= 1 && m >= 1 && m <= 12 && d >= 1 &&
               d <= mdays[m - 1] + (m == 2 && leap ? 1 : 0);
}

/* genres ["rock", "hip-hop"] -> {"rock","hip-hop"} with quotes/backslashes escaped. */
static char *genres_literal(const json_t *a, char *errstr, size_t errstr_size)
{
        size_t cap = 3, i;
        json_t *g;
        json_array_foreach(a, i, g)
        {
                if (!json_is_string(g) || json_string_length(g) == 0 ||
                    json_string_length(g) > 64) {
                        snprintf(errstr, errstr_size,
                                 "genres[%zu] must be a non-empty string of at most 64 bytes", i);
                        return NULL;
                }
                cap += 2 * json_string_length(g) + 3;
        }
        if (json_array_size(a) > 32) {
                snprintf(errstr, errstr_size, "at most 32 genres");
                return NULL;
        }
        char *out = malloc(cap), *p = out;
        if (!out)
                return NULL;
        *p++ = '{';
        json_array_foreach(a, i, g)
        {
                if (i)
                        *p++ = ',';
                *p++ = '"';
                for (const char *c = json_string_value(g); *c; c++) {
                        if (*c == '"' || *c == '\\')
                                *p++ = '\\';
                        *p++ = *c;
                }
                *p++ = '"';
        }
        *p++ = '}';
        *p = '\0';
        return out;
}

static int parse_track(const json_t *b, struct track_in *t, char *err, size_t n)
{
        static const char *const known[] = {
            "title",     "artist_id",   "artist_name", "album_id",   "album_title",
            "audio_url", "released_at", "duration_ms", "popularity", "genres"};
        if (qz_json_check_keys(b, known, sizeof(known) / sizeof(known[0]), err, n) != 0)
                return -1;
        t->duration_ms = 0;
        t->popularity = 0;
        if (qz_json_get_string(b, "title", true, &t->title, err, n) < 0 ||
            qz_json_get_uuid(b, "artist_id", false, &t->artist_id, err, n) < 0 ||
            qz_json_get_string(b, "artist_name", false, &t->artist_name, err, n) < 0 ||
            qz_json_get_uuid(b, "album_id", false, &t->album_id, err, n) < 0 ||
            qz_json_get_string(b, "album_title", false, &t->album_title, err, n) < 0 ||
            qz_json_get_string(b, "audio_url", true, &t->audio_url, err, n) < 0 ||
            qz_json_get_string(b, "released_at", false, &t->released_at, err, n) < 0 ||
            qz_json_get_int(b, "duration_ms", true, &t->duration_ms, err, n) < 0 ||
            qz_json_get_int(b, "popularity", false, &t->popularity, err, n) < 0)
                return -1;
        if (!*t->title || strlen(t->title) > 500) {
                snprintf(err, n, "title must be 1 to 500 bytes");
                return -1;
        }
        if (!t->artist_id == !t->artist_name) {
                snprintf(err, n, "give exactly one of artist_id and artist_name");
                return -1;
        }
        if (t->artist_name && (!*t->artist_name || strlen(t->artist_name) > 500)) {
                snprintf(err, n, "artist_name must be 1 to 500 bytes");
                return -1;
        }
        if (t->album_id && t->album_title) {
                snprintf(err, n, "give at most one of album_id and album_title");
                return -1;
        }
        if (t->album_title && (!*t->album_title || strlen(t->album_title) > 500)) {
                snprintf(err, n, "album_title must be 1 to 500 bytes");
                return -1;
        }
        if (!*t->audio_url || strlen(t->audio_url) > 2048) {
                snprintf(err, n, "audio_url must be 1 to 2048 bytes");
                return -1;
        }
        if (t->duration_ms < 0 || t->duration_ms > 24LL * 3600 * 1000) {
                snprintf(err, n, "duration_ms must be from 0 to 86400000");
                return -1;
        }
        if (t->popularity < 0 || t->popularity > 100) {
                snprintf(err, n, "popularity must be from 0 to 100");
                return -1;
        }
        if (t->released_at && !date_ok(t->released_at)) {
                snprintf(err, n, "released_at must be a date YYYY-MM-DD");
                return -1;
        }
        const json_t *g = json_object_get(b, "genres");
        if (g && !json_is_null(g) && !json_is_array(g)) {
                snprintf(err, n, "genres must be a list of strings");
                return -1;
        }
        json_t *none = json_array();
        t->genres = genres_literal(g && json_is_array(g) ? g : none, err, n);
        json_decref(none);
        return t->genres ? 0 : -1;
}

static const char *insert_sql =
    "WITH a AS (SELECT id FROM artists WHERE id = $2::uuid "
    "  UNION ALL SELECT id FROM artists WHERE $2::uuid IS NULL AND name = $3::text "
    "  ORDER BY id LIMIT 1), "
    "na AS (INSERT INTO artists (name) SELECT $3::text WHERE $2::uuid IS NULL AND NOT EXISTS "
    "  (SELECT 1 FROM a) RETURNING id), "
    "art AS (SELECT id FROM a UNION ALL SELECT id FROM na), "
    "b AS (SELECT al.id FROM albums al, art WHERE al.id = $4::uuid "
    "  UNION ALL SELECT al.id FROM albums al, art WHERE $4::uuid IS NULL AND $5::text IS NOT NULL "
    "  AND al.artist_id = art.id AND al.title = $5::text ORDER BY id LIMIT 1), "
    "nb AS (INSERT INTO albums (artist_id, title) SELECT art.id, $5::text FROM art "
    "  WHERE $5::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM b) RETURNING id), "
    "alb AS (SELECT id FROM b UNION ALL SELECT id FROM nb) "
    "INSERT INTO tracks (title, artist_id, album_id, duration_ms, audio_url, genres, popularity, "
    "  released_at) "
    "SELECT $1::text, art.id, (SELECT id FROM alb), $6::int, $7::text, $8::text[], $9::smallint, "
    "$10::date "
    "FROM art WHERE $4::uuid IS NULL OR EXISTS (SELECT 1 FROM b) RETURNING id";

/* The declared types an upload may carry, and the sniffed format each must match. */
static const struct {
        const char *ctype, *format;
} audio_types[] = {
    {"audio/mpeg", "mp3"},  {"audio/mp3", "mp3"},       {"audio/wav", "wav"},
    {"audio/x-wav", "wav"}, {"audio/wave", "wav"},      {"audio/vnd.wave", "wav"},
    {"audio/flac", "flac"}, {"audio/x-flac", "flac"},   {"audio/ogg", "ogg"},
    {"audio/opus", "ogg"},  {"application/ogg", "ogg"},
};

/* Writes the file as <media>/<uuid>.<format>: a temporary name, fsync, then rename, so
 * the analysis never sees half a file. out gets the absolute path. 0 or -1 (errstr). */
static int store_file(const char *media_dir, const struct mp_part *f, const char *format, char *out,
                      size_t out_size, char *errstr, size_t errstr_size)
{
        char dir[PATH_MAX], tmp[PATH_MAX + 64], id[QZ_UUID_STR_LEN + 1];
        if (!realpath(media_dir, dir)) {
                snprintf(errstr, errstr_size, "media folder %.300s: %s", media_dir,
                         strerror(errno));
                return -1;
        }
        qz_uuid_generate(id);
        snprintf(tmp, sizeof(tmp), "%s/.%s.part", dir, id);
        if (snprintf(out, out_size, "%s/%s.%s", dir, id, format) >= (int)out_size) {
                snprintf(errstr, errstr_size, "media folder path too long");
                return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
                snprintf(errstr, errstr_size, "%.300s: %s", tmp, strerror(errno));
                return -1;
        }
        size_t done = 0;
        while (done < f->len) {
                ssize_t w = write(fd, f->data + done, f->len - done);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break;
                done += (size_t)w;
        }
        bool ok = done == f->len && fsync(fd) == 0;
        int saved = errno;
        if (close(fd) != 0 && ok) { /* closed either way: never close twice */
                ok = false;
                saved = errno;
        }
        if (!ok) {
                snprintf(errstr, errstr_size, "writing %.300s: %s", tmp,
                         done == f->len ? strerror(saved) : "short write");
                unlink(tmp);
                return -1;
        }
        if (rename(tmp, out) != 0) {
                snprintf(errstr, errstr_size, "rename to %.300s: %s", out, strerror(errno));
                unlink(tmp);
                return -1;
        }
        return 0;
}

/* multipart/form-data: part "metadata" (the JSON fields, without audio_url) and part "file"
 * (the audio). Stores the file and returns the metadata with audio_url = its path, or NULL
 * after answering (400/415/500). *stored gets the path to remove if the insert fails. */
static json_t *upload_body(const struct api *a, const struct qz_http_request *req,
                           struct qz_http_response *resp, const char *boundary, char *stored,
                           size_t stored_size)
{
        struct mp_part parts[MP_MAX_PARTS];
        size_t n = 0;
        char err[512];
        const struct mp_part *meta = NULL, *file = NULL;
        if (mp_parse(req->body, req->body_len, boundary, parts, &n, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "%s", err);
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                const struct mp_part **slot = strcmp(parts[i].name, "metadata") == 0 ? &meta
                                              : strcmp(parts[i].name, "file") == 0   ? &file
                                                                                     : NULL;
                if (!slot || *slot) {
                        api_error(resp, 400, API_PLAIN, "bad_request",
                                  "%s part '%.64s': give one 'metadata' (JSON) and one 'file'",
                                  slot ? "repeated" : "unknown", parts[i].name);
                        return NULL;
                }
                *slot = &parts[i];
        }
        if (!meta || !file) {
                api_error(resp, 400, API_PLAIN, "bad_request", "missing part '%s'",
                          meta ? "file" : "metadata");
                return NULL;
        }
        if (file->len == 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "the file is empty");
                return NULL;
        }
        const char *format = mp_sniff_audio(file->data, file->len), *declared = NULL;
        for (size_t i = 0; i < sizeof(audio_types) / sizeof(audio_types[0]); i++)
                if (strcmp(file->ctype, audio_types[i].ctype) == 0)
                        declared = audio_types[i].format;
        if (!declared || !format || strcmp(declared, format) != 0) {
                api_error(resp, 415, API_PLAIN, "unsupported_media_type",
                          "the file must be MP3, WAV, FLAC or Ogg audio with a matching "
                          "Content-Type (declared '%.64s', content %s)",
                          file->ctype[0] ? file->ctype : "none", format ? format : "not audio");
                return NULL;
        }
        json_t *body = qz_json_parse_object((const char *)meta->data, meta->len, err, sizeof(err));
        if (!body) {
                api_error(resp, 400, API_PLAIN, "bad_request", "metadata: %s", err);
                return NULL;
        }
        if (json_object_get(body, "audio_url")) {
                api_error(resp, 400, API_PLAIN, "bad_request",
                          "metadata.audio_url is set by the upload: leave it out");
                json_decref(body);
                return NULL;
        }
        if (store_file(a->cfg.media_dir, file, format, stored, stored_size, err, sizeof(err)) !=
            0) {
                qz_error("upload not stored: %s", err);
                api_error(resp, 500, API_PLAIN, "internal", "the file could not be stored");
                json_decref(body);
                return NULL;
        }
        json_object_set_new(body, "audio_url", json_string(stored));
        return body;
}

void api_tracks_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                        void *opaque)
{
        struct api *a = opaque;
        struct qz_auth_claims who;
        struct track_in t = {0};
        struct connpool_slot *s = NULL;
        PGresult *res = NULL;
        char err[512], boundary[80], stored[PATH_MAX + 64] = "";
        bool created = false;
        if (!api_auth(a, req, resp, true, API_PLAIN, &who))
                return;
        json_t *body = mp_is_form(qz_http_header(req, "Content-Type"), boundary, sizeof(boundary))
                           ? upload_body(a, req, resp, boundary, stored, sizeof(stored))
                           : api_body(req, resp, API_PLAIN, false);
        if (!body)
                return;
        if (parse_track(body, &t, err, sizeof(err)) != 0) {
                api_error(resp, 400, API_PLAIN, "bad_request", "%s", err);
                goto done;
        }
        if (!(s = connpool_acquire(a->pool, a->cfg.pool_wait_ms))) {
                api_error(resp, 503, API_PLAIN, "unavailable", "server busy");
                goto done;
        }
        char dur[24], pop[24];
        snprintf(dur, sizeof(dur), "%lld", (long long)t.duration_ms);
        snprintf(pop, sizeof(pop), "%lld", (long long)t.popularity);
        const char *v[] = {t.title, t.artist_id, t.artist_name, t.album_id, t.album_title,
                           dur,     t.audio_url, t.genres,      pop,        t.released_at};
        res = qz_pg_query(s->pg, insert_sql, 10, v, err, sizeof(err));
        if (!res) {
                const char *st = qz_pg_sqlstate(s->pg);
                if (strncmp(st, "22", 2) == 0) /* e.g. 2024-02-30 */
                        api_error(resp, 400, API_PLAIN, "bad_request", "invalid value: %s", err);
                else
                        api_pg_failed(resp, API_PLAIN, s->pg, "track insert", err);
                goto done;
        }
        if (PQntuples(res) != 1) {
                api_error(resp, 400, API_PLAIN, "bad_request", "%s does not exist",
                          t.album_id ? "artist_id or album_id" : "artist_id");
                goto done;
        }
        char id[QZ_UUID_STR_LEN + 1];
        snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        const char *v2[] = {id};
        res = qz_pg_query(s->pg,
                          "SELECT json_build_object('id', t.id, 'track', " API_TRACK_JSONB
                          ")::text FROM tracks t JOIN artists ar ON ar.id = t.artist_id "
                          "LEFT JOIN albums al ON al.id = t.album_id WHERE t.id = $1::uuid",
                          1, v2, err, sizeof(err));
        if (!res) {
                api_pg_failed(resp, API_PLAIN, s->pg, "track read", err);
                goto done;
        }
        qz_log_kv(QZ_LOG_INFO, "track registered", "track_id", id, "by", who.sub, "file",
                  stored[0] ? stored : "(url)", NULL);
        api_reply_text(resp, 201, PQgetvalue(res, 0, 0));
        qz_http_add_header(resp, "Location", "/api/tracks");
        created = true;
done:
        if (stored[0] && !created)
                unlink(stored); /* no row points at it */
        PQclear(res);
        if (s)
                connpool_release(a->pool, s);
        free(t.genres);
        json_decref(body);
}
