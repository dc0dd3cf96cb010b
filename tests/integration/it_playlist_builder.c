/* it_playlist_builder.c - the playlist-builder binary against real Postgres and the dev-broker:
 * requests -> playlists stored with the guide's rules (checked in SQL), playlist_ready
 * notifications, PlaylistGenerated events, bad requests, the fan-out / cleanup / similarity jobs,
 * parameterised types, two instances in one group giving the same playlists as one.
 *
 * Env: QZ_TEST_PG_DSN, QZ_TEST_BROKERS, QZ_TEST_BIN, QZ_TEST_ROOT, QZ_TEST_TMP. Every run uses
 * its own ids (a random prefix), genres, topics and consumer group. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "avro.h"
#include "jobs.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"

#include "../../services/playlist-builder/gen.h"
#include "../../services/playlist-builder/similarity.h"
#include "../../services/playlist-builder/store.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *dsn, *brokers, *bin, *root, *tmp;
static char P[16]; /* run prefix */
static char req_topic[64], gen_topic[64], logpath[512];
static struct qz_avro_registry *avro;
static struct qz_pg *pg, *listener;
static struct qz_kafka_producer *producer;
static pid_t builder = -1, builder2 = -1; /* builder2: the second instance of test_two */
static int http_port, http_port2;

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *env(const char *name)
{
        const char *v = getenv(name);
        if (!v || !*v) {
                fprintf(stderr, "missing env %s\n", name);
                exit(1);
        }
        return v;
}

static void dump_log(void)
{
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "tail -25 %s >&2", logpath);
        if (system(cmd) != 0)
                fprintf(stderr, "(no log)\n");
}

/* Runs sql with every "@" replaced by the run prefix. */
static void exec_sql(const char *sql)
{
        char buf[8192], err[512];
        size_t o = 0;
        for (const char *s = sql; *s && o + 20 < sizeof(buf); s++) {
                if (*s == '@')
                        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", P);
                else
                        buf[o++] = *s;
        }
        buf[o] = '\0';
        if (qz_pg_exec(pg, buf, err, sizeof(err)) != 0) {
                fprintf(stderr, "sql failed: %s\n%s\n", err, buf);
                fail();
        }
}

/* First column of the first row of sql (with "@" replaced), as a malloc'd string. */
static char *scalar(const char *sql)
{
        char buf[8192], err[512];
        size_t o = 0;
        for (const char *s = sql; *s && o + 20 < sizeof(buf); s++) {
                if (*s == '@')
                        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", P);
                else
                        buf[o++] = *s;
        }
        buf[o] = '\0';
        PGresult *r = qz_pg_query(pg, buf, 0, NULL, err, sizeof(err));
        if (!r) {
                fprintf(stderr, "sql failed: %s\n%s\n", err, buf);
                fail();
        }
        char *v = strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
        PQclear(r);
        return v;
}

static long scalar_long(const char *sql)
{
        char *v = scalar(sql);
        long x = atol(v);
        free(v);
        return x;
}

static char *uuid_of(const char *name)
{
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT md5('@-%s')::uuid::text", name);
        return scalar(sql);
}

static int free_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        getsockname(fd, (struct sockaddr *)&sa, &len);
        close(fd);
        return ntohs(sa.sin_port);
}

/* GET path on port; the body (malloc'd) or NULL. */
static char *http_get(int port, const char *path)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char *buf = NULL;
        size_t len = 0, cap = 0;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                char rq[256];
                snprintf(rq, sizeof(rq), "GET %s HTTP/1.0\r\n\r\n", path);
                if (write(fd, rq, strlen(rq)) > 0)
                        for (;;) {
                                if (len + 4096 + 1 > cap) {
                                        cap = (cap + 4096) * 2;
                                        buf = realloc(buf, cap);
                                }
                                ssize_t k = read(fd, buf + len, cap - len - 1);
                                if (k <= 0)
                                        break;
                                len += (size_t)k;
                        }
        }
        close(fd);
        if (buf)
                buf[len] = '\0';
        return buf;
}

/* A counter's value in an instance's /metrics (the line starting with series). */
static long metric_value(int port, const char *series)
{
        char *body = http_get(port, "/metrics");
        long v = 0;
        assert_non_null(body);
        for (char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, series, strlen(series)) == 0 && l[strlen(series)] == ' ')
                        v = atol(l + strlen(series) + 1);
        free(body);
        return v;
}

static bool http_ready(int port)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char buf[64] = {0};
        bool ok = false;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                const char *rq = "GET /readyz HTTP/1.0\r\n\r\n";
                if (write(fd, rq, strlen(rq)) > 0 && read(fd, buf, sizeof(buf) - 1) > 12)
                        ok = strncmp(buf + 9, "200", 3) == 0;
        }
        close(fd);
        return ok;
}

/* Starts one builder instance in the run's consumer group; *pid, *port get its pid and port. */
static void start_builder(pid_t *pid, int *port)
{
        char addr[64], group[64], schemas[512];
        *port = free_port();
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", *port);
        snprintf(group, sizeof(group), "it-pl-%s", P);
        snprintf(schemas, sizeof(schemas), "%s/schemas", root);
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
                dup2(fd, 1);
                dup2(fd, 2);
                setenv("QOQNUZ_HTTP_ADDR", addr, 1);
                setenv("QOQNUZ_PG_DSN", dsn, 1);
                setenv("QOQNUZ_KAFKA_BROKERS", brokers, 1);
                setenv("QOQNUZ_SCHEMA_DIR", schemas, 1);
                setenv("QOQNUZ_PLAYLIST_GROUP_ID", group, 1);
                setenv("QOQNUZ_PLAYLIST_REQUESTS_TOPIC", req_topic, 1);
                setenv("QOQNUZ_PLAYLIST_GENERATED_TOPIC", gen_topic, 1);
                char path[512];
                snprintf(path, sizeof(path), "%s/playlist-builder", bin);
                execl(path, path, (char *)NULL);
                _exit(127);
        }
        *pid = child;
        int64_t t0 = mono_ms();
        while (!http_ready(*port)) {
                if (mono_ms() - t0 > 45000) {
                        dump_log();
                        fail_msg("playlist-builder not ready in 45 s");
                }
                usleep(200000);
        }
}

static void produce_request(const char *rid, const char *user, const char *type,
                            json_t *params /* stolen; NULL = {} */, const char *run_id)
{
        const struct qz_avro_schema *s = qz_avro_schema_get(avro, "PlaylistRequest");
        json_t *v =
            json_pack("{s:s,s:s,s:s,s:o,s:s,s:o}", "request_id", rid, "user_id", user,
                      "playlist_type", type, "params", params ? params : json_object(), "reason",
                      "manual", "run_id", run_id ? json_string(run_id) : json_null());
        unsigned char *buf;
        size_t len;
        char err[256];
        assert_int_equal(qz_avro_encode_json(s, v, &buf, &len, err, sizeof(err)), 0);
        json_decref(v);
        struct qz_kafka_record rec = {.topic = req_topic,
                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                      .key = user,
                                      .key_len = strlen(user),
                                      .value = buf,
                                      .value_len = len};
        assert_int_equal(qz_kafka_produce_wait(producer, &rec, 1, 10000, err, sizeof(err)),
                         QZ_KAFKA_OK);
        free(buf);
}

/* Waits for playlist_ready notifications of every id in rids; payloads[i] gets each (owned). */
static void wait_notifications(const char *const *rids, size_t n, json_t **payloads)
{
        char err[256];
        size_t got = 0;
        int64_t t0 = mono_ms();
        memset(payloads, 0, n * sizeof(*payloads));
        while (got < n) {
                if (mono_ms() - t0 > 60000) {
                        dump_log();
                        fail_msg("only %zu of %zu notifications", got, n);
                }
                PGnotify *nt = NULL;
                int rc = qz_pg_notify_wait(listener, 1000, &nt, err, sizeof(err));
                assert_true(rc >= 0);
                if (rc == 0)
                        continue;
                json_t *j = json_loads(nt->extra, 0, NULL);
                PQfreemem(nt);
                assert_non_null(j);
                const char *rid = json_string_value(json_object_get(j, "request_id"));
                bool kept = false;
                for (size_t i = 0; rid && i < n; i++)
                        if (!payloads[i] && strcmp(rids[i], rid) == 0) {
                                payloads[i] = j;
                                got++;
                                kept = true;
                        }
                if (!kept)
                        json_decref(j);
        }
}

