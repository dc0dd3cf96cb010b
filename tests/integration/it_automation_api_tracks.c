/* it_automation_api_tracks.c - POST /api/tracks on the real automation-api binary, read back on
 * tracks.v1: the TrackEvent of an upload (op upsert), of an edit, and of a soft delete.
 *
 * Needs QZ_TEST_BIN (automation-api), QZ_TEST_PG_DSN, QZ_TEST_BROKERS, QZ_TEST_ROOT (schemas),
 * QZ_TEST_TMP (media folder). Also the multipart upload: the file lands in the media folder,
 * audio_url is its path (and the TrackEvent says so); type, size and shape checks leave no file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "auth.h"
#include "avro.h"
#include "pg.h"
#include "json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#define SECRET "it-api-tracks-secret"

static struct {
        const char *bin, *dsn, *brokers, *root, *tmp;
        char media[512], topic[96];
        int port;
        pid_t api;
        struct qz_pg *pg;
        struct qz_avro_registry *avro;
        char *admin;
} g;

static const char *env_or_fail(const char *k)
{
        const char *v = getenv(k);
        if (!v || !*v) {
                fprintf(stderr, "it_automation_api_tracks: %s is not set\n", k);
                exit(1);
        }
        return v;
}

static int free_port(void)
{
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t l = sizeof(a);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
            getsockname(s, (struct sockaddr *)&a, &l) != 0)
                return -1;
        close(s);
        return ntohs(a.sin_port);
}

/* One HTTP/1.1 exchange (Connection: close). Returns the status, fills body (NUL-terminated). */
static int http(const char *method, const char *path, const char *extra_headers, const void *body,
                size_t body_len, char *out, size_t out_size)
{
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)g.port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
                if (s >= 0)
                        close(s);
                return -1;
        }
        char head[4096];
        int n = snprintf(head, sizeof(head),
                         "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: "
                         "%zu\r\n\r\n",
                         method, path, extra_headers ? extra_headers : "", body_len);
        if (write(s, head, (size_t)n) != n) {
                close(s);
                return -1;
        }
        /* a server that refuses the body (413) may close before reading it: the answer is
         * still there to read */
        for (size_t off = 0; off < body_len;) {
                ssize_t w = write(s, (const char *)body + off, body_len - off);
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
        static char buf[1 << 20];
        size_t got = 0;
        ssize_t r;
        while (got + 1 < sizeof(buf) && (r = read(s, buf + got, sizeof(buf) - 1 - got)) > 0)
                got += (size_t)r;
        buf[got] = '\0';
        close(s);
        int status = 0;
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
        const char *b = strstr(buf, "\r\n\r\n");
        snprintf(out, out_size, "%s", b ? b + 4 : "");
        return status;
}

static void start_api(void)
{
        g.port = free_port();
        assert_true(g.port > 0);
        g.api = fork();
        assert_true(g.api >= 0);
        if (g.api == 0) {
                char addr[64], schemas[600], bin[600];
                snprintf(addr, sizeof(addr), "127.0.0.1:%d", g.port);
                snprintf(schemas, sizeof(schemas), "%s/schemas", g.root);
                snprintf(bin, sizeof(bin), "%s/automation-api", g.bin);
                setenv("QOQNUZ_HTTP_ADDR", addr, 1);
                setenv("QOQNUZ_PG_DSN", g.dsn, 1);
                setenv("QOQNUZ_KAFKA_BROKERS", g.brokers, 1);
                setenv("QOQNUZ_SCHEMA_DIR", schemas, 1);
                setenv("QOQNUZ_TRACKS_TOPIC", g.topic, 1);
                setenv("QOQNUZ_MEDIA_DIR", g.media, 1);
                setenv("QOQNUZ_API_MAX_BODY", "65536", 1); /* the upload limit too */
                setenv("QOQNUZ_SCHEDULER_ENABLED", "false", 1);
                setenv("QOQNUZ_REDIS_URL", "redis://127.0.0.1:1/0", 1);
                setenv("QOQNUZ_LOG_LEVEL", "error", 1);
                setenv("JWT_SECRET", SECRET, 1);
                setenv("WORKER_SECRET", "w", 1);
                execl(bin, bin, (char *)NULL);
                _exit(127);
        }
        char body[4096];
        for (int i = 0; i < 300; i++) {
                if (http("GET", "/readyz", NULL, NULL, 0, body, sizeof(body)) == 200)
                        return;
                int st;
                if (waitpid(g.api, &st, WNOHANG) == g.api)
                        fail_msg("automation-api exited during start (status %d)", st);
                usleep(100 * 1000);
        }
        fail_msg("automation-api not ready on %d", g.port);
}

