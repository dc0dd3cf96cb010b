/* rank.c - sum per-partition counts exactly, rank by trend score, encode partials. */
#include "rank.h"

#include <stdlib.h>
#include <string.h>

#define PARTIAL_MAGIC 0x31505451u /* "QTP1" */

void rank_merge_reset(struct rank_merge *m, size_t ntracks)
{
        if (ntracks > m->cap) {
                void *t = realloc(m->totals, ntracks * sizeof(*m->totals));
                if (t) {
                        m->totals = t;
                        m->cap = ntracks;
                }
        }
        m->n = ntracks <= m->cap ? ntracks : m->cap;
        if (m->totals)
                memset(m->totals, 0, m->n * sizeof(*m->totals));
        m->newest_ms = 0;
}

int rank_merge_add(struct rank_merge *m, uint32_t track, const struct window_counts *c)
{
        if (track >= m->n) {
                size_t n = track + 1, cap = m->cap ? m->cap : 1024;
                while (cap < n)
                        cap *= 2;
                if (cap > m->cap) {
                        void *t = realloc(m->totals, cap * sizeof(*m->totals));
                        if (!t)
                                return -1;
                        m->totals = t;
                        m->cap = cap;
                }
                memset(m->totals + m->n, 0, (n - m->n) * sizeof(*m->totals));
                m->n = n;
        }
        struct window_counts *t = &m->totals[track];
        t->plays_24h += c->plays_24h;
        t->plays_7d += c->plays_7d;
        t->listeners_24h += c->listeners_24h;
        t->listeners_7d += c->listeners_7d;
        return 0;
}

void rank_merge_free(struct rank_merge *m)
{
        free(m->totals);
        memset(m, 0, sizeof(*m));
}

static int cmp_item(const void *a, const void *b, void *arg)
{
        const struct rank_item *x = a, *y = b;
        const struct window *sort_w = arg;
        if (x->score != y->score)
                return x->score > y->score ? -1 : 1;
        return memcmp(window_track_id(sort_w, x->track), window_track_id(sort_w, y->track), 16);
}

int rank_build(const struct rank_merge *m, const struct window *w, struct rank_item **out,
               size_t *n)
{
        size_t k = 0;
        struct rank_item *it = malloc((m->n ? m->n : 1) * sizeof(*it));
        if (!it)
                return -1;
        for (size_t i = 0; i < m->n; i++) {
                double s = window_score(&m->totals[i]);
                if (s > 0)
                        it[k++] = (struct rank_item){(uint32_t)i, s, m->totals[i]};
        }
        qsort_r(it, k, sizeof(*it), cmp_item, (void *)w);
        *out = it;
        *n = k;
        return 0;
}

static void put32(uint8_t **p, uint32_t v)
{
        memcpy(*p, &v, 4);
        *p += 4;
}

static void put64(uint8_t **p, int64_t v)
{
        memcpy(*p, &v, 8);
        *p += 8;
}

int rank_partial_encode(const struct window *w, int part, int64_t newest_ms, uint8_t **out,
                        size_t *len)
{
        size_t n = 0, k = 0;
        const struct window_counts *c = window_part_counts(w, part, &n);
        for (size_t i = 0; i < n; i++)
                k += c[i].plays_7d > 0;
        uint8_t *buf = malloc(24 + k * 32), *p = buf;
        if (!buf)
                return -1;
        put32(&p, PARTIAL_MAGIC);
        put32(&p, (uint32_t)k);
        put64(&p, window_cur_bucket(w));
        put64(&p, newest_ms);
        for (size_t i = 0; i < n; i++) {
                if (!c[i].plays_7d)
                        continue;
                memcpy(p, window_track_id(w, (uint32_t)i), 16);
                p += 16;
                put32(&p, c[i].plays_24h);
                put32(&p, c[i].plays_7d);
                put32(&p, c[i].listeners_24h);
                put32(&p, c[i].listeners_7d);
        }
        *out = buf;
        *len = (size_t)(p - buf);
        return 0;
}

int rank_partial_decode(struct window *w, struct rank_merge *m, const uint8_t *buf, size_t len,
                        int64_t *bucket)
{
        uint32_t magic, k;
        int64_t newest;
        if (len < 24)
                return -1;
        memcpy(&magic, buf, 4);
        memcpy(&k, buf + 4, 4);
        memcpy(bucket, buf + 8, 8);
        memcpy(&newest, buf + 16, 8);
        if (magic != PARTIAL_MAGIC || len != 24 + (size_t)k * 32)
                return -1;
        if (newest > m->newest_ms)
                m->newest_ms = newest;
        for (const uint8_t *p = buf + 24; p < buf + len; p += 32) {
                struct window_counts c;
                memcpy(&c.plays_24h, p + 16, 4);
                memcpy(&c.plays_7d, p + 20, 4);
                memcpy(&c.listeners_24h, p + 24, 4);
                memcpy(&c.listeners_7d, p + 28, 4);
                int64_t ti = window_track_intern(w, p);
                if (ti < 0 || rank_merge_add(m, (uint32_t)ti, &c) != 0)
                        return -1;
        }
        return 0;
}
