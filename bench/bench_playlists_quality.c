/* bench_playlists_quality.c - offline quality of daily_mix and discovery_weekly on held-out plays.
 *
 * Driven by bench/playlists_quality.sh (servers, demo data); without QZ_TEST_PG_DSN it says so
 * and exits 0 (make bench runs every bench_* binary).
 *
 * Protocol: the cut-off is the start of the last QZ_BENCH_HOLDOUT_DAYS (7) whole days of
 * play_history. The similarity job runs as of the cut-off (CF from the 90 days before it), then
 * for QZ_BENCH_EVAL_USERS (1000, 0 = all) users with plays on both sides, the real generator
 * (its batch path, pl_gen_build_batch, as of the cut-off; checked against pl_gen_build, the
 * per-request SQL, on the first QZ_BENCH_QUALITY_CHECK lists) builds:
 *   daily_mix        variant guide (the guide's rules, no CF) and variant cf;
 *   discovery_weekly variant guide and variant cf;
 * and two popularity baselines: the 50 most played tracks of the 30 days before the cut-off
 * (for daily_mix), and the same ranking without the tracks the user ever played (for
 * discovery_weekly). Relevance: daily_mix against every track the user played in the
 * held-out days; discovery_weekly against the held-out tracks the user had never played before
 * the cut-off (users with none are left out of that table). Metrics @K (50): hit rate (share of
 * users with >= 1 relevant track in the list), recall (relevant tracks found / relevant tracks,
 * averaged over users) and NDCG (binary relevance, ideal = min(|relevant|, K) hits on top).
 * The daily_mix lists are scored a second time against the held-out tracks new to the user
 * (the ", new" rows: the part of a daily_mix the variants differ in). */
#include "../services/playlist-builder/gen.h"
#include "../services/playlist-builder/similarity.h"
#include "clock.h"
#include "pg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NLISTS 9

/* Rows 6..8 score the daily_mix lists again, against the held-out tracks new to the user only:
 * 60% of a daily_mix is the user's own recent plays by the guide's rule, the same in both
 * variants, and those replays put the hit rate against every held-out track near 1 for both
 * (0.92 guide): a 1.5x ratio cannot exist on that row. The new-tracks rows, a diagnostic, measure
 * what the variants differ in, the 40% of discoveries, for the users with a new held-out track;
 * their popularity list leaves out the user's played tracks (discovery_weekly's). */
static const char *const list_names[NLISTS] = {
    "daily_mix guide",        "daily_mix cf",        "daily_mix popularity",
    "discovery_weekly guide", "discovery_weekly cf", "discovery_weekly popularity",
    "daily_mix guide, new",   "daily_mix cf, new",   "daily_mix pop. unplayed, new"};

struct metric {
        long users;
        double hits, recall, ndcg;
};

/* One user's held-out tracks (borrowed from the PGresult). */
struct heldout {
        const char **all, **fresh;
        size_t nall, nfresh;
};

static void die(const char *what, const char *err)
{
        fprintf(stderr, "bench_playlists_quality: %s: %s\n", what, err);
        exit(1);
}

static long env_long(const char *name, long dflt)
{
        const char *s = getenv(name);
        return s && *s ? atol(s) : dflt;
}

static PGresult *q(struct qz_pg *pg, const char *sql, int n, const char *const *v)
{
        char err[512];
        PGresult *r = qz_pg_query(pg, sql, n, v, err, sizeof(err));
        if (!r)
                die(sql, err);
        return r;
}

static bool in(const char *id, const char *const *set, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(id, set[i]) == 0)
                        return true;
        return false;
}

/* Scores one list (ids[0..n)) against the relevant set. */
static void score(struct metric *m, const char *const *ids, size_t n, size_t k,
                  const char *const *rel, size_t nrel)
{
        if (nrel == 0)
                return;
        double dcg = 0, idcg = 0;
        size_t hits = 0;
        for (size_t i = 0; i < n && i < k; i++)
                if (in(ids[i], rel, nrel)) {
                        hits++;
                        dcg += 1.0 / log2((double)i + 2.0);
                }
        for (size_t i = 0; i < nrel && i < k; i++)
                idcg += 1.0 / log2((double)i + 2.0);
        m->users++;
        m->hits += hits > 0;
        m->recall += (double)hits / (double)nrel;
        m->ndcg += dcg / idcg;
}

/* One list through the builder's batch path (the catalog in memory, one plays query), as the
 * service builds it. For the first QZ_BENCH_QUALITY_CHECK (50) calls the per-request SQL path
 * (the definition) builds it too, as of the same cut-off: any difference exits 1. */
