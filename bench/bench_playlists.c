/* bench_playlists.c - bench/playlists: playlists/s of the builder's path against the old system's
 * SQL function per user per type, on one Postgres.
 *
 * Driven by bench/playlists.sh (servers, demo data, the baseline function from
 * bench/playlists_baseline.sql); without QZ_TEST_PG_DSN it says so and exits 0.
 *
 * For QZ_BENCH_USERS users active in the last 90 days (default 300; 0 = all), all four scheduled
 * types each:
 *   - baseline: `SELECT bench_old_playlist(user, type)`, one call per user and type (the old
 *     system's approach: compute and upsert in one SQL function);
 *   - the system: what a builder does per consumer batch without the broker: pl_gen_build (the
 *     candidate queries and the rules) for QZ_BENCH_BATCH users' requests (default 25 users =
 *     100 requests; 1 = the old one transaction per request), then their outcomes (request log,
 *     generation, smart_playlists upsert, notification) in one transaction, with QZ_BENCH_INSTANCES
 * builder processes (default "1,2"), each on its own connection and a share of the users, as
 *     instances of one consumer group split the partitions.
 * The Kafka hop (one small message per request, batched) is left out on both sides. */
#include "../services/playlist-builder/fanout.h"
#include "../services/playlist-builder/gen.h"
#include "../services/playlist-builder/similarity.h"
#include "../services/playlist-builder/store.h"
#include "clock.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* One builder instance: users i with i % n == part. Prints per-type seconds when verbose. */
static void builder(const char *dsn, PGresult *users, int part, int n, const char *run_id,
                    bool verbose)
{
        char err[512];
        struct qz_pg *pg = connect_or_die(dsn);
        struct pl_gen_cfg gc = {.target = 50,
                                .max_target = 200,
                                .recency_days = 14,
                                .content_weight = 0.5,
                                .variants = "cf:100",
                                .ab_salt = "ab1"};
        struct pl_gen *g = pl_gen_new(pg, &gc, err, sizeof(err));
        if (!g || pl_store_prepare(pg, err, sizeof(err)) != 0)
                die("builder", err);
        double t_type[4] = {0}, t_store = 0;
        long count = 0;
        const char *bs = getenv("QZ_BENCH_BATCH");
        int batch = bs && *bs ? atoi(bs) : 25;
        if (batch < 1)
                batch = 1;
        struct pl_playlist *pls = calloc((size_t)batch * 4, sizeof(*pls));
        struct pl_request *rqs = calloc((size_t)batch * 4, sizeof(*rqs));
        char(*rids)[37] = calloc((size_t)batch * 4, 37);
        if (!pls || !rqs || !rids)
                die("builder", "out of memory");
        /* As a builder handles a consumer batch: build the batch's requests (one instant, so a
         * user's four types share its profile), then store them all in one transaction. */
        for (int u0 = part; u0 < PQntuples(users); u0 += n * batch) {
                int64_t now = now_ms();
                size_t k = 0;
                for (int u = u0; u < PQntuples(users) && u < u0 + n * batch; u += n)
                        for (int t = 0; t < 4; t++, k++) {
                                const char *user = PQgetvalue(users, u, 0);
                                pl_fanout_request_id(run_id, user, types[t], rids[k]);
                                rqs[k] = (struct pl_request){.request_id = rids[k],
                                                             .user_id = user,
                                                             .playlist_type = types[t],
                                                             .reason = "bench"};
                                double t0 = qz_clock_mono_s();
                                if (pl_gen_build(g, &rqs[k], now, &pls[k], err, sizeof(err)) != 0)
                                        die(types[t], err);
                                t_type[t] += qz_clock_mono_s() - t0;
                        }
                double t1 = qz_clock_mono_s();
                struct pl_store_outcome out;
                if (batch == 1) {
                        for (size_t i = 0; i < k; i++)
                                if (pl_store_result(pg, &rqs[i], &pls[i], NULL, &out, err,
                                                    sizeof(err)) != 0)
                                        die("store", err);
                } else {
                        if (qz_pg_begin(pg, err, sizeof(err)) != 0)
                                die("store", err);
                        for (size_t i = 0; i < k; i++)
                                if (pl_store_result_in_batch(pg, &rqs[i], &pls[i], NULL, &out, err,
                                                             sizeof(err)) != 0)
                                        die("store", err);
                        if (qz_pg_commit(pg, err, sizeof(err)) != 0)
                                die("store", err);
                }
                t_store += qz_clock_mono_s() - t1;
                for (size_t i = 0; i < k; i++)
                        pl_playlist_free(&pls[i]);
                count += (long)k;
        }
        free(pls);
        free(rqs);
        free(rids);
        if (verbose)
                printf("  per request (ms): daily_mix %.1f, discovery_weekly %.1f, new_for_you "
                       "%.1f, forgotten_favorites %.1f build; store %.1f\n",
                       1e3 * t_type[0] * 4 / (double)(count ? count : 1),
                       1e3 * t_type[1] * 4 / (double)(count ? count : 1),
                       1e3 * t_type[2] * 4 / (double)(count ? count : 1),
                       1e3 * t_type[3] * 4 / (double)(count ? count : 1),
                       1e3 * t_store / (double)(count ? count : 1));
        pl_gen_free(g);
        qz_pg_free(pg);
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

        double t0 = qz_clock_mono_s();
        for (int u = 0; u < n; u++)
                for (int t = 0; t < 4; t++) {
                        const char *vb[] = {PQgetvalue(users, u, 0), types[t]};
                        PGresult *r = qz_pg_query(pg, "SELECT bench_old_playlist($1::uuid, $2)", 2,
                                                  vb, err, sizeof(err));
                        if (!r)
                                die("baseline", err);
                        PQclear(r);
                }
        double base = (double)lists / (qz_clock_mono_s() - t0);
        printf("baseline (SQL function per user per type, 1 connection): %.1f playlists/s\n", base);

        char list[64];
        snprintf(list, sizeof(list), "%s", inst && *inst ? inst : "1,2");
        double first = 0;
        for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
                int k = atoi(tok);
                if (k < 1 || k > 64)
                        die("QZ_BENCH_INSTANCES", tok);
                char run_id[37];
                snprintf(run_id, sizeof(run_id), "00000000-0000-4000-8000-%012lx",
                         (unsigned long)time(NULL) * 64 + (unsigned long)k);
                fflush(stdout);
                double s0 = qz_clock_mono_s();
                if (k == 1) {
                        builder(dsn, users, 0, 1, run_id, true);
                } else {
                        for (int i = 0; i < k; i++) {
                                pid_t pid = fork();
                                if (pid < 0)
                                        die("fork", "failed");
                                if (pid == 0) {
                                        builder(dsn, users, i, k, run_id, false);
                                        _exit(0);
                                }
                        }
                        for (int i = 0; i < k; i++) {
                                int st = 0;
                                if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                                        die("builder", "an instance failed");
                        }
                }
                double rate = (double)lists / (qz_clock_mono_s() - s0);
                if (first == 0)
                        first = rate;
                printf("builder x%d (build + store, one connection each): %.1f playlists/s = "
                       "%.2fx baseline, %.2fx of x1\n",
                       k, rate, rate / base, rate / first);
        }
        PQclear(users);
        qz_pg_free(pg);
        return 0;
}
