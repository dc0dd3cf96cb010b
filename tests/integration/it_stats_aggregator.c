/* it_stats_aggregator.c - stats-aggregator end to end: incremental stats equal the SQL oracle.
 *
 * Against the harness's Postgres and dev-broker, with the real service binary:
 *   1. random plays (duplicates, out-of-order played_at, unknown tracks) streamed through
 *      plays.v1 while the aggregator is SIGKILLed mid-stream and restarted: every play
 *      exactly once, user_listening_stats equal to listening_stats_oracle exactly;
 *   2. late catalog rows for the unknown tracks: stats differ, the aggregate-listening-history
 *      job (queued through common/jobs) reports the differing rows and restores equality;
 *   3. poison message -> a RejectedEvent with its key on plays.dlq.v1;
 *   4. two instances in one group, one joining and one leaving mid-stream: equal to the oracle;
 *   5. Postgres (a private cluster) stopped mid-stream: the service waits, reports not
 *      ready, retries, and loses nothing once Postgres is back.
 * Each part uses its own users, tracks and consumer group. */
#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"
#include "jobs.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *pg_dsn, *brokers, *bin, *tmp, *root;
static struct qz_avro_registry *avro;
static struct qz_kafka_producer *producer;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

#define FAIL(...)                                                                                  \
        do {                                                                                       \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fprintf(stderr, "\n");                                                             \
                exit(1);                                                                           \
        } while (0)

static uint64_t rnd(void)
{
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static const char *need_env(const char *name)
{
        const char *v = getenv(name);
        if (!v || !*v)
                FAIL("environment variable %s is not set", name);
        return v;
}

static int free_port(void)
{
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
            getsockname(s, (struct sockaddr *)&a, &len) != 0)
                FAIL("free port");
        close(s);
        return ntohs(a.sin_port);
}

/* ---- Postgres -------------------------------------------------------- */

static PGresult *sql(struct qz_pg *pg, const char *q, int n, const char *const *v)
{
        char err[512];
        PGresult *r = qz_pg_query(pg, q, n, v, err, sizeof(err));
        if (!r)
                FAIL("%s: %s", q, err);
        return r;
}

static long sql_long(struct qz_pg *pg, const char *q, int n, const char *const *v)
{
        PGresult *r = sql(pg, q, n, v);
        long x = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        return x;
}

static struct qz_pg *pg_open(const char *dsn)
{
        char err[512];
        struct qz_pg_opts o = {.dsn = dsn, .application_name = "it_stats_aggregator"};
        struct qz_pg *pg = qz_pg_new(&o, err, sizeof(err));
        if (!pg || qz_pg_connect(pg, err, sizeof(err)) != 0)
                FAIL("postgres %s: %s", dsn, err);
        return pg;
}

/* ---- the service ----------------------------------------------------- */

struct agg {
        pid_t pid;
        int port;
        char log[512];
};

static void agg_start(struct agg *a, const char *name, const char *group, const char *dsn)
{
        if (!a->port)
                a->port = free_port();
        snprintf(a->log, sizeof(a->log), "%s/stats-%s.log", tmp, name);
        pid_t pid = fork();
        if (pid < 0)
                FAIL("fork");
        if (pid == 0) {
                char addr[64], path[512], schemas[512];
                snprintf(addr, sizeof(addr), "127.0.0.1:%d", a->port);
                snprintf(path, sizeof(path), "%s/stats-aggregator", bin);
                snprintf(schemas, sizeof(schemas), "%s/schemas", root);
                setenv("QOQNUZ_HTTP_ADDR", addr, 1);
                setenv("QOQNUZ_KAFKA_BROKERS", brokers, 1);
                setenv("QOQNUZ_PG_DSN", dsn, 1);
                setenv("QOQNUZ_STATS_GROUP_ID", group, 1);
                setenv("QOQNUZ_SCHEMA_DIR", schemas, 1);
                setenv("QOQNUZ_STATS_BATCH_SIZE", "150", 1);
                setenv("QOQNUZ_STATS_BATCH_WAIT_MS", "50", 1);
                int fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                execl(path, path, (char *)NULL);
                _exit(127);
        }
        a->pid = pid;
}