static int setup(void **state)
{
        (void)state;
        char err[512];
        signal(SIGPIPE, SIG_IGN);
        g.bin = env_or_fail("QZ_TEST_BIN");
        g.dsn = env_or_fail("QZ_TEST_PG_DSN");
        g.brokers = env_or_fail("QZ_TEST_BROKERS");
        g.root = env_or_fail("QZ_TEST_ROOT");
        g.tmp = env_or_fail("QZ_TEST_TMP");
        /* our own topic: nothing else's TrackEvents to read through */
        snprintf(g.topic, sizeof(g.topic), "tracks.it-api-%d.v1", (int)getpid());
        snprintf(g.media, sizeof(g.media), "%s/api-media-%d", g.tmp, (int)getpid());
        mkdir(g.media, 0755);
        char schemas[600];
        snprintf(schemas, sizeof(schemas), "%s/schemas", g.root);
        if (qz_avro_registry_load(schemas, &g.avro, err, sizeof(err)) != 0)
                fail_msg("schemas: %s", err);
        struct qz_pg_opts po = {.dsn = g.dsn, .application_name = "it_automation_api_tracks"};
        if (!(g.pg = qz_pg_new(&po, err, sizeof(err))) || qz_pg_connect(g.pg, err, sizeof(err)))
                fail_msg("postgres: %s", err);
        g.admin = qz_auth_sign(SECRET, "00000000-0000-4000-8000-000000000001", "admin",
                               (int64_t)time(NULL) + 3600, err, sizeof(err));
        assert_non_null(g.admin);
        start_api();
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        if (g.api > 0) {
                kill(g.api, SIGTERM);
                int st = 0;
                waitpid(g.api, &st, 0);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        fprintf(stderr, "automation-api did not exit 0 on SIGTERM (%d)\n", st);
        }
        qz_pg_free(g.pg);
        qz_avro_registry_free(g.avro);
        free(g.admin);
        return 0;
}

static void sql(const char *q, const char *p1)
{
        char err[512];
        const char *v[] = {p1};
        PGresult *r = qz_pg_query(g.pg, q, p1 ? 1 : 0, v, err, sizeof(err));
        if (!r)
                fail_msg("%s: %s", q, err);
        PQclear(r);
}

/* The topic from the beginning (new group) for up to wait_ms: the first TrackEvent keyed key
 * whose op is op, decoded (NULL when none came). */
static json_t *wait_event(rd_kafka_t **rkp, const char *key, const char *op, int wait_ms)
{
        char err[512];
        if (!*rkp) {
                char group[128];
                snprintf(group, sizeof(group), "it-api-tracks-%d", (int)getpid());
                rd_kafka_conf_t *conf = rd_kafka_conf_new();
                rd_kafka_conf_set(conf, "bootstrap.servers", g.brokers, err, sizeof(err));
                rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
                rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
                rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof(err));
                rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "500", err,
                                  sizeof(err));
                *rkp = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
                assert_non_null(*rkp);
                rd_kafka_poll_set_consumer(*rkp);
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, g.topic, RD_KAFKA_PARTITION_UA);
                rd_kafka_subscribe(*rkp, l);
                rd_kafka_topic_partition_list_destroy(l);
        }
        for (int waited = 0; waited < wait_ms; waited += 100) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(*rkp, 100);
                if (!m)
                        continue;
                json_t *ev = NULL;
                if (!m->err && m->key && m->key_len == strlen(key) &&
                    memcmp(m->key, key, m->key_len) == 0) {
                        const struct qz_avro_schema *s = NULL;
                        if (qz_avro_decode_json(g.avro, m->payload, m->len, &s, &ev, err,
                                                sizeof(err)) != 0)
                                fail_msg("undecodable TrackEvent: %s", err);
                        assert_string_equal(qz_avro_schema_name(s), "qoqnuz.TrackEvent");
                        if (strcmp(json_string_value(json_object_get(ev, "op")), op) != 0) {
                                json_decref(ev);
                                ev = NULL;
                        }
                }
                rd_kafka_message_destroy(m);
                if (ev)
                        return ev;
        }
        return NULL;
}

