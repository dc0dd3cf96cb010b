/* it_pg.c - the Postgres wrapper, the migrations and the migration runner against a real server.
 *
 * Env: QZ_TEST_PG_DSN (a migrated database; the user may create databases), QZ_TEST_ROOT (repo
 * root: sql/ lives there), QZ_TEST_BIN (qoqnuzctl). A missing variable fails the run.
 * Tests that touch shared tables work inside a transaction they roll back, so other
 * integration tests find the database as migrated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "log.h"
#include "pg.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct env {
        const char *dsn;
        const char *root;
        const char *bin;
};

static int setup_env(void **state)
{
        struct env *env = calloc(1, sizeof(*env));
        if (!env)
                return -1;
        env->dsn = getenv("QZ_TEST_PG_DSN");
        env->root = getenv("QZ_TEST_ROOT");
        env->bin = getenv("QZ_TEST_BIN");
        if (!env->dsn || !*env->dsn || !env->root || !*env->root || !env->bin || !*env->bin) {
                fprintf(stderr,
                        "it_pg: QZ_TEST_PG_DSN, QZ_TEST_ROOT and QZ_TEST_BIN must be set\n");
                free(env);
                return -1; /* cmocka fails the group: never a skip */
        }
        *state = env;
        return 0;
}

static int teardown_env(void **state)
{
        free(*state);
        return 0;
}

static struct qz_pg *open_pg(const char *dsn, const char *app)
{
        char err[512];
        struct qz_pg *pg = qz_pg_new(
            &(struct qz_pg_opts){.dsn = dsn, .application_name = app, .backoff_min_ms = 50}, err,
            sizeof(err));
        if (!pg)
                fail_msg("qz_pg_new: %s", err);
        if (qz_pg_connect(pg, err, sizeof(err)) != 0)
                fail_msg("connect: %s", err);
        return pg;
}

/* The single value of a one-row, one-column query ("" for NULL), into out. */
static void query1(struct qz_pg *pg, const char *sql, int n, const char *const *vals, char *out,
                   size_t out_size)
{
        char err[512];
        PGresult *res = qz_pg_query(pg, sql, n, vals, err, sizeof(err));
        if (!res)
                fail_msg("%s: %s", sql, err);
        if (PQntuples(res) != 1 || PQnfields(res) < 1)
                fail_msg("%s: %d rows", sql, PQntuples(res));
        snprintf(out, out_size, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
}

static long query_long(struct qz_pg *pg, const char *sql, int n, const char *const *vals)
{
        char buf[64];
        query1(pg, sql, n, vals, buf, sizeof(buf));
        return atol(buf);
}

static void exec_ok(struct qz_pg *pg, const char *sql)
{
        char err[512];
        if (qz_pg_exec(pg, sql, err, sizeof(err)) != 0)
                fail_msg("%s: %s", sql, err);
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Kills pg's backend from a second connection and waits until it is gone. */
static void kill_backend(const char *dsn, struct qz_pg *pg)
{
        char pid[32];
        snprintf(pid, sizeof(pid), "%d", PQbackendPID(qz_pg_conn(pg)));
        struct qz_pg *killer = open_pg(dsn, "it_pg_killer");
        const char *vals[1] = {pid};
        char out[16];
        query1(killer, "SELECT pg_terminate_backend($1::int)", 1, vals, out, sizeof(out));
        assert_string_equal(out, "t");
        for (int i = 0; i < 200; i++) {
                if (query_long(killer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int",
                               1, vals) == 0)
                        break;
                usleep(10000);
        }
        qz_pg_free(killer);
}

static void test_connect_prepare_options(void **state)
{
        struct env *env = *state;
        char err[512], out[64];
        struct qz_pg *pg = qz_pg_new(&(struct qz_pg_opts){.dsn = env->dsn,
                                                          .application_name = "it_pg_opts",
                                                          .statement_timeout_ms = 300},
                                     err, sizeof(err));
        assert_non_null(pg);
        assert_false(qz_pg_ready(pg)); /* created unconnected */
        assert_null(qz_pg_conn(pg));

        assert_int_equal(qz_pg_prepare(pg, "add_one", "SELECT $1::int + 1", err, sizeof(err)), 0);
        const char *v41[1] = {"41"};
        PGresult *res = qz_pg_query_prepared(pg, "add_one", 1, v41, err, sizeof(err));
        assert_non_null(res); /* connected on demand, statement prepared on connect */
        assert_string_equal(PQgetvalue(res, 0, 0), "42");
        PQclear(res);
        assert_true(qz_pg_ready(pg));
        assert_string_equal(qz_pg_sqlstate(pg), "");

        query1(pg, "SELECT current_setting('application_name')", 0, NULL, out, sizeof(out));
        assert_string_equal(out, "it_pg_opts");
        query1(pg, "SHOW statement_timeout", 0, NULL, out, sizeof(out));
        assert_string_equal(out, "300ms");

        /* A timeout is a statement error, not a lost connection. */
        assert_null(qz_pg_query(pg, "SELECT pg_sleep(2)", 0, NULL, err, sizeof(err)));
        assert_string_equal(qz_pg_sqlstate(pg), "57014");
        assert_non_null(strstr(err, "SQLSTATE 57014"));
        assert_false(qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)));
        assert_true(qz_pg_ready(pg));

        /* A bad statement is reported at prepare time and not registered. */
        assert_int_equal(qz_pg_prepare(pg, "bad", "SELECT nope FROM nowhere", err, sizeof(err)),
                         -1);
        assert_string_equal(qz_pg_sqlstate(pg), "42P01");
        assert_int_equal(qz_pg_prepare(pg, "add_one", "SELECT 1", err, sizeof(err)), -1);

        /* exec_prepared reports the affected rows. */
        assert_int_equal(
            qz_pg_prepare(pg, "gen", "SELECT generate_series(1, $1::int)", err, sizeof(err)), 0);
        long affected = -1;
        const char *v3[1] = {"3"};
        assert_int_equal(qz_pg_exec_prepared(pg, "gen", 1, v3, &affected, err, sizeof(err)), 0);
        assert_int_equal(affected, 3);
        assert_int_equal(qz_pg_ping(pg, err, sizeof(err)), 0);
        qz_pg_free(pg);
}

