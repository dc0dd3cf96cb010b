/* test_stats_aggregator.c - the stats-aggregator's pure helpers (cmocka).
 *
 * The stats arithmetic itself is SQL (sql/010_listening_stats.sql) and is checked against
 * the oracle by tests/integration/it_stats_aggregator.c; here: the advisory-lock partition
 * list every batch passes to it. */
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

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(partitions_literal),
            cmocka_unit_test(partitions_literal_too_small),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