static size_t discard_cb(char *p, size_t s, size_t n, void *u)
{
        (void)p;
        (void)u;
        return s * n;
}

/* GET http://127.0.0.1:port/path; the status, body appended to out (may be NULL). */
static size_t body_cb(char *p, size_t s, size_t n, void *u)
{
        char *out = u;
        size_t have = strlen(out), add = s * n;
        if (have + add >= 65536)
                add = 65535 - have;
        memcpy(out + have, p, add);
        out[have + add] = '\0';
        return s * n;
}

static long http_get(int port, const char *path, char *out)
{
        char url[256];
        long code = 0;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
        if (out) {
                out[0] = '\0';
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        } else {
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
        }
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        return code;
}

static void agg_wait_ready(struct agg *a, int seconds)
{
        for (int i = 0; i < seconds * 10; i++) {
                if (http_get(a->port, "/readyz", NULL) == 200)
                        return;
                usleep(100000);
        }
        FAIL("stats-aggregator on port %d not ready after %d s (log %s)", a->port, seconds, a->log);
}

static double agg_metric(struct agg *a, const char *name)
{
        static char body[65536];
        if (http_get(a->port, "/metrics", body) != 200)
                FAIL("metrics on port %d", a->port);
        for (char *l = strtok(body, "\n"); l; l = strtok(NULL, "\n"))
                if (strncmp(l, name, strlen(name)) == 0 && l[strlen(name)] == ' ')
                        return atof(l + strlen(name) + 1);
        return -1;
}

static void agg_kill(struct agg *a)
{
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
        a->pid = 0;
}

static void agg_stop(struct agg *a)
{
        int st = 0;
        kill(a->pid, SIGTERM);
        for (int i = 0; i < 300; i++) {
                if (waitpid(a->pid, &st, WNOHANG) == a->pid) {
                        a->pid = 0;
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                                FAIL("stats-aggregator exited with status %d on SIGTERM (log %s)",
                                     st, a->log);
                        return;
                }
                usleep(100000);
        }
        FAIL("stats-aggregator did not stop within 30 s of SIGTERM (log %s)", a->log);
}

/* ---- data ------------------------------------------------------------ */

struct world {
        int nusers, ntracks, nunknown;
        char (*users)[37];
        char (*tracks)[37];  /* in the catalog */
        char (*unknown)[37]; /* not (yet) in the catalog */
        char artists[8][37];
        /* every event produced, for duplicates */
        json_t **events;
        size_t nevents, cap;
};

static void world_new(struct world *w, struct qz_pg *pg, int nusers, int ntracks, int nunknown)
{
        static const char *genres[] = {"rock", "pop",     "jazz",   "hip hop",
                                       "Folk", "électro", "ambient"};
        memset(w, 0, sizeof(*w));
        w->nusers = nusers;
        w->ntracks = ntracks;
        w->nunknown = nunknown;
        w->users = calloc((size_t)nusers, 37);
        w->tracks = calloc((size_t)ntracks, 37);
        w->unknown = calloc((size_t)nunknown, 37);
        for (int i = 0; i < nusers; i++)
                qz_uuid_generate(w->users[i]);
        for (int i = 0; i < nunknown; i++)
                qz_uuid_generate(w->unknown[i]);
        for (int i = 0; i < 8; i++) {
                char name[64];
                qz_uuid_generate(w->artists[i]);
                snprintf(name, sizeof(name), "it artist %d", i);
                const char *v[] = {w->artists[i], name};
                PQclear(sql(pg, "INSERT INTO artists (id, name) VALUES ($1::uuid, $2)", 2, v));
        }
        for (int i = 0; i < ntracks; i++) {
                char title[64], g[128];
                qz_uuid_generate(w->tracks[i]);
                snprintf(title, sizeof(title), "it track %d", i);
                /* zero to two genres, overlapping, so genre ties and counts interleave */
                int ng = (int)(rnd() % 3);
                snprintf(g, sizeof(g), "{%s%s%s%s%s}", ng > 0 ? "\"" : "",
                         ng > 0 ? genres[rnd() % 7] : "", ng > 0 ? "\"" : "", ng > 1 ? ",pop" : "",
                         "");
                const char *v[] = {w->tracks[i], title, w->artists[rnd() % 8], g};
                PQclear(sql(pg,
                            "INSERT INTO tracks (id, title, artist_id, genres) "
                            "VALUES ($1::uuid, $2, $3::uuid, $4::text[])",
                            4, v));
        }
}