static void test_reprepare_after_kill(void **state)
{
        struct env *env = *state;
        char err[512];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_kill");
        assert_int_equal(qz_pg_prepare(pg, "echo", "SELECT $1::text || '!'", err, sizeof(err)), 0);
        int pid_before = PQbackendPID(qz_pg_conn(pg));
        kill_backend(env->dsn, pg);

        const char *v[1] = {"hi"};
        PGresult *res = qz_pg_query_prepared(pg, "echo", 1, v, err, sizeof(err));
        assert_null(res); /* the call that finds the connection dead reports it */
        assert_true(qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)));
        assert_false(qz_pg_ready(pg));

        res = qz_pg_query_prepared(pg, "echo", 1, v, err, sizeof(err));
        if (!res)
                fail_msg("after reconnect: %s", err);
        assert_string_equal(PQgetvalue(res, 0, 0), "hi!");
        PQclear(res);
        assert_true(qz_pg_ready(pg));
        assert_int_not_equal(PQbackendPID(qz_pg_conn(pg)), pid_before);

        /* ping notices a connection that died while idle. */
        kill_backend(env->dsn, pg);
        assert_int_equal(qz_pg_ping(pg, err, sizeof(err)), -1);
        assert_false(qz_pg_ready(pg));
        assert_int_equal(qz_pg_ping(pg, err, sizeof(err)), 0);
        assert_true(qz_pg_ready(pg));
        qz_pg_free(pg);
}