static const char *str(const json_t *o, const char *k)
{
        const char *v = json_string_value(json_object_get(o, k));
        return v ? v : "(null)";
}

/* Upload (JSON), edit, soft delete: one TrackEvent each, with the row's values. */
static void test_upload_edit_delete(void **state)
{
        (void)state;
        char hdr[1024], body[8192], id[64], artist[64], name[64];
        snprintf(name, sizeof(name), "IT Artist %d", (int)getpid());
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
                 g.admin);
        json_t *req =
            json_pack("{s:s, s:s, s:s, s:i, s:s, s:[s,s], s:i, s:s}", "title", "Read Back",
                      "artist_name", name, "album_title", "IT Album", "duration_ms", 183000,
                      "audio_url", "http://127.0.0.1:9/a.wav", "genres", "jazz", "soul",
                      "popularity", 42, "released_at", "2021-06-30");
        char *rb = json_dumps(req, JSON_COMPACT);
        int st = http("POST", "/api/tracks", hdr, rb, strlen(rb), body, sizeof(body));
        free(rb);
        json_decref(req);
        if (st != 201)
                fail_msg("POST /api/tracks: %d %s", st, body);
        json_t *ans = json_loads(body, 0, NULL);
        assert_non_null(ans);
        snprintf(id, sizeof(id), "%s", str(ans, "id"));
        snprintf(artist, sizeof(artist), "%s",
                 str(json_object_get(json_object_get(ans, "track"), "artists"), "id"));
        json_decref(ans);

        rd_kafka_t *rk = NULL;
        json_t *ev = wait_event(&rk, id, "upsert", 15000);
        if (!ev)
                fail_msg("no TrackEvent upsert for %s on %s", id, g.topic);
        assert_string_equal(str(ev, "track_id"), id);
        assert_string_equal(str(ev, "title"), "Read Back");
        assert_string_equal(str(ev, "artist_id"), artist);
        assert_string_equal(str(ev, "artist_name"), name);
        assert_string_equal(str(ev, "album_title"), "IT Album");
        assert_true(qz_uuid_valid(str(ev, "album_id")));
        assert_int_equal(json_integer_value(json_object_get(ev, "duration_ms")), 183000);
        assert_int_equal(json_integer_value(json_object_get(ev, "popularity")), 42);
        assert_string_equal(str(ev, "released_at"), "2021-06-30");
        assert_string_equal(str(ev, "audio_url"), "http://127.0.0.1:9/a.wav");
        json_t *genres = json_object_get(ev, "genres");
        assert_int_equal(json_array_size(genres), 2);
        assert_string_equal(json_string_value(json_array_get(genres, 0)), "jazz");
        assert_string_equal(json_string_value(json_array_get(genres, 1)), "soul");
        json_int_t updated = json_integer_value(json_object_get(ev, "updated_at"));
        assert_true(updated > (json_int_t)(time(NULL) - 600) * 1000);
        json_decref(ev);

        /* an edit is a new version: upsert again with the new title */
        sql("UPDATE tracks SET title = 'Read Back (edit)' WHERE id = $1::uuid", id);
        for (int i = 0; i < 3 && !(ev = wait_event(&rk, id, "upsert", 5000)); i++)
                ;
        assert_non_null(ev);
        if (strcmp(str(ev, "title"), "Read Back (edit)") != 0) { /* the first one again? */
                json_decref(ev);
                ev = wait_event(&rk, id, "upsert", 10000);
                assert_non_null(ev);
        }
        assert_string_equal(str(ev, "title"), "Read Back (edit)");
        json_decref(ev);

        /* soft delete: op delete, carrying the last values, updated_at = deleted_at */
        sql("UPDATE tracks SET deleted_at = now() WHERE id = $1::uuid", id);
        ev = wait_event(&rk, id, "delete", 15000);
        if (!ev)
                fail_msg("no TrackEvent delete for %s", id);
        assert_string_equal(str(ev, "title"), "Read Back (edit)");
        assert_string_equal(str(ev, "artist_name"), name);
        json_decref(ev);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