static void seed_data(void)
{
        /* 10 artists; H1..H40 history tracks (genres g1/g2, a year old); D1..D60 recent
         * releases in g1 by artists 7..10 (never played by U1); edge tracks. */
        exec_sql(
            "INSERT INTO artists (id, name) SELECT md5('@-ar-' || i)::uuid, 'A' || i "
            "FROM generate_series(1, 10) i;"
            "INSERT INTO tracks (id, title, artist_id, genres, popularity, released_at) "
            "SELECT md5('@-h-' || i)::uuid, 'H' || i, md5('@-ar-' || ((i - 1) % 4 + 1))::uuid, "
            "ARRAY[CASE WHEN i % 2 = 0 THEN 'g2-@' ELSE 'g1-@' END], i, current_date - 365 "
            "FROM generate_series(1, 40) i;"
            "INSERT INTO tracks (id, title, artist_id, genres, popularity, released_at) "
            "SELECT md5('@-d-' || i)::uuid, 'D' || i, md5('@-ar-' || (i % 4 + 7))::uuid, "
            "ARRAY['g1-@'], (i * 7) % 100, current_date - 10 FROM generate_series(1, 60) i;"
            "INSERT INTO tracks (id, title, artist_id, genres, popularity, released_at, "
            "deleted_at) VALUES "
            "(md5('@-dp')::uuid, 'DP', md5('@-ar-1')::uuid, '{g1-@}', 99, current_date - 10, NULL),"
            "(md5('@-do')::uuid, 'DO', md5('@-ar-7')::uuid, '{g1-@}', 99, current_date - 120, "
            "NULL),"
            "(md5('@-dd')::uuid, 'DD', md5('@-ar-8')::uuid, '{g1-@}', 100, current_date - 5, "
            "now()),"
            "(md5('@-n-1')::uuid, 'N1', md5('@-ar-1')::uuid, '{g1-@}', 5, current_date - 5, NULL),"
            "(md5('@-n-2')::uuid, 'N2', md5('@-ar-1')::uuid, '{g1-@}', 5, current_date - 3, NULL),"
            "(md5('@-n-3')::uuid, 'N3', md5('@-ar-2')::uuid, '{g1-@}', 5, current_date - 1, NULL),"
            "(md5('@-n-old')::uuid, 'NO', md5('@-ar-1')::uuid, '{g9-@}', 0, current_date - 40, "
            "NULL),"
            "(md5('@-f61')::uuid, 'F61', md5('@-ar-5')::uuid, '{g2-@}', 0, current_date - 700, "
            "NULL),"
            "(md5('@-f59')::uuid, 'F59', md5('@-ar-5')::uuid, '{g2-@}', 0, current_date - 700, "
            "NULL),"
            "(md5('@-f2')::uuid, 'F2', md5('@-ar-5')::uuid, '{g2-@}', 0, current_date - 700, NULL),"
            "(md5('@-fd')::uuid, 'FD', md5('@-ar-5')::uuid, '{g2-@}', 0, current_date - 700, "
            "now());"
            "INSERT INTO users (id) VALUES (md5('@-u1')::uuid), (md5('@-u2')::uuid), "
            "(md5('@-u4')::uuid);");
        /* U1: H1..H35 in the last 29 days ((i % 3) + 1 plays, H1 ten more), H36..H40 twice
         * 100 days ago, DP once, F61 3x 61+ days ago, F59 at 61/61/59 days, F2 2x, FD 3x. */
        exec_sql(
            "INSERT INTO play_history (event_id, user_id, track_id, played_at, completed) "
            "SELECT gen_random_uuid(), md5('@-u1')::uuid, md5('@-h-' || i)::uuid, "
            "now() - make_interval(days => i % 28 + 1, hours => k), true "
            "FROM generate_series(1, 35) i, generate_series(0, 2) k WHERE k <= i % 3;"
            "INSERT INTO play_history (event_id, user_id, track_id, played_at, completed) "
            "SELECT gen_random_uuid(), md5('@-u1')::uuid, md5('@-h-1')::uuid, "
            "now() - make_interval(hours => k + 1), true FROM generate_series(1, 10) k;"
            "INSERT INTO play_history (event_id, user_id, track_id, played_at) "
            "SELECT gen_random_uuid(), md5('@-u1')::uuid, md5('@-h-' || i)::uuid, "
            "now() - make_interval(days => 100, hours => k) "
            "FROM generate_series(36, 40) i, generate_series(1, 2) k;"
            "INSERT INTO play_history (event_id, user_id, track_id, played_at) VALUES "
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-dp')::uuid, now() - interval '5 days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f61')::uuid, now() - interval '61 days "
            "1 hour'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f61')::uuid, now() - interval '62 "
            "days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f61')::uuid, now() - interval '80 "
            "days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f59')::uuid, now() - interval '61 days "
            "2 hours'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f59')::uuid, now() - interval '62 "
            "days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f59')::uuid, now() - interval '59 "
            "days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f2')::uuid, now() - interval '70 days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-f2')::uuid, now() - interval '71 days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-fd')::uuid, now() - interval '70 days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-fd')::uuid, now() - interval '71 days'),"
            "(gen_random_uuid(), md5('@-u1')::uuid, md5('@-fd')::uuid, now() - interval '72 days');"
            /* U4 shares H1..H10 with U1 (co-listening for CF). */
            "INSERT INTO play_history (event_id, user_id, track_id, played_at) "
            "SELECT gen_random_uuid(), md5('@-u4')::uuid, md5('@-h-' || i)::uuid, "
            "now() - make_interval(days => i) FROM generate_series(1, 10) i;");
}

static int setup(void **state)
{
        (void)state;
        char err[512];
        dsn = env("QZ_TEST_PG_DSN");
        brokers = env("QZ_TEST_BROKERS");
        bin = env("QZ_TEST_BIN");
        root = env("QZ_TEST_ROOT");
        tmp = env("QZ_TEST_TMP");
        qz_log_init("it_playlist_builder", QZ_LOG_WARN);
        srand((unsigned)time(NULL) ^ (unsigned)getpid());
        snprintf(P, sizeof(P), "%08x", (unsigned)rand());
        snprintf(req_topic, sizeof(req_topic), "it-pl-%s-requests", P);
        snprintf(gen_topic, sizeof(gen_topic), "it-pl-%s-generated", P);
        snprintf(logpath, sizeof(logpath), "%s/playlist-builder-%s.log", tmp, P);
        char schemas[512];
        snprintf(schemas, sizeof(schemas), "%s/schemas", root);
        if (qz_avro_registry_load(schemas, &avro, err, sizeof(err)) != 0)
                return -1;
        struct qz_pg_opts o = {.dsn = dsn};
        if (!(pg = qz_pg_new(&o, err, sizeof(err))) ||
            !(listener = qz_pg_new(&o, err, sizeof(err))))
                return -1;
        if (qz_pg_listen(listener, "playlist_ready", err, sizeof(err)) != 0)
                return -1;
        struct qz_kafka_producer_config pc = {.brokers = brokers};
        if (qz_kafka_producer_new(&pc, &producer, err, sizeof(err)) != 0)
                return -1;
        seed_data();
        start_builder(&builder, &http_port);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        int status = 0, status2 = 0;
        if (builder2 > 0) {
                kill(builder2, SIGTERM);
                waitpid(builder2, &status2, 0);
        }
        if (builder > 0) {
                kill(builder, SIGTERM);
                waitpid(builder, &status, 0);
        }
        qz_kafka_producer_close(producer, 2000);
        qz_pg_free(pg);
        qz_pg_free(listener);
        qz_avro_registry_free(avro);
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' %s",
                 logpath);
        if (system(cmd) == 0) {
                fprintf(stderr, "playlist-builder: sanitizer report\n");
                dump_log();
                return -1;
        }
        if (!WIFEXITED(status2) || WEXITSTATUS(status2) != 0) {
                fprintf(stderr, "second playlist-builder did not exit 0 on SIGTERM (status %d)\n",
                        status2);
                dump_log();
                return -1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "playlist-builder did not exit 0 on SIGTERM (status %d)\n", status);
                dump_log();
                return -1;
        }
        return 0;
}