static void test_copy_escape_table(void **state)
{
        (void)state;
        static const struct {
                const char *in;
                const char *out;
        } cases[] = {
            {"plain", "plain"},
            {"a\tb", "a\\tb"},
            {"l1\nl2", "l1\\nl2"},
            {"back\\slash", "back\\\\slash"},
            {"\\N", "\\\\N"},
            {"cr\r\b\f\v", "cr\\r\\b\\f\\v"},
            {"", ""},
            {"ünï", "ünï"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char out[64];
                size_t n = qz_pg_copy_escape(out, sizeof(out), cases[i].in, strlen(cases[i].in));
                assert_string_equal(out, cases[i].out);
                assert_int_equal(n, strlen(cases[i].out));
        }
        char small[4];
        assert_int_equal(qz_pg_copy_escape(small, sizeof(small), "a\tbc", 4), 5);
        assert_int_equal(strlen(small), 3);
        assert_int_equal(qz_pg_copy_escape(NULL, 0, "\n\n", 2), 4);
}

static void test_copy_roundtrip(void **state)
{
        struct env *env = *state;
        char err[512];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_copy");
        exec_ok(pg, "CREATE TEMP TABLE copy_t (id int PRIMARY KEY, v text)");

        static const char *values[] = {
            "tab\there", "new\nline", "back\\slash", NULL,  "\\N",
            "",          "crlf\r\n",  "ünïcødé",     "\\.", "end",
        };
        const size_t n = sizeof(values) / sizeof(values[0]);
        assert_int_equal(qz_pg_copy_begin(pg, "COPY copy_t (id, v) FROM STDIN", err, sizeof(err)),
                         0);
        for (size_t i = 0; i < n; i++) {
                char id[16];
                snprintf(id, sizeof(id), "%zu", i);
                const char *row[2] = {id, values[i]};
                assert_int_equal(qz_pg_copy_row(pg, 2, row, err, sizeof(err)), 0);
        }
        /* Raw, pre-formatted data goes through qz_pg_copy_put. */
        const char *raw = "100\traw\\tline\n";
        assert_int_equal(qz_pg_copy_put(pg, raw, strlen(raw), err, sizeof(err)), 0);
        long rows = -1;
        if (qz_pg_copy_end(pg, &rows, err, sizeof(err)) != 0)
                fail_msg("copy_end: %s", err);
        assert_int_equal(rows, (long)n + 1);

        PGresult *res =
            qz_pg_query(pg, "SELECT id, v FROM copy_t ORDER BY id", 0, NULL, err, sizeof(err));
        assert_non_null(res);
        assert_int_equal(PQntuples(res), (int)n + 1);
        for (size_t i = 0; i < n; i++) {
                if (values[i] == NULL) {
                        assert_true(PQgetisnull(res, (int)i, 1));
                } else {
                        assert_false(PQgetisnull(res, (int)i, 1));
                        assert_string_equal(PQgetvalue(res, (int)i, 1), values[i]);
                }
        }
        assert_string_equal(PQgetvalue(res, (int)n, 1), "raw\tline");
        PQclear(res);

        /* A bad row fails at end with the server's code; the connection stays usable. */
        assert_int_equal(qz_pg_copy_begin(pg, "COPY copy_t (id, v) FROM STDIN", err, sizeof(err)),
                         0);
        const char *bad[2] = {"not-a-number", "x"};
        assert_int_equal(qz_pg_copy_row(pg, 2, bad, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_copy_end(pg, NULL, err, sizeof(err)), -1);
        assert_string_equal(qz_pg_sqlstate(pg), "22P02");
        assert_true(qz_pg_ready(pg));

        /* Abort stores nothing; a query during COPY is refused, not sent. */
        assert_int_equal(qz_pg_copy_begin(pg, "COPY copy_t (id, v) FROM STDIN", err, sizeof(err)),
                         0);
        const char *ok[2] = {"200", "aborted"};
        assert_int_equal(qz_pg_copy_row(pg, 2, ok, err, sizeof(err)), 0);
        assert_null(qz_pg_query(pg, "SELECT 1", 0, NULL, err, sizeof(err)));
        qz_pg_copy_abort(pg, "test abort");
        assert_int_equal(query_long(pg, "SELECT count(*) FROM copy_t WHERE id >= 200", 0, NULL), 0);
        assert_int_equal(query_long(pg, "SELECT count(*) FROM copy_t", 0, NULL), (long)n + 1);

        /* A non-COPY statement is refused by copy_begin. */
        assert_int_equal(qz_pg_copy_begin(pg, "SELECT 1", err, sizeof(err)), -1);
        qz_pg_free(pg);
}

static void test_transactions(void **state)
{
        struct env *env = *state;
        char err[512];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_tx");
        char name[64];
        snprintf(name, sizeof(name), "it_pg_tx_%d", (int)getpid());
        const char *v[1] = {name};
        const char *count_sql = "SELECT count(*) FROM users WHERE display_name = $1";

        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), -1); /* no nesting */
        PGresult *res =
            qz_pg_query(pg, "INSERT INTO users (display_name) VALUES ($1)", 1, v, err, sizeof(err));
        assert_non_null(res);
        PQclear(res);
        assert_int_equal(query_long(pg, count_sql, 1, v), 1); /* visible inside */
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(query_long(pg, count_sql, 1, v), 0); /* rollback left nothing */

        /* An error inside a transaction makes commit fail. */
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        res =
            qz_pg_query(pg, "INSERT INTO users (display_name) VALUES ($1)", 1, v, err, sizeof(err));
        PQclear(res);
        assert_null(qz_pg_query(pg, "SELECT 1/0", 0, NULL, err, sizeof(err)));
        assert_string_equal(qz_pg_sqlstate(pg), "22012");
        assert_int_equal(qz_pg_commit(pg, err, sizeof(err)), -1);
        assert_int_equal(query_long(pg, count_sql, 1, v), 0);

        /* A connection lost inside a transaction: later calls refuse until rollback. */
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        res =
            qz_pg_query(pg, "INSERT INTO users (display_name) VALUES ($1)", 1, v, err, sizeof(err));
        PQclear(res);
        kill_backend(env->dsn, pg);
        assert_null(qz_pg_query(pg, "SELECT 1", 0, NULL, err, sizeof(err)));
        assert_true(qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)));
        assert_null(qz_pg_query(pg, "SELECT 1", 0, NULL, err, sizeof(err)));
        assert_string_equal(qz_pg_sqlstate(pg), "08006");
        assert_non_null(strstr(err, "roll back"));
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(query_long(pg, count_sql, 1, v), 0);

        /* Commit stores. */
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        res =
            qz_pg_query(pg, "INSERT INTO users (display_name) VALUES ($1)", 1, v, err, sizeof(err));
        PQclear(res);
        assert_int_equal(qz_pg_commit(pg, err, sizeof(err)), 0);
        assert_int_equal(query_long(pg, count_sql, 1, v), 1);
        res = qz_pg_query(pg, "DELETE FROM users WHERE display_name = $1", 1, v, err, sizeof(err));
        PQclear(res);
        qz_pg_free(pg);
}

