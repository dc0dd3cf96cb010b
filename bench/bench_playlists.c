/* bench_playlists.c - bench/playlists: playlists/s of the builder's path against the old system's
 * SQL function per user per type, on one Postgres.
 *
 * Driven by bench/playlists.sh (servers, demo data, the baseline function from
 * bench/playlists_baseline.sql); without QZ_TEST_PG_DSN it says so and exits 0.
 *
 * For QZ_BENCH_USERS users active in the last 90 days (default 300; 0 = all), all four scheduled
 * types each:
 *   - baseline: `bench_old_playlist(user, type)`, one call per user and type (the old
 *     system's approach: compute and upsert in one SQL function), called in a server-side loop
 *     as the guide's generate_all_smart_playlists() does (one statement and transaction per 125
 *     users: no round trip or commit per playlist on either side), over the first
 *     QZ_BENCH_BASELINE_USERS of them (default all; its rate is what is compared);
 *   - the system: what a builder does per consumer batch without the broker: pl_gen_build_batch
 *     (the catalog in memory, loaded by each instance and counted in its time, one query for
 *     the batch's users' plays, the rules) for QZ_BENCH_BATCH users' requests (default 125
 *     users = 500 requests, the service's default batch), then pl_store_batch (request log,
 *     generation, smart_playlists upsert, notification; set-based) in one transaction, with
 *     QZ_BENCH_INSTANCES builder processes (default "1,2"), each on its own connection and a
 *     share of the users, as instances of one consumer group split the partitions;
 *   - with QZ_BENCH_OVERLAP=1, each pass again with the store of batch N in a second thread on
 *     a second connection while batch N+1 is built (an experiment: the service does not do it);
 *   - under each pass, its CPU split: the builders' CPU (getrusage) and the Postgres server's
 *     (its processes' /proc/<pid>/stat, the exited ones through the postmaster's reaped
 *     children), per playlist and as cores used: the steadier comparison on a shared machine;
 *   - then a check that the batch path builds exactly what the per-request SQL path (the
 *     definition in gen.c) builds, for QZ_BENCH_VERIFY users (default 200) x 4 types, with both
 *     A/B variants: exit 1 if any playlist differs.
 * The Kafka hop (one small message per request, batched) is left out on both sides. */
#include "../services/playlist-builder/fanout.h"
#include "../services/playlist-builder/gen.h"
#include "../services/playlist-builder/similarity.h"
#include "../services/playlist-builder/store.h"
#include "clock.h"
#include "pg.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const types[4] = {"daily_mix", "discovery_weekly", "new_for_you",
                                     "forgotten_favorites"};

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The 1-minute load average, for the figures' context (other work shares the 2 cores). */
static const char *loadavg(void)
{
        static char buf[32]; /* bench binary: one thread */
        FILE *f = fopen("/proc/loadavg", "r");
        if (!f || !fgets(buf, sizeof(buf), f))
                snprintf(buf, sizeof(buf), "?");
        if (f)
                fclose(f);
        buf[strcspn(buf, " \n")] = '\0';
        return buf;
}

/* CPU seconds (user + system) of /proc/<pid>/stat: the process's own, plus its reaped
 * children's when reaped is set; -1 when unreadable. */
static double stat_cpu_s(long pid, bool reaped)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
                fclose(f);
        buf[len] = '\0';
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        unsigned long long v[15] = {0};
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu",
                         &v[0], &v[1], &v[2], &v[3]) != 4)
                return -1;
        unsigned long long t = v[0] + v[1] + (reaped ? v[2] + v[3] : 0);
        return (double)t / (double)sysconf(_SC_CLK_TCK);
}

/* All of the Postgres server's CPU seconds so far (postmaster, live backends and auxiliary
 * processes, and the ones that exited: the postmaster reaps them all). */
static double pg_cpu_s(long postmaster)
{
        if (postmaster <= 0)
                return -1;
        double t = stat_cpu_s(postmaster, true);
        char path[96], buf[8192];
        snprintf(path, sizeof(path), "/proc/%ld/task/%ld/children", postmaster, postmaster);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
                fclose(f);
        buf[len] = '\0';
        for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok && t >= 0;
             tok = strtok_r(NULL, " \n", &save)) {
                double c = stat_cpu_s(atol(tok), false);
                t += c > 0 ? c : 0; /* one that exited meanwhile is in the reaped sum */
        }
        return t;
}

/* This process's CPU seconds (all threads), or its waited-for children's. */
static double own_cpu_s(int who)
{
        struct rusage ru;
        if (getrusage(who, &ru) != 0)
                return 0;
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what, const char *err)
{
        fprintf(stderr, "bench_playlists: %s: %s\n", what, err);
        exit(1);
}

