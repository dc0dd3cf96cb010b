/* test_stats_aggregator.c - the stats-aggregator's pure helpers (cmocka).
 *
 * The stats arithmetic is checked against the SQL oracle by the integration tests
 * (it_stats_aggregator, it_stats_store); here: the advisory-lock partition list every batch
 * passes to Postgres, and the batch sums of the direct path (counts.h: UTC hour/weekday,
 * grouping per user and per (user, track), uuid case). */
#include "../../services/stats-aggregator/counts.h"
#include "../../services/stats-aggregator/history.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void partitions_literal(void **state)
{
        (void)state;
        static const struct {
                int32_t parts[8];
                size_t n;
                const char *want; /* NULL: -1 expected */
        } cases[] = {
            {{0}, 0, "{}"},
            {{5}, 1, "{5}"},
            {{17, 3, 17, 0, 3}, 5, "{0,3,17}"},
            {{23, 22, 21, 20}, 4, "{20,21,22,23}"},
            {{1023}, 1, "{1023}"},
            {{1024}, 1, NULL},
            {{-1}, 1, NULL},
        };
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
                struct qz_kafka_msg msgs[8];
                char out[64];
                memset(msgs, 0, sizeof(msgs));
                for (size_t i = 0; i < cases[c].n; i++)
                        msgs[i].partition = cases[c].parts[i];
                int rc = history_partitions_literal(msgs, cases[c].n, out, sizeof(out));
                if (!cases[c].want) {
                        assert_int_equal(rc, -1);
                        continue;
                }
                assert_int_equal(rc, 0);
                assert_string_equal(out, cases[c].want);
        }
}

static void partitions_literal_too_small(void **state)
{
        (void)state;
        struct qz_kafka_msg msgs[3] = {{.partition = 10}, {.partition = 11}, {.partition = 12}};
        char out[8];
        assert_int_equal(history_partitions_literal(msgs, 3, out, sizeof(out)), -1);
        assert_int_equal(history_partitions_literal(msgs, 1, out, sizeof(out)), 0);
        assert_string_equal(out, "{10}");
}

static void hour_day(void **state)
{
        (void)state;
        static const struct {
                int64_t ms;
                int hour, day;
        } cases[] = {
            {0, 0, 4},                         /* 1970-01-01 00:00, Thursday */
            {-1, 23, 3},                       /* 1969-12-31 23:59:59.999, Wednesday */
            {-86400000, 0, 3},                 /* 1969-12-31 00:00 */
            {-86400001, 23, 2},                /* 1969-12-30 23:59:59.999, Tuesday */
            {1767225600000LL, 0, 4},           /* 2026-01-01 00:00, Thursday */
            {1767484799999LL, 23, 6},          /* 2026-01-03 23:59:59.999, Saturday */
            {1767484800000LL, 0, 0},           /* 2026-01-04 00:00, Sunday */
            {1767484800000LL + 3600000, 1, 0}, /* 01:00 */
        };
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
                int h = -1, d = -1;
                counts_hour_day(cases[c].ms, &h, &d);
                assert_int_equal(h, cases[c].hour);
                assert_int_equal(d, cases[c].day);
        }
}

static void set_row(struct history_row *r, const char *user, const char *track, int64_t ms,
                    int64_t dur)
{
        memset(r, 0, sizeof(*r));
        strcpy(r->user_id, user);
        strcpy(r->track_id, track);
        r->played_ms = ms;
        r->duration_ms = dur;
}

static void build_sums(void **state)
{
        (void)state;
        const char *u1 = "00000000-0000-4000-8000-00000000000a",
                   *u1up = "00000000-0000-4000-8000-00000000000A",
                   *u0 = "00000000-0000-4000-8000-000000000001",
                   *t1 = "10000000-0000-4000-8000-000000000001",
                   *t2 = "20000000-0000-4000-8000-000000000002";
        struct history_row rows[5];
        set_row(&rows[0], u1, t2, 1767484800000LL, 100);   /* Sunday 00h */
        set_row(&rows[1], u0, t1, 0, 5);                   /* Thursday 00h */
        set_row(&rows[2], u1up, t2, 1767484799999LL, 200); /* same user, Saturday 23h */
        set_row(&rows[3], u1, t1, 1767484800000LL, 300);
        set_row(&rows[4], u0, t1, -1, 7); /* Wednesday 23h */
        struct counts c;
        char err[128];
        assert_int_equal(counts_build(rows, 5, &c, err, sizeof(err)), 0);
        assert_int_equal(c.nusers, 2);
        assert_string_equal(c.users[0].user_id, u0); /* sorted by key */
        assert_int_equal(c.users[0].plays, 2);
        assert_int_equal(c.users[0].ms, 12);
        assert_int_equal(c.users[0].hour[0], 1);
        assert_int_equal(c.users[0].hour[23], 1);
        assert_int_equal(c.users[0].day[4], 1);
        assert_int_equal(c.users[0].day[3], 1);
        assert_string_equal(c.users[1].user_id, u1); /* lower-cased */
        assert_int_equal(c.users[1].plays, 3);
        assert_int_equal(c.users[1].ms, 600);
        assert_int_equal(c.users[1].day[0], 2);
        assert_int_equal(c.users[1].day[6], 1);
        assert_int_equal(c.users[1].hour[0], 2);
        assert_int_equal(c.users[1].hour[23], 1);
        long long sum = 0;
        for (int k = 0; k < 24; k++)
                sum += c.users[1].hour[k];
        assert_int_equal(sum, 3);
        assert_int_equal(c.npairs, 3);
        assert_string_equal(c.pairs[0].user_id, u0);
        assert_string_equal(c.pairs[0].track_id, t1);
        assert_int_equal(c.pairs[0].plays, 2);
        assert_string_equal(c.pairs[1].track_id, t1);
        assert_int_equal(c.pairs[1].plays, 1);
        assert_string_equal(c.pairs[2].user_id, u1);
        assert_string_equal(c.pairs[2].track_id, t2);
        assert_int_equal(c.pairs[2].plays, 2);
        counts_free(&c);
        assert_int_equal(counts_build(rows, 0, &c, err, sizeof(err)), 0);
        assert_int_equal(c.nusers + c.npairs, 0);
        counts_free(&c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(partitions_literal),
            cmocka_unit_test(partitions_literal_too_small),
            cmocka_unit_test(hour_day),
            cmocka_unit_test(build_sums),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