static int free_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        close(fd); /* nothing listens there now */
        return ntohs(a.sin_port);
}

static void test_unreachable(void **state)
{
        (void)state;
        char err[512], dsn[128];
        snprintf(dsn, sizeof(dsn), "postgresql://qoqnuz@127.0.0.1:%d/qoqnuz", free_port());
        struct qz_pg *pg =
            qz_pg_new(&(struct qz_pg_opts){.dsn = dsn, .backoff_min_ms = 200}, err, sizeof(err));
        assert_non_null(pg); /* unreachable is not a config error */

        double t0 = now_s();
        assert_int_equal(qz_pg_connect(pg, err, sizeof(err)), -1);
        assert_true(now_s() - t0 < 2.0);
        assert_string_equal(qz_pg_sqlstate(pg), "08001");
        assert_true(qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)));
        assert_non_null(strstr(err, "could not connect"));
        assert_false(qz_pg_ready(pg));

        /* Within the backoff, calls fail at once without a network attempt. */
        t0 = now_s();
        assert_null(qz_pg_query(pg, "SELECT 1", 0, NULL, err, sizeof(err)));
        assert_non_null(strstr(err, "next attempt"));
        assert_int_equal(qz_pg_exec(pg, "SELECT 1", err, sizeof(err)), -1);
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), -1);
        assert_int_equal(qz_pg_copy_begin(pg, "COPY x FROM STDIN", err, sizeof(err)), -1);
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_true(now_s() - t0 < 0.1);
        /* After the backoff it really tries again (and fails again). */
        usleep(250000);
        assert_int_equal(qz_pg_connect(pg, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "could not connect"));
        qz_pg_free(pg);

        /* A malformed DSN is a configuration error. */
        assert_null(
            qz_pg_new(&(struct qz_pg_opts){.dsn = "host=localhost port"}, err, sizeof(err)));
        assert_non_null(strstr(err, "bad DSN"));
}

static size_t count_sql_files(const char *root)
{
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/sql", root);
        DIR *d = opendir(dir);
        assert_non_null(d);
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
                size_t len = strlen(de->d_name);
                if (len > 4 && strcmp(de->d_name + len - 4, ".sql") == 0)
                        n++;
        }
        closedir(d);
        return n;
}

/* Starts qoqnuzctl migrate against dsn with stdout to a pipe; returns the pid. */
static pid_t start_migrate(const struct env *env, const char *dsn, int *out_fd)
{
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char exe[1024], sqldir[1024];
                snprintf(exe, sizeof(exe), "%s/qoqnuzctl", env->bin);
                snprintf(sqldir, sizeof(sqldir), "%s/sql", env->root);
                setenv("QOQNUZ_PG_DSN", dsn, 1);
                setenv("QOQNUZ_SQL_DIR", sqldir, 1);
                dup2(p[1], 1);
                close(p[0]);
                close(p[1]);
                execl(exe, "qoqnuzctl", "migrate", (char *)NULL);
                _exit(127);
        }
        close(p[1]);
        *out_fd = p[0];
        return pid;
}

