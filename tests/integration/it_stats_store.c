/* it_stats_store.c - the stats-aggregator's store path (history_store) on both of its paths.
 *
 * Against the harness's Postgres, without Kafka: batches go straight to history_store, as
 * the consume loop hands them over. The direct path (COPY into play_history, the counters
 * from the batch's own sums) must run for a batch of new plays; the staging path (rollback
 * to the savepoint, ON CONFLICT dedup) for a batch holding an event_id already stored, one
 * repeated inside the batch, and a whole batch redelivered. After each batch the counters
 * must equal a recomputation from play_history, and after a render every user's stats
 * must equal listening_stats_oracle. Also: two spellings (case) of one uuid in one direct
 * batch are one counter row, the UTC hour/weekday edges (Saturday 23:59:59.999 /
 * Sunday 00:00, before 1970), and a 20000-play batch redelivered (Postgres refuses the
 * direct COPY while it is still being sent). */
#include "../../services/stats-aggregator/history.h"
#include "../../services/stats-aggregator/render.h"
#include "json.h"
#include "log.h"
#include "pg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                                  \
        do {                                                                                       \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fprintf(stderr, "\n");                                                             \
                exit(1);                                                                           \
        } while (0)

/* this test's ids: users 5157a000-…, tracks 5157b000-…, artist 5157c000-…, events 5157e000-… */
#define USERS                                                                                      \
        "ARRAY['5157a000-0000-4000-8000-000000000001','5157a000-0000-4000-8000-000000000002',"     \
        "'5157a000-0000-4000-8000-000000000003']::uuid[]"

static long sql_long(struct qz_pg *pg, const char *q)
{
        char err[512];
        PGresult *r = qz_pg_query(pg, q, 0, NULL, err, sizeof(err));
        if (!r)
                FAIL("%s: %s", q, err);
        long x = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        return x;
}

static void sql_exec(struct qz_pg *pg, const char *q)
{
        char err[512];
        if (qz_pg_exec(pg, q, err, sizeof(err)) != 0)
                FAIL("%s: %s", q, err);
}

/* One play: event n, user u (1..3), track t (0..2 catalog, 9 = not in the catalog). */
static void play(struct history_row *r, int n, int u, int t, int64_t played_ms, bool upper)
{
        memset(r, 0, sizeof(*r));
        snprintf(r->event_id, sizeof(r->event_id), "5157e000-0000-4000-8000-%012d", n);
        snprintf(r->user_id, sizeof(r->user_id), "5157a000-0000-4000-8000-%012d", u);
        snprintf(r->track_id, sizeof(r->track_id), "5157b000-0000-4000-8000-%012d", t);
        if (upper)
                for (char *p = r->user_id; *p; p++)
                        *p = (char)toupper((unsigned char)*p);
        if (qz_time_format(played_ms, r->played_at, sizeof(r->played_at)) != 0)
                FAIL("time %lld", (long long)played_ms);
        r->played_ms = played_ms;
        r->duration_ms = 1000 + n;
        snprintf(r->duration, sizeof(r->duration), "%lld", (long long)r->duration_ms);
        r->completed = "t";
        r->source = "album";
        r->device_type = "web";
        const char *v[9] = {r->event_id,  r->user_id, r->track_id,    r->played_at, r->duration,
                            r->completed, r->source,  r->device_type, NULL};
        memcpy(r->values, v, sizeof(v));
}

