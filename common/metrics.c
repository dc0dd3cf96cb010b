/* metrics.c - Prometheus registry: lock-free updates, text exposition rendering.
 *
 * Values are doubles stored as their bit patterns in _Atomic uint64_t, so an
 * update is a compare-and-swap loop (C11 has no atomic add for doubles).
 * Histogram buckets are kept per bucket and summed into cumulative counts at
 * render time, so observe() touches one bucket, the sum and the count. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct qz_metric {
        enum metric_type type;
        char *name;
        char *labels; /* "" when none */
        char *help;
        _Atomic uint64_t value; /* counter/gauge: double bits */
        /* histogram only */
        double *bounds;
        size_t nbounds;
        _Atomic uint64_t *buckets; /* nbounds + 1 (the last is +Inf), not cumulative */
        _Atomic uint64_t sum;      /* double bits */
        _Atomic uint64_t count;
};

struct qz_metrics {
        pthread_mutex_t lock;
        struct qz_metric **items; /* creation order; families render in first-seen order */
        size_t n, cap;
};

static const double default_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10};

static uint64_t dbl_bits(double v)
{
        uint64_t u;
        memcpy(&u, &v, sizeof(u));
        return u;
}

static double bits_dbl(uint64_t u)
{
        double v;
        memcpy(&v, &u, sizeof(v));
        return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
        uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(p, &old, dbl_bits(bits_dbl(old) + v),
                                                      memory_order_relaxed, memory_order_relaxed))
                ;
}

struct qz_metrics *qz_metrics_new(void)
{
        struct qz_metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        pthread_mutex_init(&m->lock, NULL);
        return m;
}

static void metric_free(struct qz_metric *x)
{
        if (!x)
                return;
        free(x->name);
        free(x->labels);
        free(x->help);
        free(x->bounds);
        free(x->buckets);
        free(x);
}

void qz_metrics_free(struct qz_metrics *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n; i++)
                metric_free(m->items[i]);
        free(m->items);
        pthread_mutex_destroy(&m->lock);
        free(m);
}

/* Finds name+labels, or creates it. A name reused with another type is refused
 * (NULL): the exposition format cannot express one family with two types. */
static struct qz_metric *get_or_create(struct qz_metrics *m, enum metric_type type,
                                       const char *name, const char *labels, const char *help,
                                       const double *bounds, size_t nbounds)
{
        struct qz_metric *x = NULL, *found = NULL;

        if (!m || !name || !*name)
                return NULL;
        if (!labels)
                labels = "";
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->n; i++) {
                if (strcmp(m->items[i]->name, name) != 0)
                        continue;
                if (m->items[i]->type != type)
                        goto fail;
                if (strcmp(m->items[i]->labels, labels) == 0) {
                        found = m->items[i];
                        break;
                }
        }
        if (found) {
                pthread_mutex_unlock(&m->lock);
                return found;
        }
        if (m->n == m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 16;
                struct qz_metric **items = realloc(m->items, cap * sizeof(*items));
                if (!items)
                        goto fail;
                m->items = items;
                m->cap = cap;
        }
        x = calloc(1, sizeof(*x));
        if (!x)
                goto fail;
        x->type = type;
        x->name = strdup(name);
        x->labels = strdup(labels);
        x->help = strdup(help ? help : "");
        if (!x->name || !x->labels || !x->help)
                goto fail;
        if (type == METRIC_HISTOGRAM) {
                if (!bounds || nbounds == 0) {
                        bounds = default_bounds;
                        nbounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
                }
                x->nbounds = nbounds;
                x->bounds = malloc(nbounds * sizeof(double));
                x->buckets = calloc(nbounds + 1, sizeof(*x->buckets));
                if (!x->bounds || !x->buckets)
                        goto fail;
                memcpy(x->bounds, bounds, nbounds * sizeof(double));
        }
        m->items[m->n++] = x;
        pthread_mutex_unlock(&m->lock);
        return x;
fail:
        pthread_mutex_unlock(&m->lock);
        metric_free(x);
        return NULL;
}

struct qz_metric *qz_metrics_counter(struct qz_metrics *m, const char *name, const char *labels,
                                     const char *help)
{
        return get_or_create(m, METRIC_COUNTER, name, labels, help, NULL, 0);
}

struct qz_metric *qz_metrics_gauge(struct qz_metrics *m, const char *name, const char *labels,
                                   const char *help)
{
        return get_or_create(m, METRIC_GAUGE, name, labels, help, NULL, 0);
}

struct qz_metric *qz_metrics_histogram(struct qz_metrics *m, const char *name, const char *labels,
                                       const char *help, const double *bounds, size_t nbounds)
{
        return get_or_create(m, METRIC_HISTOGRAM, name, labels, help, bounds, nbounds);
}

void qz_metric_inc(struct qz_metric *c)
{
        qz_metric_add(c, 1.0);
}

void qz_metric_add(struct qz_metric *c, double v)
{
        if (!c || c->type == METRIC_HISTOGRAM)
                return;
        if (c->type == METRIC_COUNTER && !(v >= 0)) /* counters only go up; NaN refused too */
                return;
        atomic_add_double(&c->value, v);
}

void qz_metric_set(struct qz_metric *g, double v)
{
        if (!g || g->type != METRIC_GAUGE)
                return;
        atomic_store_explicit(&g->value, dbl_bits(v), memory_order_relaxed);
}

