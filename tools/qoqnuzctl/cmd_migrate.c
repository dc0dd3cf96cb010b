/* cmd_migrate.c - qoqnuzctl migrate: applies sql/NNN_name.sql in order, recorded in
 * schema_migrations.
 *
 * Each file runs in one transaction together with its schema_migrations row, so a file is
 * either wholly applied and recorded or not at all. A session advisory lock serialises
 * concurrent runs: the second waits, then finds nothing left to do. A file changed after it was
 * applied is an error (its checksum, md5 of the text, no longer matches): schema changes go
 * into a new file. */
#include "cfg.h"
#include "ctl.h"
#include "pg.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DSN "postgresql://qoqnuz:qoqnuz@127.0.0.1:55432/qoqnuz"
/* Any fixed number, the same in every qoqnuzctl: "qoqnuzmg" as bytes. */
#define MIGRATE_LOCK_KEY "8173024395745669479"

struct migration {
        char *file;    /* "003_playlists.sql" */
        char *version; /* "003" */
        char *name;    /* "playlists" */
        char *sql;
        char checksum[33];
        char applied_checksum[33];
        char applied_at[40];
        int applied;
};

struct migrations {
        struct migration *v;
        size_t n;
};

static void migrations_free(struct migrations *m)
{
        for (size_t i = 0; i < m->n; i++) {
                free(m->v[i].file);
                free(m->v[i].version);
                free(m->v[i].name);
                free(m->v[i].sql);
        }
        free(m->v);
        m->v = NULL;
        m->n = 0;
}

/* "NNN_name.sql": digits, '_', then [A-Za-z0-9_-]+, then ".sql". */
static int parse_file_name(const char *file, char **version, char **name)
{
        size_t digits = strspn(file, "0123456789");
        size_t len = strlen(file);
        if (digits == 0 || file[digits] != '_' || len < digits + 6 ||
            strcmp(file + len - 4, ".sql") != 0)
                return -1;
        const char *nm = file + digits + 1;
        size_t nmlen = len - digits - 1 - 4;
        if (nmlen == 0 || strspn(nm, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-") < nmlen)
                return -1;
        *version = strndup(file, digits);
        *name = strndup(nm, nmlen);
        if (!*version || !*name) {
                free(*version);
                free(*name);
                *version = *name = NULL;
                return -1;
        }
        return 0;
}

static char *read_file(const char *path, char *errstr, size_t errstr_size)
{
        FILE *f = fopen(path, "rb");
        char *buf = NULL;
        size_t len = 0, cap = 0;
        if (!f) {
                snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
                return NULL;
        }
        for (;;) {
                if (len + 4096 + 1 > cap) {
                        cap = cap ? cap * 2 : 16384;
                        char *p = realloc(buf, cap);
                        if (!p) {
                                snprintf(errstr, errstr_size, "%s: out of memory", path);
                                goto fail;
                        }
                        buf = p;
                }
                size_t n = fread(buf + len, 1, cap - len - 1, f);
                len += n;
                if (n == 0)
                        break;
        }
        if (ferror(f)) {
                snprintf(errstr, errstr_size, "%s: read error", path);
                goto fail;
        }
        if (memchr(buf, '\0', len)) {
                snprintf(errstr, errstr_size, "%s: contains a NUL byte", path);
                goto fail;
        }
        buf[len] = '\0';
        fclose(f);
        return buf;
fail:
        free(buf);
        fclose(f);
        return NULL;
}

/* Numeric order of digit strings whatever the zero padding. */
static int version_cmp(const char *x, const char *y)
{
        x += strspn(x, "0");
        y += strspn(y, "0");
        size_t nx = strlen(x), ny = strlen(y);
        if (nx != ny)
                return nx < ny ? -1 : 1;
        return strcmp(x, y);
}

static int by_version(const void *a, const void *b)
{
        const struct migration *x = a, *y = b;
        int c = version_cmp(x->version, y->version);
        return c ? c : strcmp(x->file, y->file);
}

static int load_dir(const char *dir, struct migrations *out, char *errstr, size_t errstr_size)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        struct migration m;
        char path[1024];
        if (!d) {
                snprintf(errstr, errstr_size, "QOQNUZ_SQL_DIR %s: %s", dir, strerror(errno));
                return -1;
        }
        while ((de = readdir(d)) != NULL) {
                size_t len = strlen(de->d_name);
                if (len < 4 || strcmp(de->d_name + len - 4, ".sql") != 0)
                        continue;
                m = (struct migration){0};
                if (parse_file_name(de->d_name, &m.version, &m.name) != 0) {
                        snprintf(errstr, errstr_size,
                                 "%s/%s: name is not NNN_name.sql (digits, '_', letters, digits, "
                                 "'_' or '-')",
                                 dir, de->d_name);
                        goto fail;
                }
                if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
                    sizeof(path)) {
                        snprintf(errstr, errstr_size, "%s/%s: path too long", dir, de->d_name);
                        goto fail;
                }
                m.file = strdup(de->d_name);
                if (!m.file) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto fail_one;
                }
                m.sql = read_file(path, errstr, errstr_size);
                if (!m.sql)
                        goto fail_one;
                struct migration *grown = realloc(out->v, (out->n + 1) * sizeof(*grown));
                if (!grown) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto fail_one;
                }
                out->v = grown;
                out->v[out->n++] = m;
        }
        closedir(d);
        d = NULL;
        qsort(out->v, out->n, sizeof(*out->v), by_version);
        for (size_t i = 1; i < out->n; i++) {
                if (version_cmp(out->v[i - 1].version, out->v[i].version) == 0) {
                        snprintf(errstr, errstr_size, "%s/%s and %s/%s have the same version", dir,
                                 out->v[i - 1].file, dir, out->v[i].file);
                        return -1;
                }
        }
        return 0;
