/* test_trending_window.c - trending window arithmetic: bucket expiry at the edges, late and
 * duplicate events, repeated listeners across buckets, and a randomized check against a
 * brute-force recount of the same plays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/trending-ranker/window.h"

#include <stdlib.h>
#include <string.h>

#define H     WINDOW_HOUR_MS
#define T0    (1780000000000LL / H * H) /* an hour boundary */
#define PARTS 4

static struct window_play play(int ev, int user, int track, int64_t at)
{
        struct window_play p;
        memset(&p, 0, sizeof(p));
        memcpy(p.event_id, &ev, sizeof(ev));
        p.event_id[15] = 0xE;
        memcpy(p.user_id, &user, sizeof(user));
        p.user_id[15] = 0xA;
        memcpy(p.track_id, &track, sizeof(track));
        p.track_id[15] = 0x7;
        p.played_at_ms = at;
        return p;
}

static struct window_counts counts(struct window *w, int track)
{
        struct window_counts sum = {0};
        uint8_t id[16] = {0};
        memcpy(id, &track, sizeof(track));
        id[15] = 0x7;
        int64_t ti = window_track_intern(w, id);
        for (int p = 0; p < PARTS; p++) {
                size_t n;
                const struct window_counts *c = window_part_counts(w, p, &n);
                if (c && (size_t)ti < n) {
                        sum.plays_24h += c[ti].plays_24h;
                        sum.plays_7d += c[ti].plays_7d;
                        sum.listeners_24h += c[ti].listeners_24h;
                        sum.listeners_7d += c[ti].listeners_7d;
                }
        }
        return sum;
}

#define EXPECT(w, track, p24, p7, l24, l7)                                                         \
        do {                                                                                       \
                struct window_counts c_ = counts(w, track);                                        \
                assert_int_equal(c_.plays_24h, p24);                                               \
                assert_int_equal(c_.plays_7d, p7);                                                 \
                assert_int_equal(c_.listeners_24h, l24);                                           \
                assert_int_equal(c_.listeners_7d, l7);                                             \
        } while (0)

static void test_edges(void **state)
{
        (void)state;
        struct window *w = window_new(H, PARTS, T0);
        struct window_play p;
        /* exactly 24 h before now (a boundary): inside both windows; 1 ms earlier: 7 d only */
        p = play(1, 1, 1, T0 - 24 * H);
        assert_int_equal(window_add(w, 0, &p, false), WINDOW_ADDED);
        p = play(2, 2, 1, T0 - 24 * H - 1);
        assert_int_equal(window_add(w, 0, &p, false), WINDOW_ADDED);
        /* exactly 7 d before: inside; 1 ms earlier: too old */
        p = play(3, 3, 1, T0 - 168 * H);
        assert_int_equal(window_add(w, 0, &p, false), WINDOW_ADDED);
        p = play(4, 4, 1, T0 - 168 * H - 1);
        assert_int_equal(window_add(w, 0, &p, false), WINDOW_TOO_OLD);
        EXPECT(w, 1, 1, 3, 1, 3);
        /* one ms before the next hour: nothing moves */
        window_advance(w, T0 + H - 1);
        EXPECT(w, 1, 1, 3, 1, 3);
        /* the next hour: the T0-24h play leaves 24 h, the T0-7d play leaves 7 d */
        window_advance(w, T0 + H);
        EXPECT(w, 1, 0, 2, 0, 2);
        /* bucket T0-25h (the T0-24h-1ms play) leaves 7 d one hour before bucket T0-24h */
        window_advance(w, T0 + 143 * H);
        EXPECT(w, 1, 0, 2, 0, 2);
        window_advance(w, T0 + 144 * H);
        EXPECT(w, 1, 0, 1, 0, 1);
        window_advance(w, T0 + 145 * H);
        EXPECT(w, 1, 0, 0, 0, 0);
        struct window_stats st;
        window_stats(w, &st);
        assert_int_equal(st.pairs, 0);
        assert_int_equal(st.event_ids, 0);
        window_free(w);
}