static void world_free(struct world *w)
{
        for (size_t i = 0; i < w->nevents; i++)
                json_decref(w->events[i]);
        free(w->events);
        free(w->users);
        free(w->tracks);
        free(w->unknown);
        memset(w, 0, sizeof(*w));
}

static json_t *new_play(struct world *w)
{
        char ev[37];
        qz_uuid_generate(ev);
        const char *user = w->users[rnd() % (uint64_t)w->nusers];
        /* skewed: a few tracks get most plays, so top lists have real ties and orders */
        const char *track = rnd() % 5 == 0
                                ? w->unknown[rnd() % (uint64_t)w->nunknown]
                                : w->tracks[(rnd() % (uint64_t)w->ntracks) *
                                            (rnd() % (uint64_t)w->ntracks) / (uint64_t)w->ntracks];
        /* out of order: anywhere in the last 60 days */
        int64_t played = (int64_t)time(NULL) * 1000 - (int64_t)(rnd() % (60LL * 86400 * 1000));
        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:s, s:s, s:n}", "event_id", ev, "user_id",
                         user, "track_id", track, "played_at", (json_int_t)played,
                         "duration_played_ms", (json_int_t)(rnd() % 400000), "completed",
                         (int)(rnd() % 2), "source", "album", "device_type", "mobile",
                         "source_playlist_id");
}

/* Produces n plays (about one in eight a re-send of an earlier event: a player retry). */
static void produce_plays(struct world *w, int n)
{
        char err[512];
        struct qz_kafka_record *recs = calloc((size_t)n, sizeof(*recs));
        unsigned char **bufs = calloc((size_t)n, sizeof(*bufs));
        const struct qz_avro_schema *s = qz_avro_schema_get(avro, "PlayEvent");
        for (int i = 0; i < n; i++) {
                json_t *ev;
                if (w->nevents > 0 && rnd() % 8 == 0) {
                        ev = json_incref(w->events[rnd() % w->nevents]);
                } else {
                        ev = new_play(w);
                        if (w->nevents == w->cap) {
                                w->cap = w->cap ? w->cap * 2 : 1024;
                                w->events = realloc(w->events, w->cap * sizeof(*w->events));
                        }
                        w->events[w->nevents++] = json_incref(ev);
                }
                size_t len = 0;
                if (qz_avro_encode_json(s, ev, &bufs[i], &len, err, sizeof(err)) != 0)
                        FAIL("encode: %s", err);
                const char *user = json_string_value(json_object_get(ev, "user_id"));
                recs[i] = (struct qz_kafka_record){.topic = "plays.v1",
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = user,
                                                   .key_len = strlen(user),
                                                   .value = bufs[i],
                                                   .value_len = len};
                json_decref(ev);
        }
        if (qz_kafka_produce_wait(producer, recs, (size_t)n, 30000, err, sizeof(err)) !=
            QZ_KAFKA_OK)
                FAIL("produce: %s", err);
        for (int i = 0; i < n; i++)
                free(bufs[i]);
        free(bufs);
        free(recs);
}