void qz_metric_observe(struct qz_metric *h, double v)
{
        size_t i;

        if (!h || h->type != METRIC_HISTOGRAM)
                return;
        for (i = 0; i < h->nbounds; i++)
                if (v <= h->bounds[i])
                        break;
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
        atomic_add_double(&h->sum, v);
        atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

double qz_metric_value(const struct qz_metric *c)
{
        if (!c || c->type == METRIC_HISTOGRAM)
                return 0;
        return bits_dbl(
            atomic_load_explicit(&((struct qz_metric *)c)->value, memory_order_relaxed));
}

/* Growable output buffer; on allocation failure it stays failed and render returns NULL. */
struct buf {
        char *s;
        size_t len, cap;
        int failed;
};

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
        va_list ap;
        int n;

        if (b->failed)
                return;
        for (;;) {
                va_start(ap, fmt);
                n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        b->failed = 1;
                        return;
                }
                if ((size_t)n < b->cap - b->len) {
                        b->len += (size_t)n;
                        return;
                }
                size_t cap = (b->cap + (size_t)n + 1) * 2;
                char *s = realloc(b->s, cap);
                if (!s) {
                        b->failed = 1;
                        return;
                }
                b->s = s;
                b->cap = cap;
        }
}

/* Shortest text that reads back as the same double; Prometheus spellings for
 * the special values. */
static void fmt_double(double v, char *out, size_t size)
{
        if (isnan(v)) {
                snprintf(out, size, "NaN");
                return;
        }
        if (isinf(v)) {
                snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
                return;
        }
        if (v == (double)(int64_t)v && fabs(v) < 1e15) { /* counts: never "1e+01" */
                snprintf(out, size, "%lld", (long long)v);
                return;
        }
        for (int prec = 1; prec <= 17; prec++) {
                snprintf(out, size, "%.*g", prec, v);
                if (strtod(out, NULL) == v)
                        return;
        }
}

static void render_help(struct buf *b, const struct qz_metric *x)
{
        static const char *type_names[] = {"counter", "gauge", "histogram"};

        buf_printf(b, "# HELP %s ", x->name);
        for (const char *p = x->help; *p; p++) {
                if (*p == '\\')
                        buf_printf(b, "\\\\");
                else if (*p == '\n')
                        buf_printf(b, "\\n");
                else
                        buf_printf(b, "%c", *p);
        }
        buf_printf(b, "\n# TYPE %s %s\n", x->name, type_names[x->type]);
}

static void render_series(struct buf *b, const struct qz_metric *x)
{
        struct qz_metric *mx = (struct qz_metric *)x; /* atomics are read, not changed */
        char num[64];

        if (x->type != METRIC_HISTOGRAM) {
                fmt_double(qz_metric_value(x), num, sizeof(num));
                if (*x->labels)
                        buf_printf(b, "%s{%s} %s\n", x->name, x->labels, num);
                else
                        buf_printf(b, "%s %s\n", x->name, num);
                return;
        }
        const char *sep = *x->labels ? "," : "";
        uint64_t cum = 0;
        for (size_t i = 0; i <= x->nbounds; i++) {
                cum += atomic_load_explicit(&mx->buckets[i], memory_order_relaxed);
                if (i < x->nbounds)
                        fmt_double(x->bounds[i], num, sizeof(num));
                else
                        snprintf(num, sizeof(num), "+Inf");
                buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", x->name, x->labels, sep, num,
                           (unsigned long long)cum);
        }
        fmt_double(bits_dbl(atomic_load_explicit(&mx->sum, memory_order_relaxed)), num,
                   sizeof(num));
        /* count is read after the buckets, so a concurrent observe may make it
         * briefly exceed the +Inf bucket; scrapers tolerate that. */
        uint64_t count = atomic_load_explicit(&mx->count, memory_order_relaxed);
        if (*x->labels) {
                buf_printf(b, "%s_sum{%s} %s\n", x->name, x->labels, num);
                buf_printf(b, "%s_count{%s} %llu\n", x->name, x->labels, (unsigned long long)count);
        } else {
                buf_printf(b, "%s_sum %s\n", x->name, num);
                buf_printf(b, "%s_count %llu\n", x->name, (unsigned long long)count);
        }
}

char *qz_metrics_render(struct qz_metrics *m)
{
        struct buf b = {0};
        char *done = NULL;

        if (!m)
                return NULL;
        b.cap = 4096;
        b.s = malloc(b.cap);
        if (!b.s)
                return NULL;
        b.s[0] = '\0';
        pthread_mutex_lock(&m->lock);
        /* The family is the name: render each name once, at its first series,
         * followed by every series of that name. */
        for (size_t i = 0; i < m->n; i++) {
                int seen = 0;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = strcmp(m->items[j]->name, m->items[i]->name) == 0;
                if (seen)
                        continue;
                render_help(&b, m->items[i]);
                for (size_t j = i; j < m->n; j++)
                        if (strcmp(m->items[j]->name, m->items[i]->name) == 0)
                                render_series(&b, m->items[j]);
        }
        pthread_mutex_unlock(&m->lock);
        if (b.failed) {
                free(b.s);
                return NULL;
        }
        done = b.s;
        return done;
}