fail_one:
        free(m.file);
        free(m.version);
        free(m.name);
        free(m.sql);
fail:
        if (d)
                closedir(d);
        return -1;
}

/* 1-based character position in sql -> 1-based line number. */
static int line_of(const char *sql, int pos)
{
        int line = 1, chars = 0;
        for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
                if ((*p & 0xC0) != 0x80 && ++chars >= pos)
                        break;
                if (*p == '\n')
                        line++;
        }
        return line;
}

static int checksum_all(struct qz_pg *pg, struct migrations *ms, char *errstr, size_t errstr_size)
{
        for (size_t i = 0; i < ms->n; i++) {
                const char *vals[1] = {ms->v[i].sql};
                PGresult *res =
                    qz_pg_query(pg, "SELECT md5($1::text)", 1, vals, errstr, errstr_size);
                if (!res)
                        return -1;
                snprintf(ms->v[i].checksum, sizeof(ms->v[i].checksum), "%s", PQgetvalue(res, 0, 0));
                PQclear(res);
        }
        return 0;
}

static int load_applied(struct qz_pg *pg, struct migrations *ms, char *errstr, size_t errstr_size)
{
        PGresult *res =
            qz_pg_query(pg,
                        "SELECT version, checksum, "
                        "to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                        "FROM schema_migrations ORDER BY version",
                        0, NULL, errstr, errstr_size);
        if (!res)
                return -1;
        for (int r = 0; r < PQntuples(res); r++) {
                const char *version = PQgetvalue(res, r, 0);
                size_t i;
                for (i = 0; i < ms->n; i++)
                        if (strcmp(ms->v[i].version, version) == 0)
                                break;
                if (i == ms->n) {
                        fprintf(stderr, "migrate: warning: version %s is applied but has no file\n",
                                version);
                        continue;
                }
                ms->v[i].applied = 1;
                snprintf(ms->v[i].applied_checksum, sizeof(ms->v[i].applied_checksum), "%s",
                         PQgetvalue(res, r, 1));
                snprintf(ms->v[i].applied_at, sizeof(ms->v[i].applied_at), "%s",
                         PQgetvalue(res, r, 2));
        }
        PQclear(res);
        return 0;
}

static int apply_one(struct qz_pg *pg, const char *dir, const struct migration *m, char *errstr,
                     size_t errstr_size)
{
        char err[1024];
        char where[32] = "";
        if (qz_pg_begin(pg, err, sizeof(err)) != 0)
                goto fail;
        if (qz_pg_exec(pg, m->sql, err, sizeof(err)) != 0) {
                int pos = qz_pg_error_position(pg);
                if (pos > 0)
                        snprintf(where, sizeof(where), "line %d: ", line_of(m->sql, pos));
                goto fail;
        }
        /* A COMMIT inside the file would leave the rest, and our record, outside the
         * transaction. */
        if (PQtransactionStatus(qz_pg_conn(pg)) != PQTRANS_INTRANS) {
                snprintf(err, sizeof(err),
                         "the file ended the runner's transaction (a COMMIT or ROLLBACK in it; "
                         "statements before that may be committed): remove it, the runner wraps "
                         "each file in one transaction");
                goto fail;
        }
        const char *vals[3] = {m->version, m->name, m->checksum};
        PGresult *res = qz_pg_query(
            pg, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", 3,
            vals, err, sizeof(err));
        if (!res)
                goto fail;
        PQclear(res);
        if (qz_pg_commit(pg, err, sizeof(err)) != 0)
                goto fail;
        return 0;
fail:
        snprintf(errstr, errstr_size, "%s/%s: %s%s", dir, m->file, where, err);
        char ignore[256];
        qz_pg_rollback(pg, ignore, sizeof(ignore));
        return -1;
}

static long elapsed_ms(const struct timespec *t0)
{
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static int connect_waiting(struct qz_pg *pg, long wait_s, char *errstr, size_t errstr_size)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (qz_pg_connect(pg, errstr, errstr_size) == 0)
                        return 0;
                if (elapsed_ms(&t0) >= wait_s * 1000)
                        return -1;
                struct timespec nap = {0, 200 * 1000000L};
                nanosleep(&nap, NULL);
        }
}