static struct qz_pg *connect_or_die(const char *dsn)
{
        char err[512];
        struct qz_pg_opts po = {.dsn = dsn, .application_name = "bench_playlists"};
        struct qz_pg *pg = qz_pg_new(&po, err, sizeof(err));
        if (!pg || qz_pg_connect(pg, err, sizeof(err)) != 0)
                die("postgres", err);
        return pg;
}

/* One batch's requests, results and outcomes (two of them when the store overlaps the build). */
struct batch_set {
        struct pl_gen_result *res;
        struct pl_request *rqs;
        const struct pl_request **rqp;
        const struct pl_playlist **plp;
        const char **errs;
        struct pl_store_outcome *outs;
        char (*rids)[37];
        size_t k;
};

static void set_alloc(struct batch_set *b, size_t cap)
{
        b->res = calloc(cap, sizeof(*b->res));
        b->rqs = calloc(cap, sizeof(*b->rqs));
        b->rqp = calloc(cap, sizeof(*b->rqp));
        b->plp = calloc(cap, sizeof(*b->plp));
        b->errs = calloc(cap, sizeof(*b->errs));
        b->outs = calloc(cap, sizeof(*b->outs));
        b->rids = calloc(cap, 37);
        if (!b->res || !b->rqs || !b->rqp || !b->plp || !b->errs || !b->outs || !b->rids)
                die("builder", "out of memory");
}

static void set_free(struct batch_set *b)
{
        free(b->res);
        free(b->rqs);
        free(b->rqp);
        free(b->plp);
        free(b->errs);
        free(b->outs);
        free(b->rids);
}

/* As the service stores a consumer batch: one transaction, set-based. */
struct store_job {
        struct qz_pg *pg;
        struct batch_set *b;
        double secs, commit_secs; /* the store's, and of that the commit's (WAL flush) */
};

static void *store_set(void *arg)
{
        struct store_job *j = arg;
        char err[512], st[8];
        double t0 = qz_clock_mono_s();
        if (qz_pg_begin(j->pg, err, sizeof(err)) != 0 ||
            pl_store_batch(j->pg, j->b->rqp, j->b->plp, j->b->errs, j->b->k, j->b->outs, st, err,
                           sizeof(err)) != 0)
                die("store", err);
        double t1 = qz_clock_mono_s();
        if (qz_pg_commit(j->pg, err, sizeof(err)) != 0)
                die("store", err);
        j->commit_secs += qz_clock_mono_s() - t1;
        j->secs += qz_clock_mono_s() - t0;
        for (size_t i = 0; i < j->b->k; i++)
                pl_playlist_free(&j->b->res[i].pl);
        return NULL;
}

/* One builder instance: users i with i % n == part. Prints per-request seconds when verbose.
 * overlap (QZ_BENCH_OVERLAP=1; an experiment, the service does not do it): batch N is stored
 * by a second thread on a second connection while batch N+1 is built. */