/* The users as a Postgres uuid[] literal (caller frees). */
static char *users_literal(struct world *w)
{
        char *s = malloc((size_t)w->nusers * 38 + 3), *p = s;
        *p++ = '{';
        for (int i = 0; i < w->nusers; i++)
                p += sprintf(p, "%s%s", i ? "," : "", w->users[i]);
        strcpy(p, "}");
        return s;
}

static void wait_stored(struct qz_pg *pg, struct world *w, int seconds)
{
        char *users = users_literal(w);
        const char *v[] = {users};
        long have = 0;
        for (int i = 0; i < seconds * 5; i++) {
                have = sql_long(
                    pg, "SELECT count(*) FROM play_history WHERE user_id = ANY($1::uuid[])", 1, v);
                if (have == (long)w->nevents)
                        break;
                usleep(200000);
        }
        if (have != (long)w->nevents)
                FAIL("play_history holds %ld of the %zu distinct plays after %d s", have,
                     w->nevents, seconds);
        free(users);
}

/* Users (of w) whose stats differ from the oracle; prints the first. */
static long differences(struct qz_pg *pg, struct world *w, bool verbose)
{
        char *users = users_literal(w);
        const char *v[] = {users};
        PGresult *r =
            sql(pg,
                "SELECT coalesce(o.user_id, s.user_id), o.total_plays, s.total_plays, "
                "o.favorite_genres::text, s.favorite_genres::text, o.favorite_artists::text, "
                "s.favorite_artists::text, o.top_tracks::text, s.top_tracks::text, "
                "o.listening_patterns::text, s.listening_patterns::text "
                "FROM (SELECT * FROM listening_stats_oracle WHERE user_id = ANY($1::uuid[])) o "
                "FULL JOIN (SELECT * FROM user_listening_stats WHERE user_id = ANY($1::uuid[])) s "
                "ON s.user_id = o.user_id "
                "WHERE o.user_id IS NULL OR s.user_id IS NULL OR "
                "(o.total_plays, o.total_listening_time_ms, o.favorite_genres, o.favorite_artists, "
                "o.top_tracks, o.listening_patterns) IS DISTINCT FROM (s.total_plays, "
                "s.total_listening_time_ms, s.favorite_genres, s.favorite_artists, s.top_tracks, "
                "s.listening_patterns)",
                1, v);
        long n = PQntuples(r);
        if (n > 0 && verbose) {
                fprintf(stderr, "first difference, user %s: oracle vs incremental\n",
                        PQgetvalue(r, 0, 0));
                for (int c = 1; c + 1 < PQnfields(r); c += 2)
                        if (strcmp(PQgetvalue(r, 0, c), PQgetvalue(r, 0, c + 1)) != 0)
                                fprintf(stderr, "  %s\n  %s\n", PQgetvalue(r, 0, c),
                                        PQgetvalue(r, 0, c + 1));
        }
        PQclear(r);
        free(users);
        return n;
}

/* The render step (sql/011) rewrites stats rows after the ingest commit: wait until none of
 * w's users is marked dirty (the marks are committed with the plays, so once wait_stored saw
 * every play, no mark can still appear). */
static void wait_rendered(struct qz_pg *pg, struct world *w, int seconds)
{
        char *users = users_literal(w);
        const char *v[] = {users};
        long dirty = -1;
        for (int i = 0; i < seconds * 10; i++) {
                dirty = sql_long(
                    pg,
                    "SELECT count(*) FROM listening_stats_dirty WHERE user_id = ANY($1::uuid[])", 1,
                    v);
                if (dirty == 0)
                        break;
                usleep(100000);
        }
        free(users);
        if (dirty != 0)
                FAIL("%ld dirty marks of our users not rendered after %d s", dirty, seconds);
}

