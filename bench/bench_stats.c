/* bench_stats.c - the stats-aggregator's store path against its baselines, on one Postgres.
 *
 * Driven by bench/stats.sh (which starts the servers and states the Postgres settings);
 * without QZ_TEST_PG_DSN it says so and exits 0 (make bench runs every bench_* binary).
 *
 * Measures, on the same generated plays (QZ_BENCH_PLAYS, default 1M; QZ_BENCH_USERS 100k;
 * 20k tracks by 2k artists, 5% of plays on tracks not in the catalog; batches of
 * QZ_BENCH_BATCH = 10000, the service's default):
 *   - bare COPY of the rows, batch by batch, into a table with play_history's columns and
 *     indexes (the machine's limit);
 *   - the floor of any design that keeps per-user stats in the ingest transaction, as the
 *     issue asks: the same COPY plus, in the same transaction, one upsert of a single bigint
 *     counter per distinct user of the batch (counted in C; one statement per batch), nothing
 *     else: no per-track counters, no JSON, no dedup (QZ_BENCH_FLOOR=0 skips it;
 *     QZ_BENCH_SYSTEM=0 stops after it);
 *   - the system: history_store(), the aggregator's store path, exactly what one consumed
 *     batch does (COPY to staging, insert with dedup, counters and dirty marks in the same
 *     transaction), batch by batch, while the service's renderer (render.h, own thread and
 *     connection, every QZ_BENCH_RENDER_MS = 1000 ms; 0 = only once at the end) rewrites the
 *     dirty users' stats; the clock stops when the last play is in user_listening_stats (a
 *     final render pass);
 *     first and last tenth of the ingest reported separately to show the per-play cost
 *     against the history size;
 *   - row-by-row INSERT of plays, one transaction each (the old system's ingest), on the
 *     first QZ_BENCH_ROW_PLAYS (default 20k; 0 = skip) rows;
 *   - the old system's nightly approach: a full recompute of every user's stats in SQL
 *     (listening_stats_oracle into a table) after the load, and our reconcile job
 *     (QZ_BENCH_NIGHTLY=0 skips both). */