static void builder(const char *dsn, PGresult *users, int part, int n, const char *run_id,
                    bool verbose, bool overlap)
{
        char err[512];
        struct qz_pg *pg = connect_or_die(dsn), *spg = overlap ? connect_or_die(dsn) : pg;
        struct pl_gen_cfg gc = {.target = 50,
                                .max_target = 200,
                                .recency_days = 14,
                                .content_weight = 0.5,
                                .variants = "cf:100",
                                .ab_salt = "ab1"};
        struct pl_gen *g = pl_gen_new(pg, &gc, err, sizeof(err));
        if (!g || pl_store_prepare(spg, err, sizeof(err)) != 0)
                die("builder", err);
        double t_build = 0;
        long count = 0;
        const char *bs = getenv("QZ_BENCH_BATCH");
        int batch = bs && *bs ? atoi(bs) : 125;
        if (batch < 1)
                batch = 1;
        struct batch_set sets[2];
        set_alloc(&sets[0], (size_t)batch * 4);
        set_alloc(&sets[1], (size_t)batch * 4);
        struct store_job job = {.pg = spg};
        pthread_t th;
        bool running = false;
        int cur = 0;
        /* As a builder handles a consumer batch: build the batch's requests (one instant, so a
         * user's four types share its profile), then store them all in one transaction. */
        for (int u0 = part; u0 < PQntuples(users); u0 += n * batch) {
                struct batch_set *b = &sets[cur];
                int64_t now = now_ms();
                size_t k = 0;
                for (int u = u0; u < PQntuples(users) && u < u0 + n * batch; u += n)
                        for (int t = 0; t < 4; t++, k++) {
                                const char *user = PQgetvalue(users, u, 0);
                                pl_fanout_request_id(run_id, user, types[t], b->rids[k]);
                                b->rqs[k] = (struct pl_request){.request_id = b->rids[k],
                                                                .user_id = user,
                                                                .playlist_type = types[t],
                                                                .reason = "bench"};
                                b->rqp[k] = &b->rqs[k];
                        }
                b->k = k;
                double t0 = qz_clock_mono_s();
                if (pl_gen_build_batch(g, b->rqp, k, now, b->res, err, sizeof(err)) != 0)
                        die("build", err);
                for (size_t i = 0; i < k; i++) {
                        if (b->res[i].rc != 0)
                                die(b->rqs[i].playlist_type, b->res[i].err);
                        b->plp[i] = &b->res[i].pl;
                        b->errs[i] = NULL;
                }
                t_build += qz_clock_mono_s() - t0;
                if (running && pthread_join(th, NULL) != 0)
                        die("builder", "join");
                running = false;
                job.b = b;
                if (!overlap)
                        store_set(&job);
                else if (pthread_create(&th, NULL, store_set, &job) != 0)
                        die("builder", "thread");
                else
                        running = true;
                cur ^= overlap ? 1 : 0;
                count += (long)k;
        }
        if (running && pthread_join(th, NULL) != 0)
                die("builder", "join");
        set_free(&sets[0]);
        set_free(&sets[1]);
        if (verbose)
                printf("  per request (ms): build %.3f (catalog load included), store %.3f (of "
                       "which commit %.3f)%s\n",
                       1e3 * t_build / (double)(count ? count : 1),
                       1e3 * job.secs / (double)(count ? count : 1),
                       1e3 * job.commit_secs / (double)(count ? count : 1),
                       overlap ? " (overlapping the build)" : "");
        pl_gen_free(g);
        if (spg != pg)
                qz_pg_free(spg);
        qz_pg_free(pg);
}

/* The batch path against the per-request SQL path (the definition) on the same users, as of one
 * instant: every playlist's tracks, in order, and its metadata must be equal. */
static void verify(const char *dsn, PGresult *users)
{
        const char *vs = getenv("QZ_BENCH_VERIFY");
        int nv = vs && *vs ? atoi(vs) : 200;
        if (nv > PQntuples(users))
                nv = PQntuples(users);
        if (nv <= 0)
                return;
        char err[512];
        struct qz_pg *pg = connect_or_die(dsn);
        struct pl_gen_cfg gc = {.target = 50,
                                .max_target = 200,
                                .recency_days = 14,
                                .content_weight = 0.5,
                                .variants = "cf:50,guide:50",
                                .ab_salt = "ab1"};
        struct pl_gen *g = pl_gen_new(pg, &gc, err, sizeof(err));
        if (!g)
                die("verify", err);
        size_t k = (size_t)nv * 4;
        struct pl_request *rqs = calloc(k, sizeof(*rqs));
        const struct pl_request **rqp = calloc(k, sizeof(*rqp));
        struct pl_gen_result *res = calloc(k, sizeof(*res));
        if (!rqs || !rqp || !res)
                die("verify", "out of memory");
        for (size_t i = 0; i < k; i++) {
                rqs[i] = (struct pl_request){.request_id = "00000000-0000-4000-8000-000000000000",
                                             .user_id = PQgetvalue(users, (int)(i / 4), 0),
                                             .playlist_type = types[i % 4],
                                             .reason = "verify"};
                rqp[i] = &rqs[i];
        }
        int64_t now = now_ms();
        if (pl_gen_build_batch(g, rqp, k, now, res, err, sizeof(err)) != 0)
                die("verify", err);
        long diff = 0, tracks = 0;
        for (size_t i = 0; i < k; i++) {
                struct pl_playlist p;
                if (pl_gen_build(g, &rqs[i], now, &p, err, sizeof(err)) != 0)
                        die("verify", err);
                char *a = json_dumps(p.metadata, JSON_SORT_KEYS | JSON_COMPACT),
                     *b = json_dumps(res[i].pl.metadata, JSON_SORT_KEYS | JSON_COMPACT);
                bool same = res[i].rc == 0 && p.n == res[i].pl.n && a && b && strcmp(a, b) == 0;
                for (size_t j = 0; same && j < p.n; j++)
                        same = strcmp(p.items[j].track_id, res[i].pl.items[j].track_id) == 0;
                if (!same) {
                        if (diff < 3)
                                fprintf(stderr, "verify: %s %s differs\n  sql: %s\n  mem: %s\n",
                                        rqs[i].user_id, rqs[i].playlist_type, a, b);
                        diff++;
                }
                tracks += (long)p.n;
                free(a);
                free(b);
                pl_playlist_free(&p);
                pl_playlist_free(&res[i].pl);
        }
        printf("verify: %zu playlists (%ld tracks) of %d users, variants cf and guide: batch path "
               "vs per-request SQL: %ld differ\n",
               k, tracks, nv, diff);
        free(rqs);
        free(rqp);
        free(res);
        pl_gen_free(g);
        qz_pg_free(pg);
        if (diff)
                exit(1);
}