static void usage(void)
{
        fprintf(stderr, "usage: qoqnuzctl migrate [--status] [--wait SECONDS]\n"
                        "  applies $QOQNUZ_SQL_DIR/NNN_name.sql (default sql) to $QOQNUZ_PG_DSN\n"
                        "  (default " DEFAULT_DSN ")\n"
                        "  --status        list applied and pending migrations, change nothing\n"
                        "  --wait SECONDS  keep trying to connect that long (default 0)\n");
}

int ctl_migrate(int argc, char **argv)
{
        int status_only = 0;
        long wait_s = 0;
        char errstr[8192];
        struct migrations ms = {0};
        struct qz_pg *pg = NULL;
        int rc = 1;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--status") == 0) {
                        status_only = 1;
                } else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
                        char *end = NULL;
                        wait_s = strtol(argv[++i], &end, 10);
                        if (!*argv[i] || *end || wait_s < 0 || wait_s > 3600) {
                                fprintf(stderr, "migrate: --wait: bad value '%s'\n", argv[i]);
                                return 2;
                        }
                } else {
                        usage();
                        return strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ? 0 : 2;
                }
        }
        const char *dsn = getenv("QOQNUZ_PG_DSN");
        if (!dsn || !*dsn)
                dsn = DEFAULT_DSN;
        const char *dir = getenv("QOQNUZ_SQL_DIR");
        if (!dir || !*dir)
                dir = "sql";
        if (qz_pg_dsn_check(dsn, errstr, sizeof(errstr)) != 0) {
                fprintf(stderr, "QOQNUZ_PG_DSN: bad value: %s\n", errstr);
                return 2;
        }

        if (load_dir(dir, &ms, errstr, sizeof(errstr)) != 0)
                goto fail;
        pg = qz_pg_new(&(struct qz_pg_opts){.dsn = dsn,
                                            .application_name = "qoqnuzctl-migrate",
                                            .backoff_min_ms = 100,
                                            .backoff_max_ms = 100},
                       errstr, sizeof(errstr));
        if (!pg)
                goto fail;
        if (connect_waiting(pg, wait_s, errstr, sizeof(errstr)) != 0)
                goto fail;
        if (qz_pg_exec(pg, "SET client_min_messages = warning", errstr, sizeof(errstr)) != 0)
                goto fail;
        /* Held until we disconnect: a concurrent run waits here, then sees our rows. */
        if (qz_pg_exec(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", errstr,
                       sizeof(errstr)) != 0)
                goto fail;
        if (qz_pg_exec(pg,
                       "CREATE TABLE IF NOT EXISTS schema_migrations ("
                       " version text PRIMARY KEY,"
                       " name text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now(),"
                       " checksum text NOT NULL)",
                       errstr, sizeof(errstr)) != 0)
                goto fail;
        if (checksum_all(pg, &ms, errstr, sizeof(errstr)) != 0 ||
            load_applied(pg, &ms, errstr, sizeof(errstr)) != 0)
                goto fail;

        int changed = 0;
        for (size_t i = 0; i < ms.n; i++) {
                const struct migration *m = &ms.v[i];
                if (m->applied && strcmp(m->checksum, m->applied_checksum) != 0) {
                        fprintf(stderr,
                                "migrate: %s/%s: changed after it was applied at %s (checksum "
                                "%s, now %s); put schema changes in a new file\n",
                                dir, m->file, m->applied_at, m->applied_checksum, m->checksum);
                        changed++;
                }
        }

        if (status_only) {
                size_t pending = 0;
                for (size_t i = 0; i < ms.n; i++) {
                        const struct migration *m = &ms.v[i];
                        const char *what = !m->applied ? "pending"
                                           : strcmp(m->checksum, m->applied_checksum) != 0
                                               ? "CHANGED"
                                               : "applied";
                        pending += !m->applied;
                        printf("%-8s %s%s%s\n", what, m->file, m->applied ? "  " : "",
                               m->applied_at);
                }
                printf("migrate: %zu applied, %zu pending%s\n", ms.n - pending, pending,
                       changed ? ", some applied files changed" : "");
                rc = changed ? 1 : 0;
                goto out;
        }
        if (changed) {
                snprintf(errstr, sizeof(errstr), "%d applied file(s) changed; nothing applied",
                         changed);
                goto fail;
        }

        size_t applied_now = 0, up_to_date = 0;
        for (size_t i = 0; i < ms.n; i++) {
                const struct migration *m = &ms.v[i];
                if (m->applied) {
                        up_to_date++;
                        continue;
                }
                struct timespec t0;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                if (apply_one(pg, dir, m, errstr, sizeof(errstr)) != 0)
                        goto fail;
                printf("applied %s (%ld ms)\n", m->file, elapsed_ms(&t0));
                fflush(stdout);
                applied_now++;
        }
        printf("migrate: %zu applied now, %zu already applied, schema at version %s\n", applied_now,
               up_to_date, ms.n ? ms.v[ms.n - 1].version : "(none)");
        rc = 0;
        goto out;
fail:
        fprintf(stderr, "migrate: %s\n", errstr);
        rc = 1;
out:
        qz_pg_free(pg); /* closing the session releases the advisory lock */
        migrations_free(&ms);
        return rc;
}