/* Waits for the run; returns its exit status and how many files it applied. */
static int finish_migrate(pid_t pid, int fd, int *applied)
{
        char buf[8192];
        size_t len = 0;
        ssize_t n;
        while (len + 1 < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
                len += (size_t)n;
        buf[len] = '\0';
        close(fd);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        *applied = 0;
        for (const char *p = buf; (p = strstr(p, "applied ")) != NULL; p++)
                if (p == buf || p[-1] == '\n')
                        (*applied)++;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The test DSN with another database name. */
static void dsn_with_db(const char *dsn, const char *db, char *out, size_t out_size)
{
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(dsn, &err);
        assert_non_null(opts);
        size_t len = 0;
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                const char *val = strcmp(o->keyword, "dbname") == 0 ? db : o->val;
                if (!val || !*val)
                        continue;
                len += (size_t)snprintf(out + len, out_size - len, "%s='%s' ", o->keyword, val);
                assert_true(len < out_size);
        }
        PQconninfoFree(opts);
}

static void test_migrate_runner(void **state)
{
        struct env *env = *state;
        size_t files = count_sql_files(env->root);
        assert_true(files >= 7);
        int fd, applied;

        /* On the migrated test database: a no-op, twice. */
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_migrate");
        long before = query_long(pg, "SELECT count(*) FROM schema_migrations", 0, NULL);
        assert_int_equal(before, (long)files);
        for (int i = 0; i < 2; i++) {
                pid_t pid = start_migrate(env, env->dsn, &fd);
                assert_int_equal(finish_migrate(pid, fd, &applied), 0);
                assert_int_equal(applied, 0);
        }
        assert_int_equal(query_long(pg, "SELECT count(*) FROM schema_migrations", 0, NULL), before);

        /* On a fresh database: two runs at once both succeed, each file applied once. */
        char db[64], sql[160], dsn[1024];
        snprintf(db, sizeof(db), "it_pg_migrate_%d", (int)getpid());
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", db);
        exec_ok(pg, sql);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        exec_ok(pg, sql);
        dsn_with_db(env->dsn, db, dsn, sizeof(dsn));

        int fd2, applied2;
        pid_t a = start_migrate(env, dsn, &fd);
        pid_t b = start_migrate(env, dsn, &fd2);
        assert_int_equal(finish_migrate(a, fd, &applied), 0);
        assert_int_equal(finish_migrate(b, fd2, &applied2), 0);
        assert_int_equal(applied + applied2, (int)files);
        assert_true(applied == 0 || applied2 == 0);

        struct qz_pg *fresh = open_pg(dsn, "it_pg_migrate_fresh");
        assert_int_equal(query_long(fresh, "SELECT count(*) FROM schema_migrations", 0, NULL),
                         (long)files);
        assert_int_equal(query_long(fresh,
                                    "SELECT count(*) FROM schema_migrations "
                                    "WHERE checksum ~ '^[0-9a-f]{32}$'",
                                    0, NULL),
                         (long)files);
        qz_pg_free(fresh);
        pid_t c = start_migrate(env, dsn, &fd);
        assert_int_equal(finish_migrate(c, fd, &applied), 0);
        assert_int_equal(applied, 0);

        snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", db);
        exec_ok(pg, sql);
        qz_pg_free(pg);
}

static const char *const artist_sql =
    "INSERT INTO artists (name, genres) VALUES ('it_pg artist', '{rock}') RETURNING id";

static void test_track_trigger_tasks(void **state)
{
        struct env *env = *state;
        char err[512], artist[64], track[64];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_trigger");
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        query1(pg, artist_sql, 0, NULL, artist, sizeof(artist));
        const char *va[1] = {artist};
        query1(pg,
               "INSERT INTO tracks (title, artist_id, duration_ms, genres) "
               "VALUES ('it_pg track', $1, 1000, '{rock}') RETURNING id",
               1, va, track, sizeof(track));
        const char *vt[1] = {track};

        PGresult *res = qz_pg_query(pg,
                                    "SELECT task_type, priority, status, entity_type "
                                    "FROM background_tasks WHERE entity_id = $1 "
                                    "ORDER BY priority DESC",
                                    1, vt, err, sizeof(err));
        assert_non_null(res);
        assert_int_equal(PQntuples(res), 3);
        static const char *types[] = {"mood_detection", "energy_analysis", "genre_classification"};
        static const char *prios[] = {"7", "6", "5"};
        for (int i = 0; i < 3; i++) {
                assert_string_equal(PQgetvalue(res, i, 0), types[i]);
                assert_string_equal(PQgetvalue(res, i, 1), prios[i]);
                assert_string_equal(PQgetvalue(res, i, 2), "pending");
                assert_string_equal(PQgetvalue(res, i, 3), "track");
        }
        PQclear(res);

        /* A duplicate enqueue leaves one; a plain duplicate insert is a constraint error. */
        res = qz_pg_query(pg,
                          "INSERT INTO background_tasks (task_type, entity_type, entity_id, "
                          "priority) VALUES ('mood_detection', 'track', $1, 7) "
                          "ON CONFLICT (task_type, entity_type, entity_id) "
                          "WHERE status IN ('pending', 'processing') DO NOTHING",
                          1, vt, err, sizeof(err));
        assert_non_null(res);
        assert_string_equal(PQcmdTuples(res), "0");
        PQclear(res);
        exec_ok(pg, "SAVEPOINT dup");
        assert_null(qz_pg_query(pg,
                                "INSERT INTO background_tasks (task_type, entity_type, entity_id) "
                                "VALUES ('energy_analysis', 'track', $1)",
                                1, vt, err, sizeof(err)));
        assert_string_equal(qz_pg_sqlstate(pg), "23505");
        assert_false(qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)));
        exec_ok(pg, "ROLLBACK TO SAVEPOINT dup");

        /* Updating the track queues nothing more. A field tracks.v1 carries marks the row
         * for the outbox again; analysis columns and the relay's own mark do not. */
        const char *unpublished = "SELECT count(*) FROM tracks WHERE id = $1 "
                                  "AND published_at IS NULL";
        static const char *const updates[][2] = {
            {"UPDATE tracks SET published_at = now() WHERE id = $1", "0"},
            {"UPDATE tracks SET mood = 'happy', energy_level = 0.5 WHERE id = $1", "0"},
            {"UPDATE tracks SET popularity = 55 WHERE id = $1", "1"},
            {"UPDATE tracks SET published_at = now() WHERE id = $1", "0"},
            {"UPDATE tracks SET deleted_at = now() WHERE id = $1", "1"},
        };
        for (size_t i = 0; i < sizeof(updates) / sizeof(updates[0]); i++) {
                res = qz_pg_query(pg, updates[i][0], 1, vt, err, sizeof(err));
                if (!res)
                        fail_msg("%s: %s", updates[i][0], err);
                PQclear(res);
                assert_int_equal(query_long(pg, unpublished, 1, vt), atol(updates[i][1]));
        }
        assert_int_equal(
            query_long(pg, "SELECT count(*) FROM background_tasks WHERE entity_id = $1", 1, vt), 3);

        /* A bulk insert queues three per track. */
        res = qz_pg_query(pg,
                          "INSERT INTO tracks (title, artist_id) "
                          "SELECT 'bulk ' || g, $1 FROM generate_series(1, 50) g",
                          1, va, err, sizeof(err));
        assert_non_null(res);
        PQclear(res);
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM background_tasks b JOIN tracks t "
                                    "ON t.id = b.entity_id WHERE t.title LIKE 'bulk %'",
                                    0, NULL),
                         150);
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        assert_int_equal(
            query_long(pg, "SELECT count(*) FROM background_tasks WHERE entity_id = $1", 1, vt), 0);
        qz_pg_free(pg);
}

