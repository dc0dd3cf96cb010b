/* metrics.h - Prometheus counters, gauges and histograms, rendered as text.
 *
 * A registry owns every metric created from it; metric pointers stay valid
 * until qz_metrics_free(). Creating is not hot-path (mutex); updating is
 * lock-free (C11 atomics) and safe from any thread. A metric is identified by
 * name plus a fixed label string such as `reason="bad_uuid"` (NULL or "" for
 * none); asking twice for the same pair returns the same metric, so series of
 * one family share one HELP/TYPE header. */
#ifndef QZ_METRICS_H
#define QZ_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct qz_metrics;
struct qz_metric;

struct qz_metrics *qz_metrics_new(void);
void qz_metrics_free(struct qz_metrics *m);

struct qz_metric *qz_metrics_counter(struct qz_metrics *m, const char *name, const char *labels,
                                     const char *help);
struct qz_metric *qz_metrics_gauge(struct qz_metrics *m, const char *name, const char *labels,
                                   const char *help);
/* bounds: ascending upper bounds (seconds or whatever unit the name says);
 * +Inf is added. NULL/0 = default latency buckets 1ms..10s. */
struct qz_metric *qz_metrics_histogram(struct qz_metrics *m, const char *name, const char *labels,
                                       const char *help, const double *bounds, size_t nbounds);

void qz_metric_inc(struct qz_metric *c);
void qz_metric_add(struct qz_metric *c, double v); /* counter: v >= 0 */
void qz_metric_set(struct qz_metric *g, double v); /* gauge */
void qz_metric_observe(struct qz_metric *h, double v);
double qz_metric_value(const struct qz_metric *c); /* counter/gauge current value */

/* Renders the exposition format (text/plain; version=0.0.4). Caller frees. */
char *qz_metrics_render(struct qz_metrics *m);

#endif