static void build(struct pl_gen *g, const char *user, const char *type, int64_t cut_ms,
                  const char **ids, size_t *n, char ids_buf[][PL_ID_LEN], long *checks)
{
        char err[512];
        struct pl_request rq = {.request_id = "eval", .user_id = user, .playlist_type = type};
        const struct pl_request *rqp[1] = {&rq};
        struct pl_gen_result res = {0};
        if (pl_gen_build_batch(g, rqp, 1, cut_ms, &res, err, sizeof(err)) != 0)
                die(type, err);
        if (res.rc != 0)
                die(type, res.err);
        struct pl_playlist *pl = &res.pl;
        if (*checks > 0) {
                (*checks)--;
                struct pl_playlist p = {0};
                if (pl_gen_build(g, &rq, cut_ms, &p, err, sizeof(err)) != 0)
                        die(type, err);
                bool same = p.n == pl->n;
                for (size_t i = 0; same && i < p.n; i++)
                        same = strcmp(p.items[i].track_id, pl->items[i].track_id) == 0;
                pl_playlist_free(&p);
                if (!same) {
                        fprintf(stderr, "%s %s: batch path and per-request SQL differ\n", user,
                                type);
                        exit(1);
                }
        }
        *n = pl->n;
        for (size_t i = 0; i < pl->n; i++) {
                memcpy(ids_buf[i], pl->items[i].track_id, PL_ID_LEN);
                ids[i] = ids_buf[i];
        }
        pl_playlist_free(pl);
}