static void test_smart_playlists_partitioned(void **state)
{
        struct env *env = *state;
        char err[512], out[64];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_playlists");
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM pg_inherits "
                                    "WHERE inhparent = 'smart_playlists'::regclass",
                                    0, NULL),
                         16);
        query1(pg,
               "SELECT partstrat FROM pg_partitioned_table "
               "WHERE partrelid = 'smart_playlists'::regclass",
               0, NULL, out, sizeof(out));
        assert_string_equal(out, "h");

        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        const char *upsert = "INSERT INTO smart_playlists (user_id, playlist_type, id, track_ids, "
                             "expires_at, metadata) "
                             "VALUES ($1, 'daily_mix', gen_random_uuid(), $2::uuid[], "
                             "now() + interval '24 hours', '{}') "
                             "ON CONFLICT (user_id, playlist_type) DO UPDATE SET "
                             "id = excluded.id, track_ids = excluded.track_ids, "
                             "generated_at = excluded.generated_at, "
                             "expires_at = excluded.expires_at, metadata = excluded.metadata";
        const char *user = "2b1d6a4e-8f1e-4c33-9a51-6f2f5b8a7c01";
        const char *v1[2] = {user, "{11111111-1111-1111-1111-111111111111}"};
        const char *v2[2] = {user, "{22222222-2222-2222-2222-222222222222,"
                                   "33333333-3333-3333-3333-333333333333}"};
        PGresult *res = qz_pg_query(pg, upsert, 2, v1, err, sizeof(err));
        if (!res)
                fail_msg("upsert: %s", err);
        PQclear(res);
        res = qz_pg_query(pg, upsert, 2, v2, err, sizeof(err));
        assert_non_null(res);
        PQclear(res);
        const char *vu[1] = {user};
        assert_int_equal(
            query_long(pg, "SELECT count(*) FROM smart_playlists WHERE user_id = $1", 1, vu), 1);
        assert_int_equal(query_long(pg,
                                    "SELECT cardinality(track_ids) FROM smart_playlists "
                                    "WHERE user_id = $1 AND playlist_type = 'daily_mix'",
                                    1, vu),
                         2);
        /* The guide's coverage query, as written. */
        res = qz_pg_query(pg,
                          "SELECT playlist_type, COUNT(DISTINCT user_id) as user_count\n"
                          "FROM smart_playlists\n"
                          "GROUP BY playlist_type;",
                          0, NULL, err, sizeof(err));
        assert_non_null(res);
        int found = 0;
        for (int i = 0; i < PQntuples(res); i++)
                if (strcmp(PQgetvalue(res, i, 0), "daily_mix") == 0 &&
                    atol(PQgetvalue(res, i, 1)) >= 1)
                        found = 1;
        assert_true(found);
        PQclear(res);
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        qz_pg_free(pg);
}