/* A 0.1 s 8 kHz mono 16-bit WAV. */
static size_t make_wav(unsigned char *w)
{
        const unsigned frames = 800, data = frames * 2;
        unsigned char h[44] = "RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0"
                              "\x02\0\x10\0data";
        unsigned riff = 36 + data;
        for (int i = 0; i < 4; i++) {
                h[4 + i] = (unsigned char)(riff >> (8 * i));
                h[40 + i] = (unsigned char)(data >> (8 * i));
        }
        memcpy(w, h, 44);
        for (unsigned i = 0; i < data; i++)
                w[44 + i] = (unsigned char)((i * 37) & 0xff);
        return 44 + data;
}

/* A multipart body with a metadata part and a file part (file_type NULL: no Content-Type). */
static size_t form(unsigned char *out, size_t out_size, const char *meta, const char *file_type,
                   const void *file, size_t file_len)
{
        size_t n = (size_t)snprintf((char *)out, out_size,
                                    "--QzB0undary\r\nContent-Disposition: form-data; "
                                    "name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n"
                                    "%s\r\n--QzB0undary\r\nContent-Disposition: form-data; "
                                    "name=\"file\"; filename=\"../../etc/x.wav\"\r\n%s%s%s\r\n",
                                    meta, file_type ? "Content-Type: " : "",
                                    file_type ? file_type : "", file_type ? "\r\n" : "");
        assert_true(n + file_len + 32 < out_size);
        memcpy(out + n, file, file_len);
        n += file_len;
        n += (size_t)snprintf((char *)out + n, out_size - n, "\r\n--QzB0undary--\r\n");
        return n;
}

static int files_in_media(void)
{
        DIR *d = opendir(g.media);
        int n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)))
                n += e->d_name[0] != '.';
        if (d)
                closedir(d);
        return n;
}