static void test_repeat_listener_and_duplicates(void **state)
{
        (void)state;
        struct window *w = window_new(H, PARTS, T0);
        struct window_play p;
        /* one user plays track 9 at -30h, -2h, -2h (same bucket) and -1h: 4 plays, 1 listener */
        int64_t at[] = {T0 - 30 * H, T0 - 2 * H, T0 - 2 * H + 5, T0 - H};
        for (int i = 0; i < 4; i++) {
                p = play(10 + i, 5, 9, at[i]);
                assert_int_equal(window_add(w, 1, &p, false), WINDOW_ADDED);
        }
        EXPECT(w, 9, 3, 4, 1, 1);
        /* the same event again (a player retry, even with another played_at): counted once */
        p = play(11, 5, 9, T0 - 3 * H);
        assert_int_equal(window_add(w, 1, &p, false), WINDOW_DUPLICATE);
        EXPECT(w, 9, 3, 4, 1, 1);
        /* a late play (older than the user's latest) changes plays only */
        p = play(20, 5, 9, T0 - 50 * H);
        assert_int_equal(window_add(w, 1, &p, false), WINDOW_ADDED);
        EXPECT(w, 9, 3, 5, 1, 1);
        /* 23 h later the -2h plays have left 24 h, the -1h play keeps the listener */
        window_advance(w, T0 + 23 * H);
        EXPECT(w, 9, 1, 5, 1, 1);
        window_advance(w, T0 + 24 * H);
        EXPECT(w, 9, 0, 5, 0, 1);
        /* a second listener in another partition adds up */
        p = play(30, 6, 9, T0 + 24 * H);
        assert_int_equal(window_add(w, 2, &p, false), WINDOW_ADDED);
        EXPECT(w, 9, 1, 6, 1, 2);
        /* the user comes back: 24 h listener again, still one 7 d listener */
        p = play(31, 5, 9, T0 + 24 * H + 1);
        assert_int_equal(window_add(w, 1, &p, false), WINDOW_ADDED);
        EXPECT(w, 9, 2, 7, 2, 2);
        /* dropping a partition removes exactly its share */
        window_drop_part(w, 1);
        EXPECT(w, 9, 1, 1, 1, 1);
        window_free(w);
}

static void test_score(void **state)
{
        (void)state;
        struct window_counts c = {1, 2, 1, 1};
        assert_true(window_score(&c) == 0); /* fewer than 3 plays in 7 d */
        c = (struct window_counts){2, 3, 1, 2};
        assert_true(window_score(&c) == 10 * 2 + 2 * 3 + 20 * 1 + 5 * 2);
}

/* Random plays, duplicates, late events and clock moves against a recount from scratch. */
static void test_random_against_recount(void **state)
{
        (void)state;
        enum { N = 20000, TRACKS = 40, USERS = 60 };
        struct window_play *all = calloc(N, sizeof(*all));
        bool *kept = calloc(N, sizeof(*kept));
        int *evs = calloc(N, sizeof(*evs));
        srand(7);
        int64_t now = T0;
        struct window *w = window_new(H, PARTS, now);
        for (int i = 0; i < N; i++) {
                if (i % 500 == 499) {
                        now += (rand() % 7) * H + rand() % H;
                        window_advance(w, now);
                }
                int ev = (i > 0 && rand() % 20 == 0) ? evs[rand() % i] : i + 1;
                int user = rand() % USERS, track = rand() % TRACKS;
                int64_t at = now - (int64_t)(rand() % (200 * 60)) * 60000 + rand() % 60000;
                if (ev != i + 1) { /* a duplicate keeps its user (same key, same partition) */
                        for (int j = 0; j < i; j++)
                                if (evs[j] == ev) {
                                        user = 0;
                                        memcpy(&user, all[j].user_id, sizeof(user));
                                        break;
                                }
                }
                evs[i] = ev;
                all[i] = play(ev, user, track, at);
                enum window_result r = window_add(w, user % PARTS, &all[i], false);
                kept[i] = r == WINDOW_ADDED;
                int64_t cur = now / H;
                if (ev == i + 1)
                        assert_int_equal(r, at / H < cur - 168 ? WINDOW_TOO_OLD : WINDOW_ADDED);
        }
        /* recount: every kept play with bucket >= lower bound */
        int64_t cur = window_cur_bucket(w);
        for (int t = 0; t < TRACKS; t++) {
                struct window_counts want = {0};
                int64_t latest[USERS];
                for (int u = 0; u < USERS; u++)
                        latest[u] = INT64_MIN;
                for (int i = 0; i < N; i++) {
                        int tr = 0, u = 0;
                        memcpy(&tr, all[i].track_id, sizeof(tr));
                        memcpy(&u, all[i].user_id, sizeof(u));
                        int64_t b = all[i].played_at_ms / H;
                        if (!kept[i] || tr != t || b < cur - 168)
                                continue;
                        want.plays_7d++;
                        want.plays_24h += b >= cur - 24;
                        if (b > latest[u])
                                latest[u] = b;
                }
                for (int u = 0; u < USERS; u++) {
                        want.listeners_7d += latest[u] >= cur - 168;
                        want.listeners_24h += latest[u] >= cur - 24;
                }
                EXPECT(w, t, want.plays_24h, want.plays_7d, want.listeners_24h, want.listeners_7d);
        }
        window_free(w);
        free(all);
        free(kept);
        free(evs);
}

