/* test_metrics.c - Prometheus registry: exact exposition text, identity, concurrency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void test_render_exact(void **state)
{
        (void)state;
        struct qz_metrics *m = qz_metrics_new();
        static const double bounds[] = {0.1, 0.5, 1};

        struct qz_metric *ok = qz_metrics_counter(m, "plays_total", "result=\"ok\"", "Plays seen");
        struct qz_metric *g = qz_metrics_gauge(m, "lag", NULL, "Consumer lag\nin messages");
        struct qz_metric *bad =
            qz_metrics_counter(m, "plays_total", "result=\"bad\"", "ignored second help");
        struct qz_metric *h =
            qz_metrics_histogram(m, "req_seconds", "route=\"/x\"", "Latency", bounds, 3);
        struct qz_metric *h2 = qz_metrics_histogram(m, "plain_seconds", "", "No labels", bounds, 1);

        assert_non_null(ok);
        assert_non_null(g);
        assert_non_null(bad);
        assert_non_null(h);
        qz_metric_inc(ok);
        qz_metric_add(ok, 2);
        qz_metric_add(ok, -5); /* refused: counters never go down */
        qz_metric_inc(bad);
        qz_metric_set(g, 12.5);
        qz_metric_observe(h, 0.05);
        qz_metric_observe(h, 0.5); /* le is inclusive */
        qz_metric_observe(h, 3);
        qz_metric_observe(h2, 0.25);
        assert_true(qz_metric_value(ok) == 3.0);
        assert_true(qz_metric_value(g) == 12.5);

        char *text = qz_metrics_render(m);
        assert_non_null(text);
        assert_string_equal(text, "# HELP plays_total Plays seen\n"
                                  "# TYPE plays_total counter\n"
                                  "plays_total{result=\"ok\"} 3\n"
                                  "plays_total{result=\"bad\"} 1\n"
                                  "# HELP lag Consumer lag\\nin messages\n"
                                  "# TYPE lag gauge\n"
                                  "lag 12.5\n"
                                  "# HELP req_seconds Latency\n"
                                  "# TYPE req_seconds histogram\n"
                                  "req_seconds_bucket{route=\"/x\",le=\"0.1\"} 1\n"
                                  "req_seconds_bucket{route=\"/x\",le=\"0.5\"} 2\n"
                                  "req_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
                                  "req_seconds_bucket{route=\"/x\",le=\"+Inf\"} 3\n"
                                  "req_seconds_sum{route=\"/x\"} 3.55\n"
                                  "req_seconds_count{route=\"/x\"} 3\n"
                                  "# HELP plain_seconds No labels\n"
                                  "# TYPE plain_seconds histogram\n"
                                  "plain_seconds_bucket{le=\"0.1\"} 0\n"
                                  "plain_seconds_bucket{le=\"+Inf\"} 1\n"
                                  "plain_seconds_sum 0.25\n"
                                  "plain_seconds_count 1\n");
        free(text);
        qz_metrics_free(m);
}

static void test_identity_and_types(void **state)
{
        (void)state;
        struct qz_metrics *m = qz_metrics_new();

        struct qz_metric *a = qz_metrics_counter(m, "x_total", NULL, "x");
        assert_ptr_equal(a, qz_metrics_counter(m, "x_total", "", "x"));
        assert_ptr_not_equal(a, qz_metrics_counter(m, "x_total", "k=\"v\"", "x"));
        /* one name cannot be two types */
        assert_null(qz_metrics_gauge(m, "x_total", NULL, "x"));
        /* gauges go down; set on a counter is ignored */
        struct qz_metric *g = qz_metrics_gauge(m, "g", NULL, "g");
        qz_metric_set(g, 5);
        qz_metric_add(g, -7);
        assert_true(qz_metric_value(g) == -2.0);
        qz_metric_set(a, 100);
        assert_true(qz_metric_value(a) == 0.0);
        /* NULL metrics are no-ops, so a failed creation never crashes a hot path */
        qz_metric_inc(NULL);
        qz_metric_observe(NULL, 1);
        qz_metrics_free(m);
}

static void test_default_buckets(void **state)
{
        (void)state;
        struct qz_metrics *m = qz_metrics_new();
        qz_metric_observe(qz_metrics_histogram(m, "d_seconds", NULL, "d", NULL, 0), 0.002);
        char *text = qz_metrics_render(m);
        assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.001\"} 0\n"));
        assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert_non_null(strstr(text, "d_seconds_bucket{le=\"10\"} 1\n"));
        assert_non_null(strstr(text, "d_seconds_bucket{le=\"+Inf\"} 1\n"));
        free(text);
        qz_metrics_free(m);
}

#define THREADS    4
#define PER_THREAD 100000

struct hammer {
        struct qz_metric *c, *h;
};

static void *hammer_cb(void *arg)
{
        struct hammer *hm = arg;
        for (int i = 0; i < PER_THREAD; i++) {
                qz_metric_inc(hm->c);
                qz_metric_observe(hm->h, 0.5);
        }
        return NULL;
}

static void test_concurrent_updates(void **state)
{
        (void)state;
        struct qz_metrics *m = qz_metrics_new();
        struct hammer hm = {qz_metrics_counter(m, "c_total", NULL, "c"),
                            qz_metrics_histogram(m, "h_seconds", NULL, "h", NULL, 0)};
        pthread_t t[THREADS];

        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_create(&t[i], NULL, hammer_cb, &hm), 0);
        for (int i = 0; i < THREADS; i++)
                pthread_join(t[i], NULL);
        assert_true(qz_metric_value(hm.c) == (double)THREADS * PER_THREAD);
        char *text = qz_metrics_render(m);
        assert_non_null(strstr(text, "h_seconds_count 400000\n"));
        assert_non_null(strstr(text, "h_seconds_sum 200000\n"));
        free(text);
        qz_metrics_free(m);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_render_exact),
            cmocka_unit_test(test_identity_and_types),
            cmocka_unit_test(test_default_buckets),
            cmocka_unit_test(test_concurrent_updates),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