static void test_guide_monitoring_queries(void **state)
{
        struct env *env = *state;
        char err[512];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_guide");

        PGresult *res =
            qz_pg_query(pg, "SELECT * FROM cron.job ORDER BY jobid;", 0, NULL, err, sizeof(err));
        if (!res)
                fail_msg("cron.job: %s", err);
        static const char *cols[] = {"jobid",    "schedule", "command", "nodename", "nodeport",
                                     "database", "username", "active",  "jobname"};
        assert_int_equal(PQnfields(res), 9);
        for (int i = 0; i < 9; i++)
                assert_string_equal(PQfname(res, i), cols[i]);
        static const char *jobs[][2] = {
            {"aggregate-listening-history", "0 2 * * *"},
            {"generate-smart-playlists", "0 3 * * *"},
            {"calculate-trending", "0 */6 * * *"},
            {"cleanup-background-tasks", "0 4 * * 0"},
            {"cleanup-expired-playlists", "0 5 * * *"},
            {"compute-track-similarities", "30 1 * * *"},
            {"reset-stuck-tasks", "*/5 * * * *"},
        };
        assert_int_equal(PQntuples(res), 7);
        for (int i = 0; i < 7; i++) {
                assert_string_equal(PQgetvalue(res, i, 8), jobs[i][0]);
                assert_string_equal(PQgetvalue(res, i, 1), jobs[i][1]);
        }
        assert_string_equal(PQgetvalue(res, 2, 2), "SELECT calculate_trending_tracks();");
        PQclear(res);

        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        /* A stuck task and a fresh one, then the guide's reset as written. */
        res = qz_pg_query(pg,
                          "INSERT INTO background_tasks (task_type, entity_type, entity_id, "
                          "status, started_at) VALUES "
                          "('it_pg_stuck', 'track', gen_random_uuid(), 'processing', "
                          " now() - interval '1 hour'), "
                          "('it_pg_busy', 'track', gen_random_uuid(), 'processing', now())",
                          0, NULL, err, sizeof(err));
        assert_non_null(res);
        PQclear(res);
        exec_ok(pg, "UPDATE background_tasks\n"
                    "SET status = 'pending', started_at = NULL\n"
                    "WHERE status = 'processing'\n"
                    "AND started_at < NOW() - INTERVAL '30 minutes';");
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM background_tasks WHERE task_type = "
                                    "'it_pg_stuck' AND status = 'pending' AND started_at IS NULL",
                                    0, NULL),
                         1);
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM background_tasks WHERE task_type = "
                                    "'it_pg_busy' AND status = 'processing'",
                                    0, NULL),
                         1);

        /* A finished run, so job_run_details has pg_cron's columns with values. */
        exec_ok(pg, "INSERT INTO automation_job_runs (job, status, started_at, finished_at, "
                    "message) VALUES ('calculate-trending', 'failed', now(), now(), 'boom')");
        static const char *guide[] = {
            "SELECT * FROM cron.job_run_details\nORDER BY start_time DESC\nLIMIT 10;",
            "SELECT * FROM cron.job_run_details\nWHERE status = 'failed'\n"
            "ORDER BY start_time DESC;",
            "SELECT status, COUNT(*)\nFROM background_tasks\nGROUP BY status;",
            "SELECT calculated_at\nFROM trending_tracks\nLIMIT 1;",
            "SELECT * FROM pg_extension WHERE extname = 'pg_cron';",
            "SELECT * FROM cron.job;",
            "SELECT user_id, COUNT(*)\nFROM play_history\n"
            "WHERE played_at > NOW() - INTERVAL '30 days'\nGROUP BY user_id;",
            "SELECT * FROM background_tasks\nORDER BY created_at DESC\nLIMIT 10;",
        };
        for (size_t i = 0; i < sizeof(guide) / sizeof(guide[0]); i++) {
                res = qz_pg_query(pg, guide[i], 0, NULL, err, sizeof(err));
                if (!res)
                        fail_msg("guide query %zu: %s", i, err);
                if (i == 1) {
                        static const char *rcols[] = {
                            "jobid",   "runid",  "job_pid",        "database",   "username",
                            "command", "status", "return_message", "start_time", "end_time"};
                        assert_int_equal(PQnfields(res), 10);
                        for (int c = 0; c < 10; c++)
                                assert_string_equal(PQfname(res, c), rcols[c]);
                        assert_true(PQntuples(res) >= 1);
                        assert_string_equal(PQgetvalue(res, 0, 0), "3");
                        assert_string_equal(PQgetvalue(res, 0, 6), "failed");
                        assert_string_equal(PQgetvalue(res, 0, 7), "boom");
                }
                PQclear(res);
        }

        /* The guide's schedule change works on our jobs; an unknown job is refused. */
        exec_ok(pg, "SELECT cron.unschedule('calculate-trending');");
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM cron.job WHERE jobname = "
                                    "'calculate-trending' AND NOT active",
                                    0, NULL),
                         1);
        assert_int_equal(query_long(pg,
                                    "SELECT cron.schedule(\n    'calculate-trending',\n"
                                    "    '0 */3 * * *',\n"
                                    "    $$SELECT calculate_trending_tracks();$$\n);",
                                    0, NULL),
                         3);
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM cron.job WHERE jobname = "
                                    "'calculate-trending' AND active AND schedule = '0 */3 * * *'",
                                    0, NULL),
                         1);
        exec_ok(pg, "SAVEPOINT s");
        assert_null(qz_pg_query(pg, "SELECT cron.schedule('nope', '* * * * *', 'x')", 0, NULL, err,
                                sizeof(err)));
        exec_ok(pg, "ROLLBACK TO SAVEPOINT s");
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);
        qz_pg_free(pg);
}