static void test_multipart_upload(void **state)
{
        (void)state;
        static unsigned char wav[4096], body[200000];
        char hdr[1024], ans[8192], meta[512];
        size_t wl = make_wav(wav);
        snprintf(hdr, sizeof(hdr),
                 "Authorization: Bearer %s\r\nContent-Type: multipart/form-data; "
                 "boundary=QzB0undary\r\n",
                 g.admin);
        snprintf(meta, sizeof(meta),
                 "{\"title\": \"Uploaded File\", \"artist_name\": \"IT Up %d\", "
                 "\"duration_ms\": 100, \"genres\": [\"ambient\"]}",
                 (int)getpid());
        int before = files_in_media();

        /* refused: each leaves no file behind */
        static const unsigned char text[] = "just some text, not audio";
        struct {
                const char *what, *type;
                const void *file;
                size_t len;
                int status;
        } bad[] = {
            {"declared text/plain", "text/plain", wav, wl, 415},
            {"no Content-Type", NULL, wav, wl, 415},
            {"audio/wav that is text", "audio/wav", text, sizeof(text) - 1, 415},
            {"audio/mpeg that is a WAV", "audio/mpeg", wav, wl, 415},
            {"empty file", "audio/wav", "", 0, 400},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                size_t n = form(body, sizeof(body), meta, bad[i].type, bad[i].file, bad[i].len);
                int st = http("POST", "/api/tracks", hdr, body, n, ans, sizeof(ans));
                if (st != bad[i].status)
                        fail_msg("%s: %d %s (want %d)", bad[i].what, st, ans, bad[i].status);
        }
        /* over QOQNUZ_API_MAX_BODY (64 KiB): 413 */
        static unsigned char big[100000];
        memcpy(big, wav, wl);
        size_t n = form(body, sizeof(body), meta, "audio/wav", big, sizeof(big));
        int st = http("POST", "/api/tracks", hdr, body, n, ans, sizeof(ans));
        if (st != 413)
                fail_msg("oversized upload: %d %s", st, ans);
        /* audio_url in the metadata, a missing file part, garbage, no token */
        char meta_url[600];
        snprintf(meta_url, sizeof(meta_url),
                 "{\"title\": \"x\", \"artist_name\": \"y\", \"duration_ms\": 1, "
                 "\"audio_url\": \"http://x/y\"}");
        n = form(body, sizeof(body), meta_url, "audio/wav", wav, wl);
        assert_int_equal(http("POST", "/api/tracks", hdr, body, n, ans, sizeof(ans)), 400);
        static const char nofile[] = "--QzB0undary\r\nContent-Disposition: form-data; "
                                     "name=\"metadata\"\r\n\r\n{}\r\n--QzB0undary--\r\n";
        assert_int_equal(
            http("POST", "/api/tracks", hdr, nofile, sizeof(nofile) - 1, ans, sizeof(ans)), 400);
        assert_int_equal(
            http("POST", "/api/tracks", hdr, "--QzB0undary\r\nxx", 16, ans, sizeof(ans)), 400);
        n = form(body, sizeof(body), meta, "audio/wav", wav, wl);
        assert_int_equal(http("POST", "/api/tracks",
                              "Content-Type: multipart/form-data; boundary=QzB0undary\r\n", body, n,
                              ans, sizeof(ans)),
                         401);
        assert_int_equal(files_in_media(), before);

        /* accepted: the file is stored under the media folder, audio_url is its path */
        st = http("POST", "/api/tracks", hdr, body, n, ans, sizeof(ans));
        if (st != 201)
                fail_msg("multipart upload: %d %s", st, ans);
        assert_int_equal(files_in_media(), before + 1);
        json_t *j = json_loads(ans, 0, NULL);
        assert_non_null(j);
        char id[64], url[1024], real[4096], err[256];
        snprintf(id, sizeof(id), "%s", str(j, "id"));
        json_decref(j);
        const char *v[] = {id};
        PGresult *r = qz_pg_query(g.pg, "SELECT audio_url FROM tracks WHERE id = $1::uuid", 1, v,
                                  err, sizeof(err));
        assert_non_null(r);
        assert_int_equal(PQntuples(r), 1);
        snprintf(url, sizeof(url), "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        assert_non_null(realpath(g.media, real));
        if (strncmp(url, real, strlen(real)) != 0 || url[strlen(real)] != '/' ||
            strcmp(url + strlen(url) - 4, ".wav") != 0)
                fail_msg("audio_url %s is not a .wav under %s", url, real);
        FILE *f = fopen(url, "rb");
        assert_non_null(f);
        static unsigned char back[8192];
        size_t got = fread(back, 1, sizeof(back), f);
        fclose(f);
        assert_int_equal(got, wl);
        assert_memory_equal(back, wav, wl);
        /* the analysis tasks are queued for it, and tracks.v1 carries the path */
        r = qz_pg_query(g.pg,
                        "SELECT count(*) FROM background_tasks WHERE entity_id = "
                        "$1::uuid",
                        1, v, err, sizeof(err));
        assert_non_null(r);
        assert_string_equal(PQgetvalue(r, 0, 0), "3");
        PQclear(r);
        rd_kafka_t *rk = NULL;
        json_t *ev = wait_event(&rk, id, "upsert", 15000);
        if (!ev)
                fail_msg("no TrackEvent for the uploaded file's track %s", id);
        assert_string_equal(str(ev, "audio_url"), url);
        assert_string_equal(str(ev, "title"), "Uploaded File");
        json_decref(ev);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_upload_edit_delete),
            cmocka_unit_test(test_multipart_upload),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