static char rids[8][37];

static void test_guide_types(void **state)
{
        (void)state;
        char *u1 = uuid_of("u1"), *u2 = uuid_of("u2"), *u3 = uuid_of("u3-unknown");
        for (int i = 0; i < 8; i++)
                qz_uuid_generate(rids[i]);
        produce_request(rids[0], u1, "daily_mix", NULL, NULL);
        produce_request(rids[1], u1, "discovery_weekly", NULL, NULL);
        produce_request(rids[2], u1, "new_for_you", NULL, NULL);
        produce_request(rids[3], u1, "forgotten_favorites", NULL, NULL);
        produce_request(rids[4], u2, "daily_mix", NULL, NULL);
        produce_request(rids[5], u3, "daily_mix", NULL, NULL);
        produce_request(rids[6], u1, "weekly_jams", NULL, NULL);
        produce_request(rids[7], u1, "activity", json_pack("{s:s}", "activity", "knitting"), NULL);
        const char *ids[8];
        json_t *pay[8];
        for (int i = 0; i < 8; i++)
                ids[i] = rids[i];
        wait_notifications(ids, 8, pay);
        for (int i = 0; i < 5; i++) {
                assert_string_equal(json_string_value(json_object_get(pay[i], "status")), "ok");
                assert_true(json_is_null(json_object_get(pay[i], "error")));
        }
        for (int i = 5; i < 8; i++) {
                assert_string_equal(json_string_value(json_object_get(pay[i], "status")), "error");
                assert_non_null(json_string_value(json_object_get(pay[i], "error")));
        }
        assert_non_null(
            strstr(json_string_value(json_object_get(pay[5], "error")), "unknown user"));
        assert_non_null(
            strstr(json_string_value(json_object_get(pay[6], "error")), "unknown playlist_type"));
        assert_non_null(strstr(json_string_value(json_object_get(pay[7], "error")), "activity"));
        for (int i = 0; i < 8; i++)
                json_decref(pay[i]);

        /* Every list: 50 tracks, no duplicates, no deleted track. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid AND cardinality(track_ids) = 50 AND "
                                     "cardinality(track_ids) = (SELECT count(DISTINCT x) FROM "
                                     "unnest(track_ids) x)"),
                         4);
        assert_int_equal(
            scalar_long("SELECT count(*) FROM smart_playlists s, unnest(s.track_ids) x "
                        "JOIN tracks t ON t.id = x WHERE s.user_id = "
                        "md5('@-u1')::uuid AND t.deleted_at IS NOT NULL"),
            0);
        /* daily_mix: 30 recent favourites (played in the last 30 days) + 20 similar, spaced. */
        assert_int_equal(scalar_long("SELECT (metadata->'sources'->>'recent')::int FROM "
                                     "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                     "playlist_type = 'daily_mix'"),
                         30);
        assert_int_equal(
            scalar_long("SELECT count(*) FROM smart_playlists s, unnest(s.track_ids) x "
                        "WHERE s.user_id = md5('@-u1')::uuid AND s.playlist_type = "
                        "'daily_mix' AND EXISTS (SELECT 1 FROM play_history h WHERE "
                        "h.user_id = s.user_id AND h.track_id = x AND h.played_at > "
                        "now() - interval '30 days')"),
            30);
        assert_int_equal(scalar_long("SELECT (metadata->>'artist_repeats')::int FROM "
                                     "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                     "playlist_type = 'daily_mix'"),
                         0);
        /* H1 (the most played, most recent) leads the recent part. */
        assert_int_equal(scalar_long("SELECT array_position(track_ids, md5('@-h-1')::uuid) FROM "
                                     "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                     "playlist_type = 'daily_mix'") <= 2,
                         1);
        /* discovery_weekly: never played, in the top genres, released in the last 90 days. */
        assert_int_equal(
            scalar_long("SELECT count(*) FROM smart_playlists s, unnest(s.track_ids) x "
                        "JOIN tracks t ON t.id = x WHERE s.user_id = "
                        "md5('@-u1')::uuid AND s.playlist_type = 'discovery_weekly' "
                        "AND t.genres && '{g1-@,g2-@}' AND t.released_at >= "
                        "current_date - 90 AND NOT EXISTS (SELECT 1 FROM "
                        "play_history h WHERE h.user_id = s.user_id AND h.track_id = "
                        "x)"),
            50);
        char *seed = scalar("SELECT metadata->>'seed' FROM smart_playlists WHERE user_id = "
                            "md5('@-u1')::uuid AND playlist_type = 'discovery_weekly'");
        assert_int_equal(strlen(seed), 16);
        free(seed);
        /* new_for_you: the four releases of the last 30 days by top artists, not the 40-day one. */
        assert_int_equal(scalar_long("SELECT (metadata->'sources'->>'new_releases')::int FROM "
                                     "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                     "playlist_type = 'new_for_you'"),
                         4);
        assert_int_equal(
            scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                        "md5('@-u1')::uuid AND playlist_type = 'new_for_you' AND "
                        "(SELECT count(*) FROM unnest(ARRAY[md5('@-n-1'), md5('@-n-2'), "
                        "md5('@-n-3'), md5('@-dp')]::uuid[]) x WHERE x = "
                        "ANY(track_ids)) = 4 AND NOT md5('@-n-old')::uuid = "
                        "ANY(track_ids)"),
            1);
        /* forgotten_favorites: F61 (3 plays, last 61 days ago) in; F59, F2, deleted FD out. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid AND playlist_type = "
                                     "'forgotten_favorites' AND track_ids[1] = md5('@-f61')::uuid "
                                     "AND NOT track_ids && ARRAY[md5('@-f59'), md5('@-f2'), "
                                     "md5('@-fd')]::uuid[] AND (metadata->'sources'->>"
                                     "'forgotten')::int = 1 AND metadata ? 'fallback_reason'"),
                         1);
        /* expiry: 24 h daily, 7 d weekly; a generation row per playlist. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid AND expires_at - generated_at = CASE WHEN "
                                     "playlist_type IN ('discovery_weekly', "
                                     "'forgotten_favorites') THEN interval '7 days' ELSE interval "
                                     "'24 hours' END"),
                         4);
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists s JOIN "
                                     "smart_playlist_generations g ON g.id = s.id AND "
                                     "g.track_ids = s.track_ids AND g.variant = "
                                     "s.metadata->>'variant' WHERE s.user_id = md5('@-u1')::uuid"),
                         4);
        /* A user without history: the documented fallback, with its reason. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u2')::uuid AND cardinality(track_ids) > 0 AND "
                                     "metadata->>'fallback_reason' LIKE 'no listening history%'"),
                         1);
        /* Bad requests stored nothing. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u3-unknown')::uuid"),
                         0);
        free(u1);
        free(u2);
        free(u3);
}

/* The builder holds the catalog in memory (catalog.c): a track added, then deleted, after it
 * loaded must be seen by the next request (sql/051's version moves with each change). Runs
 * after test_generated_events, which checks the events of U1's first lists. */
static void test_catalog_change(void **state)
{
        (void)state;
        char *u1 = uuid_of("u1"), rid[2][37];
        const char *ids[1];
        json_t *pay[1];
        exec_sql("INSERT INTO tracks (id, title, artist_id, genres, popularity, released_at) "
                 "VALUES (md5('@-n-new')::uuid, 'NN', md5('@-ar-1')::uuid, '{g1-@}', 1, "
                 "current_date)");
        for (int round = 0; round < 2; round++) {
                if (round == 1)
                        exec_sql("UPDATE tracks SET deleted_at = now() WHERE id = "
                                 "md5('@-n-new')::uuid");
                qz_uuid_generate(rid[round]);
                produce_request(rid[round], u1, "new_for_you", NULL, NULL);
                ids[0] = rid[round];
                wait_notifications(ids, 1, pay);
                assert_string_equal(json_string_value(json_object_get(pay[0], "status")), "ok");
                json_decref(pay[0]);
                /* round 0: the four releases and the new one; round 1: the four again */
                assert_int_equal(scalar_long("SELECT (metadata->'sources'->>'new_releases')::int "
                                             "+ 10 * (md5('@-n-new')::uuid = ANY(track_ids))::int "
                                             "FROM smart_playlists WHERE user_id = "
                                             "md5('@-u1')::uuid AND playlist_type = "
                                             "'new_for_you'"),
                                 round == 0 ? 15 : 4);
        }
        free(u1);
}

static void test_generated_events(void **state)
{
        (void)state;
        char errstr[512], group[64];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        snprintf(group, sizeof(group), "it-pl-gen-%s", P);
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "session.timeout.ms", "6000", errstr, sizeof(errstr));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
        assert_non_null(rk);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, gen_topic, RD_KAFKA_PARTITION_UA);
        assert_int_equal(rd_kafka_subscribe(rk, t), 0);
        rd_kafka_topic_partition_list_destroy(t);
        int found = 0;
        int64_t t0 = mono_ms();
        while (found < 5 && mono_ms() - t0 < 30000) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
                if (!m)
                        continue;
                if (!m->err) {
                        json_t *ev = NULL;
                        const struct qz_avro_schema *s = NULL;
                        assert_int_equal(qz_avro_decode_json(avro, m->payload, m->len, &s, &ev,
                                                             errstr, sizeof(errstr)),
                                         0);
                        assert_string_equal(qz_avro_schema_name(s), "qoqnuz.PlaylistGenerated");
                        const char *rid = json_string_value(json_object_get(ev, "request_id"));
                        for (int i = 0; i < 5; i++)
                                if (strcmp(rid, rids[i]) == 0) {
                                        found++;
                                        char sql[512];
                                        snprintf(
                                            sql, sizeof(sql),
                                            "SELECT count(*) FROM smart_playlists WHERE id = "
                                            "'%s' AND playlist_type = '%s' AND "
                                            "cardinality(track_ids) = %lld",
                                            json_string_value(json_object_get(ev, "playlist_id")),
                                            json_string_value(json_object_get(ev, "playlist_type")),
                                            (long long)json_integer_value(
                                                json_object_get(ev, "track_count")));
                                        assert_int_equal(scalar_long(sql), 1);
                                        assert_true(json_is_null(json_object_get(ev, "run_id")));
                                }
                        json_decref(ev);
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        assert_int_equal(found, 5);
}

/* Enqueues a job and waits for its run to finish; returns the status (malloc'd). */
static char *run_job(const char *job, json_t *params, char run_id[37])
{
        char err[512], sql[256];
        assert_int_equal(qz_jobs_enqueue(pg, producer, avro, job, params, run_id, err, sizeof(err)),
                         0);
        json_decref(params);
        snprintf(sql, sizeof(sql),
                 "SELECT status FROM automation_job_runs WHERE run_id = '%s' AND status IN "
                 "('succeeded', 'failed')",
                 run_id);
        int64_t t0 = mono_ms();
        for (;;) {
                char *st = scalar(sql);
                if (*st)
                        return st;
                free(st);
                if (mono_ms() - t0 > 60000) {
                        dump_log();
                        fail_msg("job %s run %s did not finish", job, run_id);
                }
                usleep(200000);
        }
}

static void test_jobs(void **state)
{
        (void)state;
        char run[37], sql[512];
        char *u1 = uuid_of("u1");
        /* Fan-out narrowed to one user: one request per type of the day, counted once each. */
        char *st = run_job("generate-smart-playlists", json_pack("{s:s}", "user_id", u1), run);
        assert_string_equal(st, "succeeded");
        free(st);
        snprintf(sql, sizeof(sql),
                 "SELECT expected * 10 + processed FROM automation_job_runs WHERE run_id = '%s'",
                 run);
        long ep = scalar_long(sql);
        bool monday = scalar_long("SELECT extract(isodow FROM now() AT TIME ZONE 'UTC')") == 1;
        assert_int_equal(ep, monday ? 44 : 22);
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM playlist_requests_done WHERE run_id = '%s' AND status = "
                 "'ok'",
                 run);
        assert_int_equal(scalar_long(sql), monday ? 4 : 2);
        /* A redelivered request of that run changes nothing: processed stays. */
        snprintf(sql, sizeof(sql),
                 "SELECT request_id FROM playlist_requests_done WHERE run_id = '%s' LIMIT 1", run);
        char *rid = scalar(sql);
        char *type = NULL;
        snprintf(sql, sizeof(sql),
                 "SELECT playlist_type FROM playlist_requests_done WHERE request_id = '%s'", rid);
        type = scalar(sql);
        char marker[37];
        qz_uuid_generate(marker);
        produce_request(rid, u1, type, NULL, run);
        produce_request(marker, u1, "daily_mix", NULL, NULL);
        const char *ids[] = {marker};
        json_t *pay[1];
        wait_notifications(ids, 1, pay); /* the same partition: the duplicate came first */
        json_decref(pay[0]);
        snprintf(sql, sizeof(sql), "SELECT processed FROM automation_job_runs WHERE run_id = '%s'",
                 run);
        assert_int_equal(scalar_long(sql), monday ? 4 : 2);
        free(rid);
        free(type);

        /* generate_daily_mix(user) through SQL: the guide's function, narrowed run. */
        /* Cleanup: an expired playlist goes, the others stay. */
        exec_sql("UPDATE smart_playlists SET expires_at = now() - interval '1 minute' WHERE "
                 "user_id = md5('@-u1')::uuid AND playlist_type = 'new_for_you'");
        st = run_job("cleanup-expired-playlists", NULL, run);
        assert_string_equal(st, "succeeded");
        free(st);
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid AND playlist_type = 'new_for_you'"),
                         0);
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid"),
                         3);

        /* Similarities: CF from co-listening (H1..H10 by U1 and U4), content from features. */
        exec_sql("INSERT INTO track_features (track_id, tempo, energy, valence, danceability, "
                 "acousticness, genre) SELECT md5('@-d-' || i)::uuid, 100 + i, 0.5 + i / 100.0, "
                 "0.5, 0.5, 0.5, 'g1-@' FROM generate_series(1, 5) i");
        st = run_job("compute-track-similarities", NULL, run);
        assert_string_equal(st, "succeeded");
        free(st);
        assert_int_equal(scalar_long("SELECT count(*) FROM track_similarities WHERE kind = 'cf' "
                                     "AND track_id = md5('@-h-1')::uuid AND similar_track_id IN "
                                     "(SELECT md5('@-h-' || i)::uuid FROM generate_series(2, 10) "
                                     "i) AND score > 0"),
                         9);
        /* H11.. were played by U1 alone: no pair reaches two common listeners. */
        assert_int_equal(scalar_long("SELECT count(*) FROM track_similarities WHERE kind = 'cf' "
                                     "AND track_id = md5('@-h-11')::uuid"),
                         0);
        assert_int_equal(scalar_long("SELECT count(DISTINCT track_id) FROM track_similarities "
                                     "WHERE kind = 'content' AND track_id IN (SELECT "
                                     "md5('@-d-' || i)::uuid FROM generate_series(1, 5) i)"),
                         5);
        free(u1);
}