static void test_sql_functions_queue_runs(void **state)
{
        struct env *env = *state;
        char err[512], out[256];
        struct qz_pg *pg = open_pg(env->dsn, "it_pg_functions");

        static const char *fn[][2] = {
            {"SELECT aggregate_all_user_listening_history()", "aggregate-listening-history"},
            {"SELECT generate_all_smart_playlists()", "generate-smart-playlists"},
            {"SELECT calculate_trending_tracks()", "calculate-trending"},
        };
        assert_int_equal(qz_pg_begin(pg, err, sizeof(err)), 0);
        for (size_t i = 0; i < 3; i++) {
                char run[64];
                query1(pg, fn[i][0], 0, NULL, run, sizeof(run));
                const char *v[1] = {run};
                query1(pg, "SELECT job || ' ' || status FROM automation_job_runs WHERE run_id = $1",
                       1, v, out, sizeof(out));
                char want[128];
                snprintf(want, sizeof(want), "%s queued", fn[i][1]);
                assert_string_equal(out, want);
        }
        char run[64];
        const char *user = "2b1d6a4e-8f1e-4c33-9a51-6f2f5b8a7c02";
        const char *vu[1] = {user};
        query1(pg, "SELECT generate_daily_mix($1)", 1, vu, run, sizeof(run));
        const char *vr[1] = {run};
        query1(pg,
               "SELECT job || ' ' || (params->>'user_id') || ' ' || (params->>'playlist_type') "
               "FROM automation_job_runs WHERE run_id = $1 AND status = 'queued'",
               1, vr, out, sizeof(out));
        assert_string_equal(out, "generate-smart-playlists 2b1d6a4e-8f1e-4c33-9a51-6f2f5b8a7c02 "
                                 "daily_mix");
        /* As the guide writes it, with a literal. */
        exec_ok(pg, "SELECT generate_daily_mix('2b1d6a4e-8f1e-4c33-9a51-6f2f5b8a7c03');");

        query1(pg, "SELECT trigger_all_automations()::text", 0, NULL, out, sizeof(out));
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM jsonb_each_text($1::jsonb) e "
                                    "JOIN automation_job_runs r ON r.run_id = e.value::uuid "
                                    "AND r.job = e.key AND r.status = 'queued'",
                                    1, (const char *const[]){out}),
                         3);
        assert_int_equal(query_long(pg,
                                    "SELECT count(*) FROM cron.job_run_details "
                                    "WHERE status = 'starting' AND end_time IS NULL",
                                    0, NULL),
                         query_long(pg,
                                    "SELECT count(*) FROM automation_job_runs "
                                    "WHERE status = 'queued'",
                                    0, NULL));
        assert_int_equal(qz_pg_rollback(pg, err, sizeof(err)), 0);

        /* A committed queued run wakes a listener on automation_run_queued. */
        struct qz_pg *listener = open_pg(env->dsn, "it_pg_listener");
        assert_int_equal(qz_pg_listen(listener, "automation_run_queued", err, sizeof(err)), 0);
        PGnotify *note = NULL;
        assert_int_equal(qz_pg_notify_wait(listener, 50, &note, err, sizeof(err)), 0);
        query1(pg, "SELECT calculate_trending_tracks()", 0, NULL, run, sizeof(run));
        int rc = qz_pg_notify_wait(listener, 5000, &note, err, sizeof(err));
        assert_int_equal(rc, 1);
        assert_string_equal(note->relname, "automation_run_queued");
        assert_non_null(strstr(note->extra, run));
        assert_non_null(strstr(note->extra, "calculate-trending"));
        PQfreemem(note);

        /* LISTEN survives a reconnect. */
        kill_backend(env->dsn, listener);
        assert_int_equal(qz_pg_notify_wait(listener, 50, &note, err, sizeof(err)), -1);
        assert_int_equal(qz_pg_notify_wait(listener, 50, &note, err, sizeof(err)), 0);
        char run2[64];
        query1(pg, "SELECT aggregate_all_user_listening_history()", 0, NULL, run2, sizeof(run2));
        assert_int_equal(qz_pg_notify_wait(listener, 5000, &note, err, sizeof(err)), 1);
        assert_non_null(strstr(note->extra, run2));
        PQfreemem(note);

        const char *del[2] = {run, run2};
        PGresult *res = qz_pg_query(pg, "DELETE FROM automation_job_runs WHERE run_id IN ($1, $2)",
                                    2, del, err, sizeof(err));
        assert_non_null(res);
        assert_string_equal(PQcmdTuples(res), "2");
        PQclear(res);
        qz_pg_free(listener);
        qz_pg_free(pg);
}

int main(void)
{
        qz_log_init("it_pg", QZ_LOG_WARN);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_connect_prepare_options),
            cmocka_unit_test(test_reprepare_after_kill),
            cmocka_unit_test(test_copy_escape_table),
            cmocka_unit_test(test_copy_roundtrip),
            cmocka_unit_test(test_transactions),
            cmocka_unit_test(test_unreachable),
            cmocka_unit_test(test_migrate_runner),
            cmocka_unit_test(test_track_trigger_tasks),
            cmocka_unit_test(test_smart_playlists_partitioned),
            cmocka_unit_test(test_guide_monitoring_queries),
            cmocka_unit_test(test_sql_functions_queue_runs),
        };
        return cmocka_run_group_tests(tests, setup_env, teardown_env);
}