static void require_equal_to_oracle(struct qz_pg *pg, struct world *w, const char *what)
{
        wait_rendered(pg, w, 30);
        long d = differences(pg, w, true);
        if (d != 0)
                FAIL("%s: %ld users' stats differ from listening_stats_oracle", what, d);
        char *users = users_literal(w);
        const char *v[] = {users};
        long rows = sql_long(
            pg, "SELECT count(*) FROM user_listening_stats WHERE user_id = ANY($1::uuid[])", 1, v);
        free(users);
        if (rows < w->nusers / 2)
                FAIL("%s: only %ld stats rows for %d users", what, rows, w->nusers);
}

/* ---- parts ----------------------------------------------------------- */

static void part_exactly_once_and_reconcile(struct qz_pg *pg)
{
        struct world w;
        struct agg a = {0};
        char group[64], err[512], run_id[37];
        world_new(&w, pg, 40, 120, 15);
        snprintf(group, sizeof(group), "it-stats-once-%d", (int)getpid());
        agg_start(&a, "once", group, pg_dsn);
        agg_wait_ready(&a, 40);
        produce_plays(&w, 1500);
        usleep(300000); /* let it be inside a batch */
        agg_kill(&a);
        produce_plays(&w, 1500);
        agg_start(&a, "once", group, pg_dsn);
        agg_wait_ready(&a, 40);
        produce_plays(&w, 600);
        wait_stored(pg, &w, 60);
        require_equal_to_oracle(pg, &w, "after SIGKILL and restart");
        double dups = agg_metric(&a, "qz_stats_plays_duplicate_total");
        if (dups <= 0)
                FAIL("no duplicate counted by the restarted instance (%g)", dups);
        double rendered = agg_metric(&a, "qz_stats_users_rendered_total");
        double lag = agg_metric(&a, "qz_stats_render_lag_seconds");
        if (rendered <= 0 || lag < 0 || lag > 30)
                FAIL("render metrics: %g users rendered, lag %g s", rendered, lag);
        printf("ok: %zu distinct plays (of 3600 sent, retries included) exactly once across a "
               "SIGKILL; stats equal the oracle\n",
               w.nevents);

        /* late catalog rows for the unknown tracks */
        for (int i = 0; i < w.nunknown; i++) {
                const char *v[] = {w.unknown[i], w.artists[i % 8]};
                PQclear(sql(pg,
                            "INSERT INTO tracks (id, title, artist_id, genres) "
                            "VALUES ($1::uuid, 'late track', $2::uuid, '{late}')",
                            2, v));
        }
        long before = differences(pg, &w, false);
        if (before == 0)
                FAIL("late catalog rows changed nothing: the test cannot see a reconcile");
        if (qz_jobs_enqueue(pg, producer, avro, "aggregate-listening-history", NULL, run_id, err,
                            sizeof(err)) != 0)
                FAIL("enqueue: %s", err);
        const char *v[] = {run_id};
        PGresult *r = NULL;
        for (int i = 0; i < 600; i++) {
                r = sql(pg,
                        "SELECT status, coalesce(message, ''), processed FROM automation_job_runs "
                        "WHERE run_id = $1::uuid",
                        1, v);
                if (strcmp(PQgetvalue(r, 0, 0), "succeeded") == 0 ||
                    strcmp(PQgetvalue(r, 0, 0), "failed") == 0)
                        break;
                PQclear(r);
                r = NULL;
                usleep(100000);
        }
        if (!r)
                FAIL("aggregate-listening-history run %s did not finish in 60 s", run_id);
        if (strcmp(PQgetvalue(r, 0, 0), "succeeded") != 0)
                FAIL("reconcile run failed: %s", PQgetvalue(r, 0, 1));
        long differed = -1;
        const char *m = strstr(PQgetvalue(r, 0, 1), "; ");
        if (!m || sscanf(m, "; %ld rows differed", &differed) != 1 || differed < before)
                FAIL("run message does not report >= %ld differing rows: '%s'", before,
                     PQgetvalue(r, 0, 1));
        printf("ok: late tracks: %ld of our users differed; the job says: %s\n", before,
               PQgetvalue(r, 0, 1));
        PQclear(r);
        require_equal_to_oracle(pg, &w, "after the reconcile");
        /* new plays after the reconcile stay equal (the counters were rebuilt too) */
        produce_plays(&w, 600);
        wait_stored(pg, &w, 60);
        require_equal_to_oracle(pg, &w, "plays after the reconcile");
        printf("ok: reconcile restores equality, later plays keep it\n");

        /* poison message -> DLQ with its key */
        char key[64];
        snprintf(key, sizeof(key), "poison-%d-%ld", (int)getpid(), (long)time(NULL));
        struct qz_kafka_record rec = {.topic = "plays.v1",
                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                      .key = key,
                                      .key_len = strlen(key),
                                      .value = "\xc3\x01garbage",
                                      .value_len = 9};
        if (qz_kafka_produce_wait(producer, &rec, 1, 10000, err, sizeof(err)) != QZ_KAFKA_OK)
                FAIL("produce poison: %s", err);
        char conf_err[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, conf_err, sizeof(conf_err));
        rd_kafka_conf_set(conf, "group.id", "it-stats-dlq-reader", conf_err, sizeof(conf_err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, conf_err, sizeof(conf_err));
        if (!rk)
                FAIL("dlq reader: %s", conf_err);
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(3);
        for (int p = 0; p < 3; p++)
                rd_kafka_topic_partition_list_add(parts, "plays.dlq.v1", p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
        bool found = false;
        time_t until = time(NULL) + 30;
        while (!found && time(NULL) < until) {
                rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 500);
                if (!msg)
                        continue;
                if (!msg->err && msg->key_len == strlen(key) &&
                    memcmp(msg->key, key, msg->key_len) == 0) {
                        json_t *ev = NULL;
                        if (qz_avro_decode_json(avro, msg->payload, msg->len, NULL, &ev, err,
                                                sizeof(err)) != 0)
                                FAIL("DLQ record does not decode: %s", err);
                        const char *svc = json_string_value(json_object_get(ev, "service"));
                        const char *topic =
                            json_string_value(json_object_get(ev, "original_topic"));
                        if (!svc || strcmp(svc, "stats-aggregator") != 0 || !topic ||
                            strcmp(topic, "plays.v1") != 0)
                                FAIL("DLQ record names service %s topic %s", svc ? svc : "-",
                                     topic ? topic : "-");
                        printf("ok: poison message on plays.dlq.v1, reason %s\n",
                               json_string_value(json_object_get(ev, "reason")));
                        json_decref(ev);
                        found = true;
                }
                rd_kafka_message_destroy(msg);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        if (!found)
                FAIL("no RejectedEvent with key %s on plays.dlq.v1 within 30 s", key);
        agg_stop(&a);
        world_free(&w);
}

static void part_two_instances(struct qz_pg *pg)
{
        struct world w;
        struct agg a = {0}, b = {0};
        char group[64];
        world_new(&w, pg, 60, 100, 10);
        snprintf(group, sizeof(group), "it-stats-pair-%d", (int)getpid());
        agg_start(&a, "pair-a", group, pg_dsn);
        agg_wait_ready(&a, 40);
        produce_plays(&w, 1000);
        agg_start(&b, "pair-b", group, pg_dsn); /* joins: rebalance mid-stream */
        produce_plays(&w, 1000);
        agg_wait_ready(&b, 40);
        produce_plays(&w, 1500);
        wait_stored(pg, &w, 60);
        double ca = agg_metric(&a, "qz_stats_plays_consumed_total");
        double cb = agg_metric(&b, "qz_stats_plays_consumed_total");
        if (ca <= 0 || cb <= 0)
                FAIL("the partitions were not split: consumed %g and %g", ca, cb);
        agg_stop(&a); /* leaves: b takes every partition */
        produce_plays(&w, 800);
        wait_stored(pg, &w, 60);
        require_equal_to_oracle(pg, &w, "two instances");
        agg_stop(&b);
        printf("ok: two instances split the partitions (consumed %g / %g), one left; stats equal "
               "the oracle\n",
               ca, cb);
        world_free(&w);
}

static void run_lib(const char *fmt, ...)
{
        char cmd[2048], body[1536];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(body, sizeof(body), fmt, ap);
        va_end(ap);
        snprintf(cmd, sizeof(cmd), "bash -c '. \"%s/scripts/lib.sh\"; %s' >>%s/stats-pg.log 2>&1",
                 root, body, tmp);
        if (system(cmd) != 0)
                FAIL("%s failed (see %s/stats-pg.log)", body, tmp);
}

static void part_postgres_down(void)
{
        char dir[512], dsn[256], group[64];
        int port = free_port();
        snprintf(dir, sizeof(dir), "%s/stats-pgdown", tmp);
        snprintf(dsn, sizeof(dsn), "postgresql://qoqnuz@127.0.0.1:%d/qoqnuz", port);
        run_lib("mkdir -p %s && chmod 755 %s && QZ_PG_FSYNC=off pg_start %s %d", dir, dir, dir,
                port);
        run_lib("QOQNUZ_PG_DSN=%s QOQNUZ_SQL_DIR=%s/sql %s/qoqnuzctl migrate", dsn, root, bin);
        struct qz_pg *pg = pg_open(dsn);
        struct world w;
        struct agg a = {0};
        world_new(&w, pg, 30, 60, 5);
        snprintf(group, sizeof(group), "it-stats-pgdown-%d", (int)getpid());
        agg_start(&a, "pgdown", group, dsn);
        agg_wait_ready(&a, 60);
        produce_plays(&w, 800);
        wait_stored(pg, &w, 60);
        qz_pg_free(pg);
        run_lib("pg_stop %s", dir);
        produce_plays(&w, 800);
        sleep(3);
        if (waitpid(a.pid, NULL, WNOHANG) != 0)
                FAIL("stats-aggregator died while Postgres was down (log %s)", a.log);
        long code = http_get(a.port, "/readyz", NULL);
        if (code != 503)
                FAIL("/readyz with Postgres down: %ld", code);
        run_lib("QZ_PG_FSYNC=off pg_start %s %d", dir, port);
        pg = pg_open(dsn);
        wait_stored(pg, &w, 90);
        require_equal_to_oracle(pg, &w, "after Postgres came back");
        agg_wait_ready(&a, 30);
        agg_stop(&a);
        qz_pg_free(pg);
        run_lib("pg_stop %s", dir);
        printf("ok: Postgres down mid-stream: not ready, retried, nothing lost or doubled\n");
        world_free(&w);
}

int main(void)
{
        char err[512];
        pg_dsn = need_env("QZ_TEST_PG_DSN");
        brokers = need_env("QZ_TEST_BROKERS");
        bin = need_env("QZ_TEST_BIN");
        tmp = need_env("QZ_TEST_TMP");
        root = need_env("QZ_TEST_ROOT");
        qz_log_init("it_stats_aggregator", QZ_LOG_WARN);
        rng_state ^= (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
        printf("seed %llu\n", (unsigned long long)rng_state);
        char schemas[512];
        snprintf(schemas, sizeof(schemas), "%s/schemas", root);
        if (qz_avro_registry_load(schemas, &avro, err, sizeof(err)) != 0)
                FAIL("schemas: %s", err);
        struct qz_kafka_producer_config pc = {.brokers = brokers, .client_id = "it-stats"};
        if (qz_kafka_producer_new(&pc, &producer, err, sizeof(err)) != 0)
                FAIL("producer: %s", err);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        struct qz_pg *pg = pg_open(pg_dsn);

        part_exactly_once_and_reconcile(pg);
        part_two_instances(pg);
        part_postgres_down();

        qz_pg_free(pg);
        qz_kafka_producer_close(producer, 5000);
        qz_avro_registry_free(avro);
        printf("ok: stats-aggregator integration\n");
        return 0;
}