static void test_parameterised(void **state)
{
        (void)state;
        char *u1 = uuid_of("u1"), *h1 = uuid_of("h-1"), *ar1 = uuid_of("ar-1");
        char r[5][37], gm[64];
        snprintf(gm, sizeof(gm), "g1-%s,g2-%s", P, P);
        for (int i = 0; i < 5; i++)
                qz_uuid_generate(r[i]);
        produce_request(r[0], u1, "track_radio",
                        json_pack("{s:s,s:s}", "track_id", h1, "limit", "20"), NULL);
        produce_request(r[1], u1, "artist_radio", json_pack("{s:s}", "artist_id", ar1), NULL);
        produce_request(r[2], u1, "genre_mix", json_pack("{s:s}", "genres", gm), NULL);
        produce_request(r[3], u1, "mood", json_pack("{s:s}", "mood", "melancholic-@"), NULL);
        produce_request(r[4], u1, "daily_mix", NULL, NULL);
        const char *ids[] = {r[0], r[1], r[2], r[3], r[4]};
        json_t *pay[5];
        wait_notifications(ids, 5, pay);
        for (int i = 0; i < 5; i++) {
                assert_string_equal(json_string_value(json_object_get(pay[i], "status")), "ok");
                json_decref(pay[i]);
        }
        /* track_radio: the seed first, its CF neighbours next, 20 tracks, params kept. */
        assert_int_equal(
            scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                        "md5('@-u1')::uuid AND playlist_type = 'track_radio' AND "
                        "track_ids[1] = md5('@-h-1')::uuid AND cardinality(track_ids) "
                        "= 20 AND metadata->'params'->>'track_id' = md5('@-h-1')::uuid::text "
                        "AND (metadata->'sources'->>'similar')::int >= 9"),
            1);
        assert_int_equal(scalar_long("SELECT (metadata->'sources'->>'artist')::int FROM "
                                     "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                     "playlist_type = 'artist_radio'") > 0,
                         1);
        /* genre_mix: the genre in the param, alternating. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists s, unnest(s.track_ids) "
                                     "x JOIN tracks t ON t.id = x WHERE s.user_id = "
                                     "md5('@-u1')::uuid AND s.playlist_type = 'genre_mix' AND "
                                     "t.genres && '{g1-@,g2-@}'"),
                         50);
        /* mood without any analysed track: filled by the fallback, which says why. */
        assert_int_equal(scalar_long("SELECT count(*) FROM smart_playlists WHERE user_id = "
                                     "md5('@-u1')::uuid AND playlist_type = 'mood' AND "
                                     "metadata->>'fallback_reason' LIKE '%analysed%'"),
                         1);
        /* daily_mix after the similarity job uses CF neighbours. */
        assert_true(scalar_long("SELECT (metadata->'similar_candidates'->>'similar_cf')::int FROM "
                                "smart_playlists WHERE user_id = md5('@-u1')::uuid AND "
                                "playlist_type = 'daily_mix'") >= 0);
        free(u1);
        free(h1);
        free(ar1);
}