#include "clock.h"
#include "../services/stats-aggregator/history.h"
#include "../services/stats-aggregator/render.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static uint64_t rnd(void)
{
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

static long env_long(const char *name, long def)
{
        const char *v = getenv(name);
        return v && *v ? atol(v) : def;
}

static void die(const char *what, const char *err)
{
        fprintf(stderr, "bench_stats: %s: %s\n", what, err);
        exit(1);
}

static void exec_or_die(struct qz_pg *pg, const char *q)
{
        char err[512];
        if (qz_pg_exec(pg, q, err, sizeof(err)) != 0)
                die(q, err);
}

/* "pppppppp-0000-4000-8000-nnnnnnnnnnnn": the catalog SQL below builds the same ids. */
static void fake_uuid(char *out, uint32_t prefix, uint64_t n)
{
        snprintf(out, 37, "%08x-0000-4000-8000-%012llx", prefix,
                 (unsigned long long)(n & 0xffffffffffffULL));
}

#define NTRACKS  20000
#define NARTISTS 2000

static void make_row(struct history_row *r, long i, long nusers)
{
        static const char *devices[] = {"mobile", "web", "desktop"};
        memset(r, 0, sizeof(*r));
        fake_uuid(r->event_id, 0xe0000000u, (uint64_t)i);
        fake_uuid(r->user_id, 0xa0000000u, rnd() % (uint64_t)nusers);
        uint64_t t = (rnd() % NTRACKS) * (rnd() % NTRACKS) / NTRACKS; /* skewed */
        if (rnd() % 20 == 0)
                fake_uuid(r->track_id, 0xdead0000u, rnd() % 1000); /* not in the catalog */
        else
                fake_uuid(r->track_id, 0xb0000000u, t);
        int64_t played = 1767225600000LL + (int64_t)(rnd() % (90LL * 86400 * 1000));
        qz_time_format(played, r->played_at, sizeof(r->played_at));
        r->played_ms = played;
        r->duration_ms = (int64_t)(rnd() % 400000);
        snprintf(r->duration, sizeof(r->duration), "%lld", (long long)r->duration_ms);
        r->completed = rnd() % 2 ? "t" : "f";
        r->source = "album";
        r->device_type = devices[rnd() % 3];
        const char *v[9] = {r->event_id,  r->user_id, r->track_id,    r->played_at, r->duration,
                            r->completed, r->source,  r->device_type, NULL};
        memcpy(r->values, v, sizeof(v));
}

static void catalog(struct qz_pg *pg)
{
        char q[1024];
        snprintf(q, sizeof(q),
                 "INSERT INTO artists (id, name) SELECT "
                 "('c0000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'artist ' || i "
                 "FROM generate_series(0, %d) i",
                 NARTISTS - 1);
        exec_or_die(pg, q);
        /* the generator's track ids: fake_uuid(0xb0000000, t) */
        snprintf(q, sizeof(q),
                 "INSERT INTO tracks (id, title, artist_id, genres) SELECT "
                 "('b0000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'track ' || i, "
                 "('c0000000-0000-4000-8000-' || lpad(to_hex(i %% %d), 12, '0'))::uuid, "
                 "ARRAY[(ARRAY['rock','pop','jazz','hip hop','folk','electronic','classical',"
                 "'metal','soul','ambient'])[i %% 10 + 1]] "
                 "FROM generate_series(0, %d) i",
                 NARTISTS, NTRACKS - 1);
        exec_or_die(pg, q);
}

static double now_s(void)
{
        return (double)qz_clock_mono_ns() / 1e9;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* COPY of rows[0..n) into `table`, and when users is non-NULL, in the same transaction, one
 * upsert adding each distinct user's play count to bench_floor_users. Scratch from the caller:
 * users n entries, ua n * 37 + 3 bytes, ca n * 21 + 3 bytes. */
static void copy_batch(struct qz_pg *pg, const char *table, const struct history_row *rows, long n,
                       const char **users, char *ua, char *ca)
{
        char err[512], q[256];
        snprintf(q, sizeof(q),
                 "COPY %s (event_id, user_id, track_id, played_at, duration_played_ms, "
                 "completed, source, device_type, source_playlist_id) FROM STDIN",
                 table);
        if (qz_pg_begin(pg, err, sizeof(err)) != 0 ||
            qz_pg_copy_begin(pg, q, err, sizeof(err)) != 0)
                die("copy", err);
        for (long j = 0; j < n; j++)
                if (qz_pg_copy_row(pg, 9, rows[j].values, err, sizeof(err)) != 0)
                        die("copy row", err);
        if (qz_pg_copy_end(pg, NULL, err, sizeof(err)) != 0)
                die("copy end", err);
        if (users) {
                for (long j = 0; j < n; j++)
                        users[j] = rows[j].user_id;
                qsort(users, (size_t)n, sizeof(*users), cmp_str);
                char *u = ua, *c = ca;
                *u++ = '{';
                *c++ = '{';
                for (long j = 0; j < n;) {
                        long k = j;
                        while (k < n && strcmp(users[k], users[j]) == 0)
                                k++;
                        u += sprintf(u, "%s%s", j ? "," : "", users[j]);
                        c += sprintf(c, "%s%ld", j ? "," : "", k - j);
                        j = k;
                }
                strcpy(u, "}");
                strcpy(c, "}");
                const char *v[2] = {ua, ca};
                PGresult *r = qz_pg_query(pg,
                                          "INSERT INTO bench_floor_users AS f SELECT * FROM "
                                          "unnest($1::uuid[], $2::bigint[]) ON CONFLICT (user_id) "
                                          "DO UPDATE SET plays = f.plays + EXCLUDED.plays",
                                          2, v, err, sizeof(err));
                if (!r)
                        die("floor upsert", err);
                PQclear(r);
        }
        if (qz_pg_commit(pg, err, sizeof(err)) != 0)
                die("commit", err);
}

int main(void)
{
        char err[512];
        const char *dsn = getenv("QZ_TEST_PG_DSN");
        if (!dsn || !*dsn) {
                printf("bench_stats: needs a Postgres; run bench/stats.sh (make bench does)\n");
                return 0;
        }
        long nplays = env_long("QZ_BENCH_PLAYS", 1000000);
        long nusers = env_long("QZ_BENCH_USERS", 100000);
        long batch = env_long("QZ_BENCH_BATCH", 10000);
        long nrow = env_long("QZ_BENCH_ROW_PLAYS", 20000);
        long render_ms = env_long("QZ_BENCH_RENDER_MS", 1000);
        if (nrow > nplays)
                nrow = nplays;
        qz_log_init("bench_stats", QZ_LOG_WARN);
        setvbuf(stdout, NULL, _IOLBF, 0); /* each figure as soon as it is measured */
        struct qz_pg_opts po = {.dsn = dsn, .application_name = "bench_stats"};
        struct qz_pg *pg = qz_pg_new(&po, err, sizeof(err));
        if (!pg || qz_pg_connect(pg, err, sizeof(err)) != 0)
                die("postgres", err);
        catalog(pg);
        /* The two COPY passes' tables without autovacuum (a vacuum landing in one pass's timing
         * and not the other's would skew the ratio), each pass after a CHECKPOINT and with the
         * previous pass's table dropped, so neither starts with the other's dirty buffers. */
        exec_or_die(pg, "CREATE TABLE bench_copy (LIKE play_history INCLUDING ALL) "
                        "WITH (autovacuum_enabled = off)");
        exec_or_die(pg, "CREATE TABLE bench_rows (LIKE play_history INCLUDING ALL)");

        /* the rows, generated once (the generator is not what we measure) */
        struct history_row *rows = malloc((size_t)nplays * sizeof(*rows));
        if (!rows)
                die("memory", "rows");
        for (long i = 0; i < nplays; i++)
                make_row(&rows[i], i, nusers);
        printf("plays %ld, users %ld, tracks %d (+5%% of plays on unknown tracks), batch %ld\n",
               nplays, nusers, NTRACKS, batch);

        /* 1. bare COPY, one transaction per batch */
        exec_or_die(pg, "CHECKPOINT");
        double t0 = now_s();
        for (long i = 0; i < nplays; i += batch)
                copy_batch(pg, "bench_copy", rows + i, i + batch <= nplays ? batch : nplays - i,
                           NULL, NULL, NULL);
        double copy_s = now_s() - t0;
        double copy_rate = (double)nplays / copy_s;
        printf("bare COPY into a table with play_history's indexes: %.0f plays/s (%.1f s)\n",
               copy_rate, copy_s);
        exec_or_die(pg, "DROP TABLE bench_copy");
        exec_or_die(pg, "CHECKPOINT");

        /* 1b. the floor: the same COPY plus one counter upsert per distinct user */
        if (env_long("QZ_BENCH_FLOOR", 1)) {
                exec_or_die(pg, "CREATE TABLE bench_floor (LIKE play_history INCLUDING ALL) "
                                "WITH (autovacuum_enabled = off)");
                exec_or_die(pg, "CREATE TABLE bench_floor_users (user_id uuid PRIMARY KEY, "
                                "plays bigint NOT NULL) WITH (autovacuum_enabled = off)");
                const char **users = malloc((size_t)batch * sizeof(*users));
                char *ua = malloc((size_t)batch * 38 + 4), *ca = malloc((size_t)batch * 21 + 4);
                if (!users || !ua || !ca)
                        die("memory", "floor");
                t0 = now_s();
                for (long i = 0; i < nplays; i += batch)
                        copy_batch(pg, "bench_floor", rows + i,
                                   i + batch <= nplays ? batch : nplays - i, users, ua, ca);
                double floor_s = now_s() - t0;
                free(users);
                free(ua);
                free(ca);
                printf("floor: the same COPY + one bigint counter upsert per distinct user of the "
                       "batch (one unnest statement), same transaction: %.0f plays/s (%.1f s) = "
                       "%.2f x bare COPY (the least that per-user stats in the ingest transaction "
                       "add: one row written per user, nothing else)\n",
                       (double)nplays / floor_s, floor_s, (double)nplays / floor_s / copy_rate);
                exec_or_die(pg, "DROP TABLE bench_floor, bench_floor_users");
                exec_or_die(pg, "CHECKPOINT");
        }

        /* QZ_BENCH_SYSTEM=0: only the two COPY passes (the floor at 10M in minutes, not an
         * hour); what follows needs the system's play_history */
        if (!env_long("QZ_BENCH_SYSTEM", 1)) {
                free(rows);
                qz_pg_free(pg);
                return 0;
        }

        /* 2. the system's store path, with the renderer running beside it */
        struct qz_metrics *metrics = qz_metrics_new();
        /* QZ_BENCH_RENDER_MS=0: no renderer during the load, one render of everyone at the
         * end (the least rendering work, the most lag) */
        struct render *render =
            render_ms > 0 ? render_start(dsn, render_ms, metrics, err, sizeof(err)) : NULL;
        if (!metrics || (render_ms > 0 && !render))
                die("render", err);
        struct qz_metric *lag = qz_metrics_gauge(metrics, "qz_stats_render_lag_seconds", NULL, "");
        double max_lag = 0;
        long tenth = nplays / 10 > 0 ? nplays / 10 : nplays, inserted_total = 0, deduped = 0;
        double first_s = 0, last_s = 0;
        t0 = now_s();
        for (long i = 0; i < nplays; i += batch) {
                long n = i + batch <= nplays ? batch : nplays - i;
                struct history_stored st;
                /* plays.v1 is keyed by user: a batch comes from a few partitions */
                char parts[16];
                snprintf(parts, sizeof(parts), "{%ld}", (i / batch) % 24);
                double b0 = now_s();
                if (history_store(pg, rows + i, (size_t)n, parts, &st, err, sizeof(err)) != 0)
                        die("history_store", err);
                double b = now_s() - b0;
                if (i < tenth)
                        first_s += b;
                if (i >= nplays - tenth)
                        last_s += b;
                inserted_total += st.inserted;
                deduped += st.deduped;
                if (qz_metric_value(lag) > max_lag)
                        max_lag = qz_metric_value(lag);
        }
        double ingest_s = now_s() - t0;
        render_stop(render);
        /* the stats are current when no mark is left: drain what the last interval marked */
        struct render_result rr = {0};
        long drained = 0;
        double d0 = now_s();
        do {
                if (render_once(pg, &rr, err, sizeof(err)) != 0)
                        die("render", err);
                drained += rr.users;
                if (rr.lag_seconds > max_lag)
                        max_lag = rr.lag_seconds;
        } while (rr.users > 0);
        double drain_s = now_s() - d0;
        double sys_s = now_s() - t0;
        long rendered = (long)qz_metric_value(qz_metrics_counter(
                            metrics, "qz_stats_users_rendered_total", NULL, "")) +
                        drained;
        qz_metrics_free(metrics);
        double sys_rate = (double)nplays / sys_s;
        if (inserted_total != nplays)
                die("history_store", "not every play was inserted");
        printf("system (history + counters in one tx per batch; stats rendered every %ld ms, "
               "clock stopped when all are current): %.0f plays/s (%.1f s) = %.2f x bare COPY\n",
               render_ms, sys_rate, sys_s, sys_rate / copy_rate);
        printf("  ingest alone %.0f plays/s (%.1f s) = %.2f x bare COPY; final render pass "
               "%.2f s; %ld user renders in all (%.2f per play); max stats lag seen %.1f s\n",
               (double)nplays / ingest_s, ingest_s, (double)nplays / ingest_s / copy_rate, drain_s,
               rendered, (double)rendered / (double)nplays, max_lag);
        printf("  ingest per play: first tenth %.1f us, last tenth %.1f us (cost vs history "
               "size); batches that took the dedup path: %ld\n",
               first_s / (double)tenth * 1e6, last_s / (double)tenth * 1e6, deduped);

        /* 3. row by row, one transaction each (QZ_BENCH_ROW_PLAYS=0 skips it) */
        if (nrow > 0) {
                if (qz_pg_prepare(
                        pg, "row",
                        "INSERT INTO bench_rows (event_id, user_id, track_id, played_at, "
                        "duration_played_ms, completed, source, device_type, source_playlist_id) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        err, sizeof(err)) != 0)
                        die("prepare", err);
                t0 = now_s();
                for (long i = 0; i < nrow; i++)
                        if (qz_pg_exec_prepared(pg, "row", 9, rows[i].values, NULL, err,
                                                sizeof(err)) != 0)
                                die("row insert", err);
                double row_s = now_s() - t0;
                double row_rate = (double)nrow / row_s;
                printf("row-by-row INSERT (%ld plays, autocommit, no stats): %.0f plays/s; "
                       "system = %.1f x that\n",
                       nrow, row_rate, sys_rate / row_rate);
        }

        /* 4. nightly: the old full recompute, and our reconcile (QZ_BENCH_NIGHTLY=0 skips
         * them, for runs that only look at the ingest) */
        if (env_long("QZ_BENCH_NIGHTLY", 1)) {
                t0 = now_s();
                exec_or_die(pg,
                            "CREATE TABLE bench_old_stats AS SELECT * FROM listening_stats_oracle");
                double old_s = now_s() - t0;
                PGresult *r;
                t0 = now_s();
                if (!(r = qz_pg_query(pg, "SELECT listening_stats_reconcile()", 0, NULL, err,
                                      sizeof(err))))
                        die("reconcile", err);
                double rec_s = now_s() - t0;
                printf(
                    "old system's full SQL recompute after the load: %.1f s (%.0f plays/s over the "
                    "load + recompute: %.0f s)\n",
                    old_s, (double)nplays / (copy_s + old_s), copy_s + old_s);
                printf(
                    "nightly reconcile (recompute + compare + rewrite counters): %.1f s, %s rows "
                    "differed\n",
                    rec_s, PQgetvalue(r, 0, 0));
                PQclear(r);
        }
        free(rows);
        qz_pg_free(pg);
        return 0;
}