/* The counters of this test's users equal a recomputation from play_history. */
static void require_counters_exact(struct qz_pg *pg, const char *what)
{
        long d = sql_long(
            pg, "SELECT count(*) FROM ("
                "(SELECT user_id, track_id, count(*) FROM play_history WHERE user_id = ANY(" USERS
                ") GROUP BY 1, 2 EXCEPT SELECT user_id, track_id, plays FROM user_track_plays "
                "WHERE user_id = ANY(" USERS ")) UNION ALL "
                "(SELECT user_id, track_id, plays FROM user_track_plays WHERE user_id = ANY(" USERS
                ") EXCEPT SELECT user_id, track_id, count(*) FROM play_history WHERE user_id = "
                "ANY(" USERS ") GROUP BY 1, 2)) x");
        if (d != 0)
                FAIL("%s: %ld user_track_plays rows differ from play_history", what, d);
        /* totals: plays, ms and every hour / weekday column */
        d = sql_long(
            pg, "SELECT count(*) FROM user_play_totals c FULL JOIN (SELECT user_id, count(*) AS n, "
                "sum(duration_played_ms) AS ms, "
                "array_agg(extract(hour FROM played_at AT TIME ZONE 'UTC')::int) AS hs, "
                "array_agg(extract(dow FROM played_at AT TIME ZONE 'UTC')::int) AS ds "
                "FROM play_history WHERE user_id = ANY(" USERS ") GROUP BY 1) h USING (user_id) "
                "WHERE (c.user_id IS NULL OR c.user_id = ANY(" USERS ")) AND ("
                "c.plays IS DISTINCT FROM h.n OR c.ms IS DISTINCT FROM h.ms OR "
                "ARRAY[h00,h01,h02,h03,h04,h05,h06,h07,h08,h09,h10,h11,h12,h13,h14,h15,h16,h17,"
                "h18,h19,h20,h21,h22,h23] IS DISTINCT FROM "
                "(SELECT array_agg((SELECT count(*) FROM unnest(h.hs) x WHERE x = k)::bigint "
                "ORDER BY k) FROM generate_series(0, 23) k) OR "
                "ARRAY[d0,d1,d2,d3,d4,d5,d6] IS DISTINCT FROM "
                "(SELECT array_agg((SELECT count(*) FROM unnest(h.ds) x WHERE x = k)::bigint "
                "ORDER BY k) FROM generate_series(0, 6) k))");
        if (d != 0)
                FAIL("%s: %ld user_play_totals rows differ from play_history", what, d);
}

static void store(struct qz_pg *pg, struct history_row *rows, size_t n, long want_inserted,
                  long want_unknown, bool want_deduped, const char *what)
{
        char err[512];
        struct history_stored st;
        if (history_store(pg, rows, n, "{0}", &st, err, sizeof(err)) != 0)
                FAIL("%s: history_store: %s", what, err);
        if (st.inserted != want_inserted || st.unknown != want_unknown ||
            st.deduped != want_deduped)
                FAIL("%s: inserted %ld unknown %ld deduped %d, want %ld %ld %d", what, st.inserted,
                     st.unknown, st.deduped, want_inserted, want_unknown, want_deduped);
        require_counters_exact(pg, what);
}

/* Renders every pending mark, then this test's users' stats equal listening_stats_oracle. */
static void require_rendered_equal_oracle(struct qz_pg *pg, const char *what)
{
        char err[512];
        struct render_result rr;
        do {
                if (render_once(pg, &rr, err, sizeof(err)) != 0)
                        FAIL("render: %s", err);
        } while (rr.users > 0);
        long d = sql_long(
            pg,
            "SELECT count(*) FROM (SELECT * FROM listening_stats_oracle WHERE user_id = ANY(" USERS
            ")) o FULL JOIN (SELECT * FROM user_listening_stats WHERE user_id = ANY(" USERS
            ")) s USING (user_id) WHERE (o.total_plays, o.total_listening_time_ms, "
            "o.favorite_genres, o.favorite_artists, o.top_tracks, o.listening_patterns) IS "
            "DISTINCT FROM (s.total_plays, s.total_listening_time_ms, s.favorite_genres, "
            "s.favorite_artists, s.top_tracks, s.listening_patterns)");
        if (d != 0)
                FAIL("%s: %ld users' stats differ from listening_stats_oracle", what, d);
        if (sql_long(pg, "SELECT count(*) FROM user_listening_stats WHERE user_id = ANY(" USERS
                         ")") != 3)
                FAIL("%s: not every user has a stats row", what);
}