/* Two instances in one group build the same playlists as one: the four types for 8 users
 * (U1, U2 without plays, U4, U5..U9 with small histories), once with the single builder, then
 * again (new request ids) with a second instance in the group, until both instances handled
 * some. Every (user, type) must give the same tracks in the same order, the same variant and
 * seed: the lists depend on the data, the user and the ISO week only, not on the instance. */
#define TWO_USERS 8
static const char *const two_types[] = {"daily_mix", "discovery_weekly", "new_for_you",
                                        "forgotten_favorites"};

/* Sends the 4 x TWO_USERS requests and waits; out[i] = "variant|seed|track_ids" per request. */
static void two_round(char *const *users, char **out)
{
        enum { N = TWO_USERS * 4 };
        char rid[N][37];
        const char *ids[N];
        json_t *pay[N];
        for (int i = 0; i < N; i++) {
                qz_uuid_generate(rid[i]);
                ids[i] = rid[i];
                produce_request(rid[i], users[i / 4], two_types[i % 4], NULL, NULL);
        }
        wait_notifications(ids, N, pay);
        for (int i = 0; i < N; i++) {
                assert_string_equal(json_string_value(json_object_get(pay[i], "status")), "ok");
                char sql[400];
                snprintf(sql, sizeof(sql),
                         "SELECT g.variant || '|' || coalesce(s.metadata->>'seed', '') || '|' || "
                         "g.track_ids::text FROM smart_playlist_generations g JOIN "
                         "playlist_requests_done d ON d.playlist_id = g.id "
                         "JOIN smart_playlists s ON s.id = g.id WHERE d.request_id = '%s'",
                         rid[i]);
                out[i] = scalar(sql);
                assert_true(strlen(out[i]) > 40); /* 50 tracks: never an empty list here */
                json_decref(pay[i]);
        }
}

static void test_two_builders(void **state)
{
        (void)state;
        enum { N = TWO_USERS * 4 };
        char *users[TWO_USERS], *one[N], *two[N];
        exec_sql(
            "INSERT INTO users (id) SELECT md5('@-u' || k)::uuid FROM generate_series(5, 9) k;"
            "INSERT INTO play_history (event_id, user_id, track_id, played_at, completed) "
            "SELECT gen_random_uuid(), md5('@-u' || k)::uuid, md5('@-h-' || (k * 3 + i))::uuid, "
            "now() - make_interval(days => (i * k) % 80 + 1), i % 2 = 0 "
            "FROM generate_series(5, 9) k, generate_series(1, 12) i, generate_series(1, 3) r "
            "WHERE r <= i % 4 + 1");
        const char *names[TWO_USERS] = {"u1", "u2", "u4", "u5", "u6", "u7", "u8", "u9"};
        for (int i = 0; i < TWO_USERS; i++)
                users[i] = uuid_of(names[i]);
        two_round(users, one);

        const char *ok = "qz_playlists_requests_total{result=\"ok\"}";
        start_builder(&builder2, &http_port2);
        long a0 = metric_value(http_port, ok), b0 = metric_value(http_port2, ok);
        /* Rounds until the group has rebalanced and both instances built some (each round is
         * compared in full: before the rebalance it is one instance's output again). */
        int rounds = 0;
        for (;;) {
                two_round(users, two);
                rounds++;
                for (int i = 0; i < N; i++) {
                        if (strcmp(one[i], two[i]) != 0)
                                fail_msg("%s %s differs with two builders:\n one: %.200s\n two: "
                                         "%.200s",
                                         names[i / 4], two_types[i % 4], one[i], two[i]);
                        free(two[i]);
                }
                long a = metric_value(http_port, ok) - a0, b = metric_value(http_port2, ok) - b0;
                if (a > 0 && b > 0)
                        break;
                if (rounds == 6) {
                        dump_log();
                        fail_msg("after %d rounds the instances built %ld and %ld", rounds, a, b);
                }
                usleep(500000);
        }
        for (int i = 0; i < N; i++)
                free(one[i]);
        for (int i = 0; i < TWO_USERS; i++)
                free(users[i]);
}

/* store.c's batch statement directly: the batch's track ids travel as one binary uuid[] and
 * each playlist gets its own slice, in order (an empty list gives '{}'; a failure stores no
 * list); a track id that is not a uuid fails the batch with 22P02 before anything is sent, so
 * the caller's per-request fallback answers it. */