int main(int argc, char **argv)
{
        const char *dsn = getenv("QZ_TEST_PG_DSN");
        if (!dsn || !*dsn) {
                printf("bench_playlists: QZ_TEST_PG_DSN not set; run bench/playlists.sh\n");
                return 0;
        }
        if (argc > 1 && strcmp(argv[1], "--similarities") == 0) {
                /* Setup step of playlists.sh: the nightly job's neighbours, as of now. */
                char err[512];
                struct qz_pg *pg = connect_or_die(dsn);
                struct pl_similarity_cfg sc = {
                    .k = 50, .window_days = 90, .min_common = 2, .shrink = 3, .max_per_user = 500};
                struct qz_job_result jr = {0};
                double t0 = qz_clock_mono_s();
                if (pl_similarity_compute(&sc, pg, NULL, &jr, err, sizeof(err)) != 0)
                        die("similarities", err);
                printf("compute-track-similarities: %s (%.1f s)\n", jr.message,
                       qz_clock_mono_s() - t0);
                qz_pg_free(pg);
                return 0;
        }
        const char *nu_s = getenv("QZ_BENCH_USERS"), *inst = getenv("QZ_BENCH_INSTANCES");
        long nu = nu_s && *nu_s ? atol(nu_s) : 300;
        char lim[24];
        snprintf(lim, sizeof(lim), "%ld", nu > 0 ? nu : 1000000000L);
        struct qz_pg *pg = connect_or_die(dsn);
        char err[512];
        const char *v[] = {lim};
        PGresult *users = qz_pg_query(
            pg,
            "SELECT user_id::text FROM (SELECT DISTINCT user_id FROM play_history WHERE "
            "played_at >= now() - interval '90 days') u ORDER BY md5(user_id::text) "
            "LIMIT $1::bigint",
            1, v, err, sizeof(err));
        if (!users)
                die("users", err);
        int n = PQntuples(users);
        long lists = 4L * n;
        printf("%d users x 4 types = %ld playlists per pass\n", n, lists);
        /* The server runs on this machine (playlists.sh): its processes' CPU time, through
         * /proc, splits each pass's CPU between Postgres and the builders. */
        long postmaster = -1;
        PGresult *bp = qz_pg_query(pg, "SELECT pg_backend_pid()", 0, NULL, err, sizeof(err));
        if (bp) {
                char path[64], buf[512];
                snprintf(path, sizeof(path), "/proc/%s/stat", PQgetvalue(bp, 0, 0));
                FILE *f = fopen(path, "r");
                char *p = f && fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
                if (!p || sscanf(p + 2, "%*c %ld", &postmaster) != 1)
                        postmaster = -1;
                if (f)
                        fclose(f);
                PQclear(bp);
        }

        /* The baseline's rate may be measured on the first QZ_BENCH_BASELINE_USERS of the
         * (md5-shuffled) users: at the size all 100k would take most of an hour.
         * 0 skips it (development runs only). */
        const char *bu = getenv("QZ_BENCH_BASELINE_USERS");
        int nbase = bu && *bu ? atoi(bu) : n;
        if (nbase > n || nbase < 0)
                nbase = n;
        /* As the old system ran it (the guide's `SELECT generate_all_smart_playlists()`): the
         * per-user, per-type function called in a loop on the server, here one statement and
         * transaction per 125 users (the builders' batch), so neither side pays a round trip or
         * a commit per playlist. */
        /* First as the previous bench did: one client call (and commit) per playlist. */
        double t0 = qz_clock_mono_s();
        for (int u = 0; u < nbase; u++)
                for (int t = 0; t < 4; t++) {
                        const char *vb[] = {PQgetvalue(users, u, 0), types[t]};
                        PGresult *r = qz_pg_query(pg, "SELECT bench_old_playlist($1::uuid, $2)", 2,
                                                  vb, err, sizeof(err));
                        if (!r)
                                die("baseline", err);
                        PQclear(r);
                }
        double base_calls = 4.0 * nbase / (qz_clock_mono_s() - t0);
        printf("baseline, per-call (a client call and commit per playlist; %d users): %.1f "
               "playlists/s (load %s)\n",
               nbase, base_calls, loadavg());
        t0 = qz_clock_mono_s();
        double c0 = pg_cpu_s(postmaster);
        for (int u0 = 0; u0 < nbase; u0 += 125) {
                char *lit = malloc(125 * 38 + 3);
                if (!lit)
                        die("baseline", "out of memory");
                size_t o = 0;
                lit[o++] = '{';
                for (int u = u0; u < nbase && u < u0 + 125; u++)
                        o += (size_t)snprintf(lit + o, 39, "%s%s", u > u0 ? "," : "",
                                              PQgetvalue(users, u, 0));
                lit[o++] = '}';
                lit[o] = '\0';
                const char *vb[] = {lit};
                PGresult *r = qz_pg_query(pg,
                                          "SELECT sum(bench_old_playlist(u, t)) FROM "
                                          "unnest($1::uuid[]) AS u, unnest(ARRAY['daily_mix', "
                                          "'discovery_weekly', 'new_for_you', "
                                          "'forgotten_favorites']) AS t",
                                          1, vb, err, sizeof(err));
                free(lit);
                if (!r)
                        die("baseline", err);
                PQclear(r);
        }
        double wall = qz_clock_mono_s() - t0, base = 4.0 * nbase / wall;
        printf("baseline (SQL function per user per type in a server-side loop, the guide's way; "
               "%d users): %.1f "
               "playlists/s (load %s)\n",
               nbase, base, loadavg());
        if (c0 >= 0)
                printf("  cpu: postgres %.2f s in %.2f s (%.2f cores), %.3f ms per playlist\n",
                       pg_cpu_s(postmaster) - c0, wall, (pg_cpu_s(postmaster) - c0) / wall,
                       1e3 * (pg_cpu_s(postmaster) - c0) / (4.0 * nbase));

        char list[64];
        snprintf(list, sizeof(list), "%s", inst && *inst ? inst : "1,2");
        const char *ov = getenv("QZ_BENCH_OVERLAP");
        bool with_overlap = ov && strcmp(ov, "1") == 0;
        double first = 0;
        for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
                int k = atoi(tok);
                if (k < 1 || k > 64)
                        die("QZ_BENCH_INSTANCES", tok);
                for (int o = 0; o <= (with_overlap ? 1 : 0); o++) {
                        char run_id[37];
                        snprintf(run_id, sizeof(run_id), "00000000-0000-4000-8000-%012lx",
                                 (unsigned long)time(NULL) * 128 + (unsigned long)(k * 2 + o));
                        fflush(stdout);
                        double s0 = qz_clock_mono_s(), p0 = pg_cpu_s(postmaster),
                               b0 = own_cpu_s(k == 1 ? RUSAGE_SELF : RUSAGE_CHILDREN);
                        if (k == 1) {
                                builder(dsn, users, 0, 1, run_id, true, o == 1);
                        } else {
                                for (int i = 0; i < k; i++) {
                                        pid_t pid = fork();
                                        if (pid < 0)
                                                die("fork", "failed");
                                        if (pid == 0) {
                                                builder(dsn, users, i, k, run_id, false, o == 1);
                                                _exit(0);
                                        }
                                }
                                for (int i = 0; i < k; i++) {
                                        int st = 0;
                                        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                                                die("builder", "an instance failed");
                                }
                        }
                        double w = qz_clock_mono_s() - s0, rate = (double)lists / w;
                        double pc = pg_cpu_s(postmaster) - p0,
                               bc = own_cpu_s(k == 1 ? RUSAGE_SELF : RUSAGE_CHILDREN) - b0;
                        if (first == 0)
                                first = rate;
                        printf("builder x%d%s (build + store, one connection each): %.1f "
                               "playlists/s = %.2fx baseline (%.2fx the per-call one), %.2fx of "
                               "x1 (load %s)\n",
                               k,
                               o ? " overlapped (bench experiment: store of batch N on a 2nd "
                                   "connection during the build of N+1)"
                                 : "",
                               rate, rate / base, rate / base_calls, rate / first, loadavg());
                        if (p0 >= 0)
                                printf("  cpu: builders %.2f s + postgres %.2f s in %.2f s = "
                                       "%.2f cores (postgres %.0f%%); per playlist: builders "
                                       "%.3f ms, postgres %.3f ms\n",
                                       bc, pc, w, (bc + pc) / w, 100 * pc / (bc + pc),
                                       1e3 * bc / (double)lists, 1e3 * pc / (double)lists);
                }
        }
        verify(dsn, users);
        PQclear(users);
        qz_pg_free(pg);
        return 0;
}