int main(void)
{
        char err[512];
        const char *dsn = getenv("QZ_TEST_PG_DSN");
        if (!dsn || !*dsn)
                FAIL("QZ_TEST_PG_DSN is not set");
        qz_log_init("it_stats_store", QZ_LOG_WARN);
        struct qz_pg_opts o = {.dsn = dsn, .application_name = "it_stats_store"};
        struct qz_pg *pg = qz_pg_new(&o, err, sizeof(err));
        if (!pg || qz_pg_connect(pg, err, sizeof(err)) != 0)
                FAIL("postgres: %s", err);
        sql_exec(pg, "INSERT INTO artists (id, name) VALUES "
                     "('5157c000-0000-4000-8000-000000000000', 'it_stats_store artist')");
        sql_exec(pg, "INSERT INTO tracks (id, title, artist_id, genres) SELECT "
                     "('5157b000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 't' || i, "
                     "'5157c000-0000-4000-8000-000000000000', ARRAY['rock', 'jazz']::text[] "
                     "FROM generate_series(0, 2) i");

        struct history_row rows[8];
        /* A: all new, one unknown track, edges of hour/day: the direct path */
        play(&rows[0], 1, 1, 0, 1767312000000LL, false); /* Friday 2026-01-02 00:00:00 UTC */
        play(&rows[1], 2, 1, 0, 1767398399999LL, false); /* Friday 23:59:59.999 */
        play(&rows[2], 3, 1, 1, -1, false);              /* 1969-12-31 23:59:59.999, a Wednesday */
        play(&rows[3], 4, 2, 2, 1767484800000LL, false); /* 2026-01-04 00:00, a Sunday */
        play(&rows[4], 5, 2, 9, 1767484799999LL, false); /* Saturday 23:59:59.999 */
        play(&rows[5], 6, 3, 1, 1767225600000LL, false);
        store(pg, rows, 6, 6, 1, false, "A (new plays)");
        struct history_row a[6];
        memcpy(a, rows, sizeof(a));

        /* B: two plays already stored, one new: the staging path, only the new one counts */
        play(&rows[0], 1, 1, 0, 1767312000000LL, false);
        play(&rows[1], 7, 3, 2, 1767312000000LL + 3600000, false);
        play(&rows[2], 4, 2, 2, 1767484800000LL, false);
        store(pg, rows, 3, 1, 0, true, "B (duplicates across batches)");

        /* C: one event_id twice in the batch, two new plays */
        play(&rows[0], 8, 2, 0, 1767312000000LL, false);
        play(&rows[1], 9, 2, 0, 1767312000000LL, false);
        play(&rows[2], 8, 2, 0, 1767312000000LL, false);
        store(pg, rows, 3, 2, 0, true, "C (duplicate within a batch)");

        /* D: one user spelled in two cases, same track, all new: still the direct path */
        play(&rows[0], 10, 3, 1, 1767312000000LL, false);
        play(&rows[1], 11, 3, 1, 1767312000000LL, true);
        play(&rows[2], 12, 3, 9, 1767312000000LL, true);
        store(pg, rows, 3, 3, 1, false, "D (uuid case)");

        /* E: batch A redelivered whole (a consumer killed before its offset commit) */
        store(pg, a, 6, 0, 0, true, "E (redelivery)");

        if (sql_long(pg, "SELECT count(*) FROM play_history WHERE user_id = ANY(" USERS ")") != 12)
                FAIL("play_history does not hold the 12 distinct plays");

        require_rendered_equal_oracle(pg, "A-E");
        /* the edges landed where Postgres puts them */
        if (sql_long(pg, "SELECT h23 * 100 + h00 * 10 + d3 FROM user_play_totals WHERE user_id = "
                         "'5157a000-0000-4000-8000-000000000001'") != 211 ||
            sql_long(pg, "SELECT d0 * 100 + d6 * 10 + d5 FROM user_play_totals WHERE user_id = "
                         "'5157a000-0000-4000-8000-000000000002'") != 112)
                FAIL("hour/weekday edges misplaced");
        /* F, G: a big batch, then the same batch redelivered with one new play at its end.
         * The first row is a duplicate, so Postgres refuses the direct COPY while the client
         * is still sending it (not only at its end). Its 231 days start in 2000, far from the
         * windows other tests pin on the shared database (trending's "now" is 200 days back). */
        enum { BIG = 20000 };
        struct history_row *big = calloc(BIG + 1, sizeof(*big));
        if (!big)
                FAIL("memory");
        for (int i = 0; i <= BIG; i++)
                play(&big[i], 1000 + i, 1 + i % 3, i % 4 == 3 ? 9 : i % 3,
                     946684800000LL + (int64_t)i * 997003, i % 2 == 0);
        store(pg, big, BIG, BIG, BIG / 4, false, "F (big batch)");
        store(pg, big, BIG + 1, 1, 0, true, "G (big batch redelivered, one new play)");
        free(big);

        require_rendered_equal_oracle(pg, "F-G");
        printf("it_stats_store: ok\n");
        qz_pg_free(pg);
        return 0;
}