static void test_store_batch_ids(void **state)
{
        (void)state;
        char err[512], st[8], sql[512], user[64], rq[4][64];
        const char *types3[3] = {"daily_mix", "new_for_you", "discovery_weekly"};
        snprintf(user, sizeof(user), "%08x-0000-4000-8000-0000000000aa", (unsigned)rand());
        for (int i = 0; i < 4; i++)
                snprintf(rq[i], sizeof(rq[i]), "%.8s-%04x-4000-8000-00000000000%d", P,
                         (unsigned)rand() & 0xffff, i);
        struct qz_pg_opts o = {.dsn = dsn};
        struct qz_pg *spg = qz_pg_new(&o, err, sizeof(err));
        assert_non_null(spg);
        assert_int_equal(pl_store_prepare(spg, err, sizeof(err)), 0);
        struct pl_cand items[3];
        memset(items, 0, sizeof(items));
        for (int i = 0; i < 3; i++) /* upper case in: Postgres prints lower case */
                snprintf(items[i].track_id, sizeof(items[i].track_id),
                         "0000000%d-AAAA-4BBB-8CCC-%012d", 3 - i, 7 * i);
        struct pl_playlist pls[2] = {{.items = items,
                                      .n = 3,
                                      .metadata = json_object(),
                                      .generated_ms = 1700000000000,
                                      .expires_ms = 1700086400000},
                                     {.items = NULL,
                                      .n = 0,
                                      .metadata = json_object(),
                                      .generated_ms = 1700000000000,
                                      .expires_ms = 1700086400000}};
        snprintf(pls[0].variant, sizeof(pls[0].variant), "cf");
        snprintf(pls[1].variant, sizeof(pls[1].variant), "guide");
        struct pl_request rqs[3];
        const struct pl_request *rqp[3];
        for (int i = 0; i < 3; i++) {
                rqs[i] = (struct pl_request){.request_id = rq[i],
                                             .user_id = user,
                                             .playlist_type = types3[i],
                                             .reason = "test"};
                rqp[i] = &rqs[i];
        }
        const struct pl_playlist *plp[3] = {&pls[0], &pls[1], NULL};
        const char *errs[3] = {NULL, NULL, "a test failure"};
        struct pl_store_outcome outs[3];
        assert_int_equal(qz_pg_begin(spg, err, sizeof(err)), 0);
        int rc = pl_store_batch(spg, rqp, plp, errs, 3, outs, st, err, sizeof(err));
        if (rc != 0)
                fprintf(stderr, "pl_store_batch: %s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(qz_pg_commit(spg, err, sizeof(err)), 0);
        assert_true(outs[0].ok && outs[1].ok && !outs[2].ok);
        snprintf(sql, sizeof(sql),
                 "SELECT s.playlist_type || ' ' || s.track_ids::text || ' ' || g.track_ids::text "
                 "|| ' ' || g.variant FROM smart_playlists s JOIN smart_playlist_generations g "
                 "ON g.id = s.id WHERE s.user_id = '%s' ORDER BY 1",
                 user);
        PGresult *r = qz_pg_query(pg, sql, 0, NULL, err, sizeof(err));
        assert_non_null(r);
        assert_int_equal(PQntuples(r), 2);
        assert_string_equal(PQgetvalue(r, 0, 0),
                            "daily_mix {00000003-aaaa-4bbb-8ccc-000000000000,"
                            "00000002-aaaa-4bbb-8ccc-000000000007,"
                            "00000001-aaaa-4bbb-8ccc-000000000014} {00000003-aaaa-4bbb-8ccc-"
                            "000000000000,00000002-aaaa-4bbb-8ccc-000000000007,00000001-aaaa-"
                            "4bbb-8ccc-000000000014} cf");
        assert_string_equal(PQgetvalue(r, 1, 0), "new_for_you {} {} guide");
        PQclear(r);
        snprintf(sql, sizeof(sql),
                 "SELECT status || ' ' || error FROM playlist_requests_done WHERE request_id = "
                 "'%s'",
                 rq[2]);
        r = qz_pg_query(pg, sql, 0, NULL, err, sizeof(err));
        assert_non_null(r);
        assert_int_equal(PQntuples(r), 1);
        assert_string_equal(PQgetvalue(r, 0, 0), "error a test failure");
        PQclear(r);

        /* A malformed track id: refused before sending, nothing stored. */
        snprintf(items[1].track_id, sizeof(items[1].track_id), "not-a-uuid");
        rqs[0].request_id = rq[3];
        assert_int_equal(qz_pg_begin(spg, err, sizeof(err)), 0);
        assert_int_equal(pl_store_batch(spg, rqp, plp, errs, 1, outs, st, err, sizeof(err)), -1);
        assert_string_equal(st, "22P02");
        assert_non_null(strstr(err, "not-a-uuid"));
        assert_int_equal(qz_pg_rollback(spg, err, sizeof(err)), 0);
        snprintf(sql, sizeof(sql), "SELECT 1 FROM playlist_requests_done WHERE request_id = '%s'",
                 rq[3]);
        r = qz_pg_query(pg, sql, 0, NULL, err, sizeof(err));
        assert_non_null(r);
        assert_int_equal(PQntuples(r), 0);
        PQclear(r);
        json_decref(pls[0].metadata);
        json_decref(pls[1].metadata);
        qz_pg_free(spg);
}

/* An error that repeats the request's values is cut at 511 bytes; cut inside a UTF-8 character
 * it used to make the batch's JSON fail as "out of memory" with no SQLSTATE, so the batch was
 * retried forever. Now: pl_store_text_fix drops the cut character, pl_store_batch stores such a
 * text fixed, and the service answers the request with its error. */
static void test_error_text(void **state)
{
        (void)state;
        char s[16];
        snprintf(s, sizeof(s), "ab\xc3\xa9\xc3"); /* é then half of one */
        assert_string_equal(pl_store_text_fix(s), "ab\xc3\xa9");
        snprintf(s, sizeof(s), "a\xff\xc3(\xe2\x82");
        assert_string_equal(pl_store_text_fix(s), "a?"
                                                  "?(");
        snprintf(s, sizeof(s), "\xed\xa0\x80\xf0\x9f\x8e\xb5"); /* a surrogate, then U+1F3B5 */
        assert_string_equal(pl_store_text_fix(s), "???\xf0\x9f\x8e\xb5");

        /* pl_store_batch given a cut text: stored, fixed. */
        char err[512], st[8], sql[256], user[40], rid[40], cut[512];
        qz_uuid_generate(user);
        qz_uuid_generate(rid);
        snprintf(cut, sizeof(cut), "bad \xc3\xa9\xc3");
        struct qz_pg_opts o = {.dsn = dsn};
        struct qz_pg *spg = qz_pg_new(&o, err, sizeof(err));
        assert_non_null(spg);
        assert_int_equal(pl_store_prepare(spg, err, sizeof(err)), 0);
        struct pl_request rq = {
            .request_id = rid, .user_id = user, .playlist_type = "tempo", .reason = "test"};
        const struct pl_request *rqp[1] = {&rq};
        const struct pl_playlist *plp[1] = {NULL};
        const char *errs[1] = {cut};
        struct pl_store_outcome outs[1];
        assert_int_equal(qz_pg_begin(spg, err, sizeof(err)), 0);
        assert_int_equal(pl_store_batch(spg, rqp, plp, errs, 1, outs, st, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_commit(spg, err, sizeof(err)), 0);
        snprintf(sql, sizeof(sql),
                 "SELECT error FROM playlist_requests_done WHERE request_id = '%s'", rid);
        char *e = scalar(sql);
        assert_string_equal(e, "bad \xc3\xa9");
        free(e);
        qz_pg_free(spg);

        /* Through the service: 300 "é" as min_bpm, the error cut at 511 bytes mid-character. */
        char *u1 = uuid_of("u1"), big[700], rid2[37];
        size_t k = 0;
        for (int i = 0; i < 300; i++) {
                big[k++] = '\xc3';
                big[k++] = '\xa9';
        }
        big[k] = '\0';
        qz_uuid_generate(rid2);
        produce_request(rid2, u1, "tempo", json_pack("{s:s}", "min_bpm", big), NULL);
        const char *ids[1] = {rid2};
        json_t *pay[1];
        wait_notifications(ids, 1, pay);
        assert_string_equal(json_string_value(json_object_get(pay[0], "status")), "error");
        const char *msg = json_string_value(json_object_get(pay[0], "error"));
        assert_non_null(msg);
        assert_non_null(strstr(msg, "param min_bpm: bad value"));
        assert_true(strlen(msg) <= 511 && strlen(msg) >= 505);
        json_decref(pay[0]);
        free(u1);
}

/* A generator on its own connection; load_max_plays 0 = the default. */
static struct pl_gen *test_gen_cap(struct qz_pg **out, long long load_max_plays)
{
        char err[512];
        const struct pl_gen_cfg gc = {.target = 20,
                                      .max_target = 100,
                                      .recency_days = 14,
                                      .content_weight = 0.5,
                                      .variants = "cf:100",
                                      .ab_salt = "t",
                                      .load_max_plays = load_max_plays};
        struct qz_pg_opts o = {.dsn = dsn};
        struct qz_pg *gpg = qz_pg_new(&o, err, sizeof(err));
        assert_non_null(gpg);
        assert_int_equal(qz_pg_connect(gpg, err, sizeof(err)), 0);
        struct pl_gen *g = pl_gen_new(gpg, &gc, err, sizeof(err));
        if (!g)
                fail_msg("pl_gen_new: %s", err);
        *out = gpg;
        return g;
}

static struct pl_gen *test_gen(struct qz_pg **out)
{
        return test_gen_cap(out, 0);
}

/* The batch's requests: the four scheduled types for each of users[0..nu) (U4 with 10 plays,
 * U1 with 100+, U2 with none, an unknown user, U1 again spelt in capitals), then a tempo
 * request (SQL path). Returns how many. */
static size_t group_requests(char *const *users, size_t nu, json_t *tempo, struct pl_request *rq,
                             const struct pl_request **rqp)
{
        static const char *const types[] = {"daily_mix", "discovery_weekly", "new_for_you",
                                            "forgotten_favorites"};
        static char ids[64][40];
        size_t k = 0;
        for (size_t t = 0; t < 4; t++)
                for (size_t u = 0; u < nu; u++, k++) {
                        snprintf(ids[k], sizeof(ids[k]), "00000000-0000-4000-8000-0000000001%02zu",
                                 k);
                        rq[k] = (struct pl_request){.request_id = ids[k],
                                                    .user_id = users[u],
                                                    .playlist_type = types[t],
                                                    .reason = "t"};
                }
        snprintf(ids[k], sizeof(ids[k]), "00000000-0000-4000-8000-0000000001%02zu", k);
        rq[k++] = (struct pl_request){.request_id = ids[k],
                                      .user_id = users[1],
                                      .playlist_type = "tempo",
                                      .reason = "t",
                                      .params = tempo};
        for (size_t i = 0; i < k; i++)
                rqp[i] = &rq[i];
        return k;
}

/* b's result for rq is a's: the same tracks, sources and metadata. */
static void same_result(const struct pl_request *rq, const struct pl_gen_result *a,
                        const struct pl_gen_result *b)
{
        if (a->rc != b->rc || strcmp(a->err, b->err) != 0)
                fail_msg("%s %s: rc %d '%s' vs %d '%s'", rq->playlist_type, rq->user_id, a->rc,
                         a->err, b->rc, b->err);
        assert_int_equal(a->pl.n, b->pl.n);
        for (size_t j = 0; j < a->pl.n; j++) {
                assert_string_equal(a->pl.items[j].track_id, b->pl.items[j].track_id);
                assert_int_equal(a->pl.items[j].source, b->pl.items[j].source);
                /* Postgres sums a user's plays in its plan's row order, which another set of
                 * users in the query may change: the last bits. */
                double x = a->pl.items[j].score, y = b->pl.items[j].score;
                assert_true(fabs(x - y) <= 1e-12 * fmax(fabs(x), 1.0));
        }
        assert_true(a->rc != 0 || json_equal(a->pl.metadata, b->pl.metadata));
}

/* QOQNUZ_PLAYLIST_LOAD_MAX_PLAYS: with a cap of 5 plays the batch loads in three groups (U4
 * alone and U1 alone, both over the cap; U2 and the unknown user together), and every result
 * is the one the batch gives in one group (the default cap). A count of plays that fails on
 * the data, not the connection (a lock timeout, 55P03), builds every request by itself, each
 * reporting its own failure. */
static void test_batch_groups(void **state)
{
        (void)state;
        char err[512];
        struct qz_pg *gpg_one, *gpg_split;
        struct pl_gen *one = test_gen(&gpg_one), *split = test_gen_cap(&gpg_split, 5);
        char *users[5] = {uuid_of("u4"), uuid_of("u1"), uuid_of("u2"), uuid_of("u3-unknown"),
                          uuid_of("u1")};
        for (char *c = users[4]; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        json_t *tempo = json_pack("{s:s}", "min_bpm", "100");
        struct pl_request rq[32];
        const struct pl_request *rqp[32];
        struct pl_gen_result a[32], b[32];
        size_t n = group_requests(users, 5, tempo, rq, rqp);
        int64_t now = qz_time_now_ms();
        if (pl_gen_build_batch(one, rqp, n, now, a, err, sizeof(err)) != 0)
                fail_msg("pl_gen_build_batch (one group): %s", err);
        if (pl_gen_build_batch(split, rqp, n, now, b, err, sizeof(err)) != 0)
                fail_msg("pl_gen_build_batch (groups): %s", err);
        size_t built = 0;
        for (size_t i = 0; i < n; i++) {
                same_result(&rq[i], &a[i], &b[i]);
                built += a[i].rc == 0 && a[i].pl.n > 0;
                pl_playlist_free(&b[i].pl);
        }
        assert_int_equal(a[3].rc, 1); /* the unknown user */
        assert_true(built >= 12);     /* U1's and U4's playlists at least */

        assert_int_equal(qz_pg_exec(gpg_split, "SET lock_timeout = '300ms'", err, sizeof(err)), 0);
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        assert_int_equal(
            qz_pg_exec(pg, "LOCK TABLE play_history IN ACCESS EXCLUSIVE MODE", err, sizeof(err)),
            0);
        int rc = pl_gen_build_batch(split, rqp, n, now, b, err, sizeof(err));
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(rc, 0);
        for (size_t i = 0; i < n - 1; i++) {
                assert_int_equal(b[i].rc, -1);
                assert_string_equal(b[i].sqlstate, "55P03");
        }
        for (size_t i = 0; i < n; i++) {
                pl_playlist_free(&a[i].pl);
                pl_playlist_free(&b[i].pl);
        }
        json_decref(tempo);
        for (size_t u = 0; u < 5; u++)
                free(users[u]);
        pl_gen_free(one);
        pl_gen_free(split);
        qz_pg_free(gpg_one);
        qz_pg_free(gpg_split);
}

/* A request's failure is classified by its own SQLSTATE, kept when it failed: a tempo request
 * that times out on a lock (55P03) followed by one whose query succeeds (which clears the
 * connection's state) still reports 55P03, so the service answers it rather than retrying the
 * batch forever. */
static void test_failure_state(void **state)
{
        (void)state;
        char err[512];
        struct qz_pg *gpg;
        struct pl_gen *g = test_gen(&gpg);
        char *u1 = uuid_of("u1");
        json_t *p0 = json_pack("{s:s}", "min_bpm", "100"),
               *p1 = json_pack("{s:s}", "decade", "2020");
        struct pl_request rq[2] = {{.request_id = "00000000-0000-4000-8000-000000000001",
                                    .user_id = u1,
                                    .playlist_type = "tempo",
                                    .reason = "t",
                                    .params = p0},
                                   {.request_id = "00000000-0000-4000-8000-000000000002",
                                    .user_id = u1,
                                    .playlist_type = "decade",
                                    .reason = "t",
                                    .params = p1}};
        const struct pl_request *rqp[2] = {&rq[0], &rq[1]};
        struct pl_gen_result res[2];
        assert_int_equal(qz_pg_exec(gpg, "SET lock_timeout = '300ms'", err, sizeof(err)), 0);
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        assert_int_equal(
            qz_pg_exec(pg, "LOCK TABLE track_features IN ACCESS EXCLUSIVE MODE", err, sizeof(err)),
            0);
        int rc = pl_gen_build_batch(g, rqp, 2, qz_time_now_ms(), res, err, sizeof(err));
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(rc, 0);
        assert_int_equal(res[0].rc, -1);
        assert_string_equal(res[0].sqlstate, "55P03");
        assert_int_equal(res[1].rc, 0);
        assert_string_equal(qz_pg_sqlstate(gpg), "");
        pl_playlist_free(&res[1].pl);
        json_decref(p0);
        json_decref(p1);
        free(u1);
        pl_gen_free(g);
        qz_pg_free(gpg);
}

/* sql/052: a writer of track_similarities holds no lock on the catalog version while it
 * writes (a tracks insert does not wait for it), and the similarity job bumps the version
 * after its commit, so the builders reload the neighbours. */
static void test_similarities_version(void **state)
{
        (void)state;
        char err[512];
        struct qz_pg_opts o = {.dsn = dsn};
        struct qz_pg *w = qz_pg_new(&o, err, sizeof(err));
        assert_non_null(w);
        assert_int_equal(qz_pg_begin(w, err, sizeof(err)), 0);
        assert_int_equal(
            qz_pg_exec(w, "DELETE FROM track_similarities WHERE kind = 'none'", err, sizeof(err)),
            0);
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_exec(pg, "SET LOCAL lock_timeout = '500ms'", err, sizeof(err)), 0);
        int rc = qz_pg_exec(pg,
                            "INSERT INTO tracks (id, title, artist_id) VALUES "
                            "(gen_random_uuid(), 'lock probe', (SELECT id FROM artists LIMIT 1))",
                            err, sizeof(err));
        if (rc != 0)
                fprintf(stderr, "tracks insert during a similarities write: %s\n", err);
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_rollback(w, err, sizeof(err)), 0);
        assert_int_equal(rc, 0);

        long v0 = scalar_long("SELECT version FROM playlist_catalog_version");
        struct pl_similarity_cfg cfg = {
            .k = 20, .window_days = 90, .min_common = 1, .shrink = 10, .max_per_user = 500};
        struct qz_job_result jr = {.expected = -1};
        if (pl_similarity_compute(&cfg, w, NULL, &jr, err, sizeof(err)) != 0)
                fail_msg("pl_similarity_compute: %s", err);
        assert_true(scalar_long("SELECT version FROM playlist_catalog_version") > v0);
        qz_pg_free(w);
}

/* Requests conflicting through a chain (W1, W2, P share (uP, t); X repeats P's request_id and
 * shares (uB, t) with Y) go in successive rounds: X and Y in one round were two upserts of one
 * row in a statement (21000), which sent the whole batch down the one-by-one path. */
static void test_store_rounds(void **state)
{
        (void)state;
        char err[512], st[8], sql[256], up[40], ub[40], r[5][40];
        qz_uuid_generate(up);
        qz_uuid_generate(ub);
        for (int i = 0; i < 5; i++)
                qz_uuid_generate(r[i]);
        snprintf(r[3], sizeof(r[3]), "%s", r[2]); /* X repeats P */
        const char *users[5] = {up, up, up, ub, ub};
        struct pl_request rqs[5];
        const struct pl_request *rqp[5];
        struct pl_playlist pls[5];
        const struct pl_playlist *plp[5];
        const char *errs[5] = {0};
        for (int i = 0; i < 5; i++) {
                rqs[i] = (struct pl_request){.request_id = r[i],
                                             .user_id = users[i],
                                             .playlist_type = "daily_mix",
                                             .reason = "test"};
                rqp[i] = &rqs[i];
                pls[i] = (struct pl_playlist){.metadata = json_pack("{s:i}", "k", i),
                                              .generated_ms = 1700000000000,
                                              .expires_ms = 1700086400000};
                snprintf(pls[i].variant, sizeof(pls[i].variant), "cf");
                plp[i] = &pls[i];
        }
        struct pl_store_outcome outs[5];
        struct qz_pg_opts o = {.dsn = dsn};
        struct qz_pg *spg = qz_pg_new(&o, err, sizeof(err));
        assert_non_null(spg);
        assert_int_equal(pl_store_prepare(spg, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_begin(spg, err, sizeof(err)), 0);
        int rc = pl_store_batch(spg, rqp, plp, errs, 5, outs, st, err, sizeof(err));
        if (rc != 0)
                fprintf(stderr, "pl_store_batch: %s (%s)\n", err, st);
        assert_int_equal(rc, 0);
        assert_int_equal(qz_pg_commit(spg, err, sizeof(err)), 0);
        for (int i = 0; i < 5; i++)
                assert_true(outs[i].duplicate == (i == 3));
        assert_string_equal(outs[3].playlist_id, outs[2].playlist_id);
        snprintf(sql, sizeof(sql),
                 "SELECT (metadata->>'k')::int * 10 + (id = '%s')::int FROM smart_playlists "
                 "WHERE user_id = '%s'",
                 outs[4].playlist_id, ub);
        assert_int_equal(scalar_long(sql), 41);
        snprintf(sql, sizeof(sql),
                 "SELECT (metadata->>'k')::int FROM smart_playlists "
                 "WHERE user_id = '%s'",
                 up);
        assert_int_equal(scalar_long(sql), 2);
        for (int i = 0; i < 5; i++)
                json_decref(pls[i].metadata);
        qz_pg_free(spg);
}

/* A shared load that fails on the data, not the connection (an infinite released_at: the
 * catalog's day arithmetic raises 22008), builds the batch one request at a time instead of
 * failing it on every retry. Last: it changes the catalog. */
static void test_shared_load_fallback(void **state)
{
        (void)state;
        char err[512];
        struct qz_pg *gpg;
        struct pl_gen *g = test_gen(&gpg);
        char *u1 = uuid_of("u1");
        exec_sql("INSERT INTO tracks (id, title, artist_id, released_at) VALUES "
                 "(md5('@-inf')::uuid, 'inf', md5('@-ar-1')::uuid, 'infinity')");
        struct pl_request rq = {.request_id = "00000000-0000-4000-8000-000000000003",
                                .user_id = u1,
                                .playlist_type = "daily_mix",
                                .reason = "t"};
        const struct pl_request *rqp[1] = {&rq};
        struct pl_gen_result res[1];
        int rc = pl_gen_build_batch(g, rqp, 1, qz_time_now_ms(), res, err, sizeof(err));
        exec_sql("DELETE FROM tracks WHERE id = md5('@-inf')::uuid");
        if (rc != 0)
                fail_msg("pl_gen_build_batch: %s", err);
        assert_int_equal(res[0].rc, 0);
        assert_true(res[0].pl.n > 0);
        pl_playlist_free(&res[0].pl);
        free(u1);
        pl_gen_free(g);
        qz_pg_free(gpg);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_guide_types),
            cmocka_unit_test(test_generated_events),
            cmocka_unit_test(test_catalog_change),
            cmocka_unit_test(test_jobs),
            cmocka_unit_test(test_parameterised),
            cmocka_unit_test(test_two_builders),
            cmocka_unit_test(test_store_batch_ids),
            cmocka_unit_test(test_error_text),
            cmocka_unit_test(test_failure_state),
            cmocka_unit_test(test_batch_groups),
            cmocka_unit_test(test_store_rounds),
            cmocka_unit_test(test_similarities_version),
            cmocka_unit_test(test_shared_load_fallback),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