static int readd(void *arg, const struct window_play *plays, size_t n)
{
        void **a = arg;
        struct window *w = a[0];
        int part = *(int *)a[1];
        for (size_t i = 0; i < n; i++)
                if (window_add(w, part, &plays[i], false) != WINDOW_ADDED)
                        return -1;
        return 0;
}

/* A checkpoint written from the window's own state (window_export, after a rebuild) restores
 * the same counts, pairs and dedup, and expires the same way afterwards. */
static void test_export_roundtrip(void **state)
{
        (void)state;
        enum { N = 20000, TRACKS = 40, USERS = 60 };
        struct window_play *all = calloc(N, sizeof(*all));
        bool *kept = calloc(N, sizeof(*kept));
        srand(11);
        int64_t now = T0 + 1234;
        struct window *w = window_new(H, PARTS, now);
        for (int i = 0; i < N; i++) {
                if (i % 2000 == 1999)
                        window_advance(w, now += (rand() % 5) * H + rand() % H);
                int user = rand() % USERS, ev = i % 10 == 9 ? i : i + 1; /* some duplicates */
                /* late plays, plays up to 2 h ahead, plays before the window */
                int64_t at = now - (int64_t)(rand() % (180 * 60)) * 60000 + 2 * H;
                all[i] = play(ev, user, rand() % TRACKS, at);
                kept[i] = window_add(w, user % PARTS, &all[i], false) == WINDOW_ADDED;
        }
        struct window *w2 = window_new(H, PARTS, now);
        for (int p = 0; p < PARTS; p++) {
                void *arg[] = {w2, &p};
                assert_int_equal(window_export(w, p, readd, arg), 0);
        }
        for (int round = 0; round < 3; round++) {
                struct window_stats a, b;
                window_stats(w, &a);
                window_stats(w2, &b);
                assert_int_equal(a.plays_7d, b.plays_7d);
                assert_int_equal(a.pairs, b.pairs);
                assert_int_equal(a.event_ids, b.event_ids);
                for (int t = 0; t < TRACKS; t++) {
                        struct window_counts c = counts(w, t);
                        EXPECT(w2, t, c.plays_24h, c.plays_7d, c.listeners_24h, c.listeners_7d);
                }
                now += 20 * H + H / 2; /* plays leave the 24 h, then the 7 d window */
                window_advance(w, now);
                window_advance(w2, now);
        }
        /* the restored dedup refuses the original events still in the window */
        for (int i = 0; i < N; i++) {
                int user = 0;
                memcpy(&user, all[i].user_id, sizeof(user));
                if (kept[i] && all[i].played_at_ms / H >= window_cur_bucket(w2) - 168)
                        assert_int_equal(window_add(w2, user % PARTS, &all[i], false),
                                         WINDOW_DUPLICATE);
        }
        window_free(w);
        window_free(w2);
        free(all);
        free(kept);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_edges),
            cmocka_unit_test(test_repeat_listener_and_duplicates),
            cmocka_unit_test(test_score),
            cmocka_unit_test(test_random_against_recount),
            cmocka_unit_test(test_export_roundtrip),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