int main(void)
{
        const char *dsn = getenv("QZ_TEST_PG_DSN");
        if (!dsn || !*dsn) {
                printf("bench_playlists_quality: QZ_TEST_PG_DSN not set; run "
                       "bench/playlists_quality.sh\n");
                return 0;
        }
        long holdout = env_long("QZ_BENCH_HOLDOUT_DAYS", 7),
             nusers = env_long("QZ_BENCH_EVAL_USERS", 1000);
        size_t k = 50;
        char err[512], hd[16], lim[24];
        snprintf(hd, sizeof(hd), "%ld", holdout);
        snprintf(lim, sizeof(lim), "%ld", nusers > 0 ? nusers : 1000000000L);
        struct qz_pg_opts po = {.dsn = dsn, .application_name = "bench_playlists_quality"};
        struct qz_pg *pg = qz_pg_new(&po, err, sizeof(err));
        if (!pg || qz_pg_connect(pg, err, sizeof(err)) != 0)
                die("postgres", err);

        const char *v1[] = {hd};
        PGresult *r = q(pg,
                        "SELECT to_char((date_trunc('day', max(played_at) AT TIME ZONE 'UTC') + "
                        "interval '1 day' - make_interval(days => $1::int)), "
                        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), extract(epoch FROM (date_trunc('day', "
                        "max(played_at) AT TIME ZONE 'UTC') + interval '1 day' - "
                        "make_interval(days => $1::int)) AT TIME ZONE 'UTC')::bigint * 1000, "
                        "count(*) FROM play_history",
                        1, v1);
        if (PQgetisnull(r, 0, 0))
                die("data", "play_history is empty");
        char cut[40];
        snprintf(cut, sizeof(cut), "%s", PQgetvalue(r, 0, 0));
        int64_t cut_ms = atoll(PQgetvalue(r, 0, 1));
        long nplays = atol(PQgetvalue(r, 0, 2));
        PQclear(r);

        double t0 = qz_clock_mono_s();
        struct pl_similarity_cfg sc = {
            .k = 50, .window_days = 90, .min_common = 2, .shrink = 3, .max_per_user = 500};
        struct qz_job_result jr = {0};
        if (pl_similarity_compute(&sc, pg, cut, &jr, err, sizeof(err)) != 0)
                die("similarities", err);
        double t_sim = qz_clock_mono_s() - t0;

        /* Popularity ranking of the 30 days before the cut-off (playable tracks only). */
        const char *vc[] = {cut};
        PQclear(q(pg, "DROP TABLE IF EXISTS pg_temp.eval_pop", 0, NULL));
        PQclear(q(pg,
                  "CREATE TEMP TABLE eval_pop AS SELECT h.track_id, count(*) AS c, "
                  "row_number() OVER (ORDER BY count(*) DESC, h.track_id) AS rk "
                  "FROM play_history h JOIN tracks t ON t.id = h.track_id "
                  "AND t.deleted_at IS NULL WHERE h.played_at >= $1::timestamptz - "
                  "interval '30 days' AND h.played_at < $1::timestamptz GROUP BY h.track_id",
                  1, vc));
        PGresult *pop = q(pg, "SELECT track_id::text FROM eval_pop ORDER BY rk LIMIT 50", 0, NULL);

        /* Users with plays on both sides of the cut-off, a stable sample. */
        const char *vu[] = {cut, hd, lim};
        PGresult *users =
            q(pg,
              "SELECT u.user_id::text FROM (SELECT DISTINCT user_id FROM play_history WHERE "
              "played_at >= $1::timestamptz AND played_at < $1::timestamptz + "
              "make_interval(days => $2::int)) u WHERE EXISTS (SELECT 1 FROM play_history p "
              "WHERE p.user_id = u.user_id AND p.played_at < $1::timestamptz) "
              "ORDER BY md5(u.user_id::text) LIMIT $3::bigint",
              3, vu);
        int nu = PQntuples(users);
        const char *vh[] = {cut, hd};
        PQclear(q(pg, "DROP TABLE IF EXISTS pg_temp.eval_users", 0, NULL));
        PQclear(q(pg, "CREATE TEMP TABLE eval_users (user_id uuid PRIMARY KEY)", 0, NULL));
        for (int i = 0; i < nu; i++) {
                const char *vi[] = {PQgetvalue(users, i, 0)};
                PQclear(q(pg, "INSERT INTO eval_users VALUES ($1::uuid)", 1, vi));
        }
        /* Held-out tracks per user; fresh = never played before the cut-off. */
        PGresult *ho = q(pg,
                         "WITH ho AS (SELECT DISTINCT h.user_id, h.track_id FROM play_history h "
                         "JOIN eval_users e ON e.user_id = h.user_id WHERE h.played_at >= "
                         "$1::timestamptz AND h.played_at < $1::timestamptz + "
                         "make_interval(days => $2::int)) SELECT ho.user_id::text, "
                         "ho.track_id::text, NOT EXISTS (SELECT 1 FROM play_history p WHERE "
                         "p.user_id = ho.user_id AND p.track_id = ho.track_id AND p.played_at < "
                         "$1::timestamptz), coalesce(t.released_at >= ($1::timestamptz AT TIME "
                         "ZONE 'UTC')::date - 90, false) FROM ho JOIN tracks t ON t.id = "
                         "ho.track_id ORDER BY 1, 2",
                         2, vh);
        int nho = PQntuples(ho);
        long fresh_total = 0, fresh_recent = 0;
        for (int i = 0; i < nho; i++)
                if (PQgetvalue(ho, i, 2)[0] == 't') {
                        fresh_total++;
                        fresh_recent += PQgetvalue(ho, i, 3)[0] == 't';
                }

        struct pl_gen_cfg gc = {.target = (long)k,
                                .max_target = 200,
                                .recency_days = 14,
                                .content_weight = 0.5,
                                .variants = "cf:100",
                                .ab_salt = "ab1",
                                .force_variant = "guide"};
        struct pl_gen_cfg gcf = gc;
        gcf.force_variant = "cf";
        struct pl_gen *gguide = pl_gen_new(pg, &gc, err, sizeof(err));
        /* Each generator prepares its statements: one connection each. */
        struct qz_pg *pg2 = qz_pg_new(&po, err, sizeof(err));
        if (!pg2 || qz_pg_connect(pg2, err, sizeof(err)) != 0)
                die("postgres", err);
        struct pl_gen *gcfg = gguide ? pl_gen_new(pg2, &gcf, err, sizeof(err)) : NULL;
        if (!gcfg)
                die("generator", err);

        struct metric m[NLISTS] = {{0}};
        static char buf[NLISTS][200][PL_ID_LEN];
        const char *ids[NLISTS][200];
        size_t n[NLISTS];
        const char **all = malloc(((size_t)nho + 1) * sizeof(*all)),
                   **fresh = malloc(((size_t)nho + 1) * sizeof(*fresh));
        if (!all || !fresh)
                die("memory", "out of memory");
        long checks = env_long("QZ_BENCH_QUALITY_CHECK", 50), checked = checks;
        double t1 = qz_clock_mono_s();
        int row = 0;
        long built = 0;
        for (int u = 0; u < nu; u++) {
                const char *user = PQgetvalue(users, u, 0);
                /* ho is ordered by user id text; users by md5: find this user's rows. */
                int lo = 0, hi = nho;
                while (lo < hi) {
                        int mid = (lo + hi) / 2;
                        if (strcmp(PQgetvalue(ho, mid, 0), user) < 0)
                                lo = mid + 1;
                        else
                                hi = mid;
                }
                size_t nall = 0, nfresh = 0;
                for (row = lo; row < nho && strcmp(PQgetvalue(ho, row, 0), user) == 0; row++) {
                        all[nall++] = PQgetvalue(ho, row, 1);
                        if (PQgetvalue(ho, row, 2)[0] == 't')
                                fresh[nfresh++] = PQgetvalue(ho, row, 1);
                }
                build(gguide, user, "daily_mix", cut_ms, ids[0], &n[0], buf[0], &checks);
                build(gcfg, user, "daily_mix", cut_ms, ids[1], &n[1], buf[1], &checks);
                n[2] = 0;
                for (int i = 0; i < PQntuples(pop); i++)
                        ids[2][n[2]++] = PQgetvalue(pop, i, 0);
                score(&m[0], ids[0], n[0], k, all, nall);
                score(&m[1], ids[1], n[1], k, all, nall);
                score(&m[2], ids[2], n[2], k, all, nall);
                built += 2;
                if (nfresh == 0)
                        continue;
                score(&m[6], ids[0], n[0], k, fresh, nfresh);
                score(&m[7], ids[1], n[1], k, fresh, nfresh);
                build(gguide, user, "discovery_weekly", cut_ms, ids[3], &n[3], buf[3], &checks);
                build(gcfg, user, "discovery_weekly", cut_ms, ids[4], &n[4], buf[4], &checks);
                const char *vp[] = {user, cut};
                PGresult *pu = q(pg,
                                 "SELECT e.track_id::text FROM eval_pop e WHERE NOT EXISTS "
                                 "(SELECT 1 FROM play_history h WHERE h.user_id = $1::uuid AND "
                                 "h.track_id = e.track_id AND h.played_at < $2::timestamptz) "
                                 "ORDER BY e.rk LIMIT 50",
                                 2, vp);
                n[5] = 0;
                for (int i = 0; i < PQntuples(pu); i++) {
                        memcpy(buf[5][n[5]], PQgetvalue(pu, i, 0), PL_ID_LEN);
                        ids[5][n[5]] = buf[5][n[5]];
                        n[5]++;
                }
                PQclear(pu);
                score(&m[3], ids[3], n[3], k, fresh, nfresh);
                score(&m[4], ids[4], n[4], k, fresh, nfresh);
                score(&m[5], ids[5], n[5], k, fresh, nfresh);
                /* popularity without the user's played tracks: a played one is never new */
                score(&m[8], ids[5], n[5], k, fresh, nfresh);
                built += 2;
        }
        double t_build = qz_clock_mono_s() - t1;

        printf("data: %ld plays; cut-off %s, %ld held-out days; %d users evaluated; "
               "held-out (user, track) pairs %d, of which never played before %ld "
               "(%ld of those released in the 90 days before the cut-off)\n",
               nplays, cut, holdout, nu, nho, fresh_total, fresh_recent);
        printf("similarities as of the cut-off: %s (%.1f s); %ld playlists built in %.1f s "
               "(%.1f/s, one connection, batch path; the first %ld also by the per-request SQL: "
               "identical)\n",
               jr.message, t_sim, built, t_build, t_build > 0 ? (double)built / t_build : 0,
               checked - checks);
        printf("%-29s %6s %9s %9s %9s\n", "list (K=50)", "users", "hit_rate", "recall", "ndcg");
        for (int i = 0; i < NLISTS; i++) {
                double d = m[i].users ? (double)m[i].users : 1;
                printf("%-29s %6ld %9.4f %9.4f %9.4f\n", list_names[i], m[i].users, m[i].hits / d,
                       m[i].recall / d, m[i].ndcg / d);
        }
        static const char *const table_names[3] = {"daily_mix", "discovery_weekly",
                                                   "daily_mix, new tracks only"};
        for (int b = 0; b < 3; b++) {
                const struct metric *cf = &m[b * 3 + 1], *gd = &m[b * 3], *pp = &m[b * 3 + 2];
                printf("%s: cf/guide hit rate %.2fx, ndcg %.2fx; cf/popularity hit rate %.2fx, "
                       "ndcg %.2fx%s\n",
                       table_names[b], gd->hits > 0 ? cf->hits / gd->hits : 0,
                       gd->ndcg > 0 ? cf->ndcg / gd->ndcg : 0,
                       pp->hits > 0 ? cf->hits / pp->hits : 0,
                       pp->ndcg > 0 ? cf->ndcg / pp->ndcg : 0,
                       b < 2 ? " (targets: >= 1.5x guide, >= 2x popularity)"
                             : " (a diagnostic: what the variants differ in; no target)");
        }
        free(all);
        free(fresh);
        PQclear(ho);
        PQclear(users);
        PQclear(pop);
        pl_gen_free(gguide);
        pl_gen_free(gcfg);
        qz_pg_free(pg2);
        qz_pg_free(pg);
        return 0;
}
