/* window.c - exact sliding 24 h / 7 d counts per (partition, track): bucket logs, latest-bucket
 * pairs, event-id dedup. See window.h for the window's definition. */
#include "window.h"
#include "htab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define JOURNAL_KEEP 65536       /* journal capacity kept once emptied (plays) */
#define FLAG_LATEST  0x80000000u /* this log entry made its bucket the pair's latest */

struct entry {
        uint32_t track;
        uint32_t user; /* | FLAG_LATEST */
};

struct blog {
        struct entry *e;
        size_t n, cap;
};

struct wpart {
        bool active;
        struct htab pairs; /* k0 = track << 32 | user -> latest bucket */
        struct htab dedup; /* event id -> bucket */
        struct blog *logs; /* [nb], bucket b in logs[b mod nb] */
        struct window_counts *counts;
        size_t ncounts;
        struct window_play *journal;
        size_t njournal, capjournal;
        uint64_t plays_7d;
};

struct window {
        int64_t bucket_ms, cur;
        int64_t n24, n7, future; /* in buckets */
        size_t nb;               /* ring size: n7 + 1 + future */
        int nparts;
        struct wpart *parts;
        struct htab track_ix, user_ix;
        uint8_t (*track_ids)[16];
        size_t ntracks, captracks;
        uint32_t nusers;
};

static uint64_t rd64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
}

static int64_t floordiv(int64_t a, int64_t b)
{
        int64_t q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static size_t slot_of(const struct window *w, int64_t b)
{
        int64_t m = b % (int64_t)w->nb;
        return (size_t)(m < 0 ? m + (int64_t)w->nb : m);
}

struct window *window_new(int64_t bucket_ms, int nparts, int64_t now_ms)
{
        if (bucket_ms <= 0 || WINDOW_24H_MS % bucket_ms != 0 || nparts <= 0 ||
            nparts > WINDOW_MAX_PARTS)
                return NULL;
        struct window *w = calloc(1, sizeof(*w));
        if (!w)
                return NULL;
        w->bucket_ms = bucket_ms;
        w->n24 = WINDOW_24H_MS / bucket_ms;
        w->n7 = WINDOW_7D_MS / bucket_ms;
        w->future = (WINDOW_FUTURE_MS + bucket_ms - 1) / bucket_ms;
        w->nb = (size_t)(w->n7 + 1 + w->future);
        w->nparts = nparts;
        w->cur = floordiv(now_ms, bucket_ms);
        if (!(w->parts = calloc((size_t)nparts, sizeof(*w->parts)))) {
                free(w);
                return NULL;
        }
        return w;
}

static void part_free(struct wpart *p, size_t nb)
{
        htab_clear(&p->pairs);
        htab_clear(&p->dedup);
        if (p->logs)
                for (size_t i = 0; i < nb; i++)
                        free(p->logs[i].e);
        free(p->logs);
        free(p->counts);
        free(p->journal);
        memset(p, 0, sizeof(*p));
}

void window_free(struct window *w)
{
        if (!w)
                return;
        for (int i = 0; i < w->nparts; i++)
                part_free(&w->parts[i], w->nb);
        free(w->parts);
        htab_clear(&w->track_ix);
        htab_clear(&w->user_ix);
        free(w->track_ids);
        free(w);
}

void window_drop_part(struct window *w, int part)
{
        if (part >= 0 && part < w->nparts)
                part_free(&w->parts[part], w->nb);
}

static int part_activate(struct window *w, struct wpart *p)
{
        if (p->active)
                return 0;
        if (!(p->logs = calloc(w->nb, sizeof(*p->logs))))
                return -1;
        p->active = true;
        return 0;
}

void window_part_activate(struct window *w, int part)
{
        if (part >= 0 && part < w->nparts)
                part_activate(w, &w->parts[part]);
}

bool window_part_active(const struct window *w, int part)
{
        return part >= 0 && part < w->nparts && w->parts[part].active;
}

int64_t window_track_intern(struct window *w, const uint8_t id[16])
{
        struct htab_slot *s = htab_find(&w->track_ix, rd64(id), rd64(id + 8));
        if (s)
                return (uint32_t)s->val;
        if (w->ntracks == w->captracks) {
                size_t cap = w->captracks ? w->captracks * 2 : 1024;
                void *n = realloc(w->track_ids, cap * 16);
                if (!n)
                        return -1;
                w->track_ids = n;
                w->captracks = cap;
        }
        if (!htab_insert(&w->track_ix, rd64(id), rd64(id + 8), (int32_t)w->ntracks))
                return -1;
        memcpy(w->track_ids[w->ntracks], id, 16);
        return (int64_t)w->ntracks++;
}

static int64_t user_intern(struct window *w, const uint8_t id[16])
{
        struct htab_slot *s = htab_find(&w->user_ix, rd64(id), rd64(id + 8));
        if (s)
                return (uint32_t)s->val;
        if (w->nusers >= FLAG_LATEST - 1 ||
            !htab_insert(&w->user_ix, rd64(id), rd64(id + 8), (int32_t)w->nusers))
                return -1;
        return w->nusers++;
}

static int ensure_counts(struct wpart *p, size_t n)
{
        if (n <= p->ncounts)
                return 0;
        size_t cap = p->ncounts ? p->ncounts : 1024;
        while (cap < n)
                cap *= 2;
        void *c = realloc(p->counts, cap * sizeof(*p->counts));
        if (!c)
                return -1;
        memset((struct window_counts *)c + p->ncounts, 0, (cap - p->ncounts) * sizeof(*p->counts));
        p->counts = c;
        p->ncounts = cap;
        return 0;
}

static int log_append(struct blog *l, struct entry e)
{
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 64;
                void *n = realloc(l->e, cap * sizeof(*l->e));
                if (!n)
                        return -1;
                l->e = n;
                l->cap = cap;
        }
        l->e[l->n++] = e;
        return 0;
}

/* Asks for huge pages over the 2 MiB-aligned interior of a big array that is filled in order:
 * one fault per 2 MiB instead of per 4 KiB. A hint; without THP nothing changes. */
static void advise_huge(void *p, size_t bytes)
{
        const uintptr_t huge = 2u << 20;
        uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1),
                  e = ((uintptr_t)p + bytes) & ~(huge - 1);
        if (e > a)
                madvise((void *)a, e - a, MADV_HUGEPAGE);
}

int window_reserve(struct window *w, int part, size_t plays, bool journal)
{
        if (part < 0 || part >= w->nparts)
                return -1;
        struct wpart *p = &w->parts[part];
        if (part_activate(w, p) != 0 || htab_reserve(&p->dedup, p->dedup.n + plays) != 0 ||
            htab_reserve(&p->pairs, p->pairs.n + plays) != 0)
                return -1;
        if (journal && p->capjournal < p->njournal + plays) {
                size_t bytes = (p->njournal + plays) * sizeof(*p->journal);
                void *n = realloc(p->journal, bytes);
                if (!n)
                        return -1;
                advise_huge(n, bytes);
                p->journal = n;
                p->capjournal = p->njournal + plays;
        }
        /* bucket logs for plays spread evenly over the 7 d window: no step-by-step growth */
        size_t per = plays / (size_t)(w->n7 + 1) + 1;
        for (int64_t b = w->cur - w->n7; b <= w->cur; b++) {
                struct blog *l = &p->logs[slot_of(w, b)];
                if (l->cap < l->n + per) {
                        void *n = realloc(l->e, (l->n + per) * sizeof(*l->e));
                        if (!n)
                                return -1;
                        l->e = n;
                        l->cap = l->n + per;
                }
        }
        return 0;
}

static int journal_append(struct wpart *p, const struct window_play *pl)
{
        if (p->njournal == p->capjournal) {
                size_t cap = p->capjournal ? p->capjournal * 2 : 256;
                void *n = realloc(p->journal, cap * sizeof(*p->journal));
                if (!n)
                        return -1;
                p->journal = n;
                p->capjournal = cap;
        }
        p->journal[p->njournal++] = *pl;
        return 0;
}

void window_prefetch_ids(const struct window *w, const struct window_play *pl)
{
        htab_prefetch(&w->track_ix, rd64(pl->track_id), rd64(pl->track_id + 8));
        htab_prefetch(&w->user_ix, rd64(pl->user_id), rd64(pl->user_id + 8));
}

void window_prefetch(const struct window *w, int part, const struct window_play *pl)
{
        const struct wpart *p = &w->parts[part];
        htab_prefetch(&p->dedup, rd64(pl->event_id), rd64(pl->event_id + 8));
        const struct htab_slot *t =
            htab_find(&w->track_ix, rd64(pl->track_id), rd64(pl->track_id + 8));
        const struct htab_slot *u =
            htab_find(&w->user_ix, rd64(pl->user_id), rd64(pl->user_id + 8));
        if (t && (size_t)(uint32_t)t->val < p->ncounts)
                __builtin_prefetch(&p->counts[(uint32_t)t->val]);
        if (t && u)
                htab_prefetch(&p->pairs, (uint64_t)(uint32_t)t->val << 32 | (uint32_t)u->val, 0);
}

enum window_result window_add(struct window *w, int part, const struct window_play *pl,
                              bool journal)
{
        int64_t b = floordiv(pl->played_at_ms, w->bucket_ms);
        int64_t lo24 = w->cur - w->n24;
        if (b < w->cur - w->n7)
                return WINDOW_TOO_OLD;
        if (b > w->cur + w->future)
                return WINDOW_TOO_NEW;
        struct wpart *p = &w->parts[part];
        /* Out of memory below is treated as "not added"; the caller counts it as dropped. */
        if (part_activate(w, p) != 0)
                return WINDOW_TOO_NEW;
        uint64_t e0 = rd64(pl->event_id), e1 = rd64(pl->event_id + 8);
        if (htab_find(&p->dedup, e0, e1))
                return WINDOW_DUPLICATE;
        int64_t ti = window_track_intern(w, pl->track_id), ui = user_intern(w, pl->user_id);
        if (ti < 0 || ui < 0 || ensure_counts(p, (size_t)ti + 1) != 0 ||
            !htab_insert(&p->dedup, e0, e1, (int32_t)b))
                return WINDOW_TOO_NEW;

        struct window_counts *c = &p->counts[ti];
        uint32_t flag = 0;
        uint64_t pk = (uint64_t)ti << 32 | (uint64_t)ui;
        struct htab_slot *s = htab_find(&p->pairs, pk, 0);
        if (!s) {
                htab_insert(&p->pairs, pk, 0, (int32_t)b);
                c->listeners_7d++;
                if (b >= lo24)
                        c->listeners_24h++;
                flag = FLAG_LATEST;
        } else if (b > s->val) {
                if (s->val < lo24 && b >= lo24)
                        c->listeners_24h++;
                s->val = (int32_t)b;
                flag = FLAG_LATEST;
        }
        c->plays_7d++;
        if (b >= lo24)
                c->plays_24h++;
        p->plays_7d++;
        log_append(&p->logs[slot_of(w, b)], (struct entry){(uint32_t)ti, (uint32_t)ui | flag});
        if (journal)
                journal_append(p, pl);
        return WINDOW_ADDED;
}

static bool dedup_keep(int32_t val, int64_t lo7)
{
        return val >= lo7;
}

/* The buckets leaving the windows when cur becomes c. */
static void expire_step(struct window *w, struct wpart *p, int64_t c)
{
        int64_t b24 = c - w->n24 - 1, b7 = c - w->n7 - 1;
        struct blog *l = &p->logs[slot_of(w, b24)];
        for (size_t i = 0; i < l->n; i++) {
                struct entry e = l->e[i];
                struct window_counts *k = &p->counts[e.track];
                k->plays_24h--;
                if (e.user & FLAG_LATEST) {
                        uint64_t pk = (uint64_t)e.track << 32 | (e.user & ~FLAG_LATEST);
                        struct htab_slot *s = htab_find(&p->pairs, pk, 0);
                        if (s && s->val == b24)
                                k->listeners_24h--;
                }
        }
        l = &p->logs[slot_of(w, b7)];
        for (size_t i = 0; i < l->n; i++) {
                struct entry e = l->e[i];
                struct window_counts *k = &p->counts[e.track];
                k->plays_7d--;
                p->plays_7d--;
                if (e.user & FLAG_LATEST) {
                        uint64_t pk = (uint64_t)e.track << 32 | (e.user & ~FLAG_LATEST);
                        struct htab_slot *s = htab_find(&p->pairs, pk, 0);
                        if (s && s->val == b7) {
                                k->listeners_7d--;
                                htab_delete(&p->pairs, s);
                        }
                }
        }
        free(l->e);
        memset(l, 0, sizeof(*l));
}

void window_advance(struct window *w, int64_t now_ms)
{
        int64_t nc = floordiv(now_ms, w->bucket_ms);
        if (nc <= w->cur)
                return;
        /* Beyond one full ring every bucket has left both windows: step only through the
         * buckets that still hold plays. */
        int64_t from = w->cur + 1;
        if (nc - w->cur > (int64_t)w->nb + w->n24)
                from = nc - (int64_t)w->nb - w->n24;
        for (int i = 0; i < w->nparts; i++) {
                struct wpart *p = &w->parts[i];
                if (!p->active)
                        continue;
                for (int64_t c = from; c <= nc; c++)
                        expire_step(w, p, c);
                htab_filter(&p->dedup, dedup_keep, nc - w->n7);
        }
        w->cur = nc;
}

int64_t window_cur_bucket(const struct window *w)
{
        return w->cur;
}

int64_t window_bucket_ms(const struct window *w)
{
        return w->bucket_ms;
}

int window_nparts(const struct window *w)
{
        return w->nparts;
}

size_t window_ntracks(const struct window *w)
{
        return w->ntracks;
}

const uint8_t *window_track_id(const struct window *w, uint32_t idx)
{
        return idx < w->ntracks ? w->track_ids[idx] : NULL;
}

const struct window_counts *window_part_counts(const struct window *w, int part, size_t *n)
{
        *n = 0;
        if (!window_part_active(w, part))
                return NULL;
        const struct wpart *p = &w->parts[part];
        *n = p->ncounts < w->ntracks ? p->ncounts : w->ntracks;
        return p->counts;
}

const struct window_play *window_journal(const struct window *w, int part, size_t *n)
{
        *n = 0;
        if (!window_part_active(w, part))
                return NULL;
        *n = w->parts[part].njournal;
        return w->parts[part].journal;
}

void window_journal_consume(struct window *w, int part, size_t n)
{
        if (!window_part_active(w, part))
                return;
        struct wpart *p = &w->parts[part];
        if (n >= p->njournal) {
                p->njournal = 0;
                /* after a rebuild the journal held the whole window: give that back */
                if (p->capjournal > JOURNAL_KEEP) {
                        free(p->journal);
                        p->journal = NULL;
                        p->capjournal = 0;
                }
                return;
        }
        memmove(p->journal, p->journal + n, (p->njournal - n) * sizeof(*p->journal));
        p->njournal -= n;
}

int window_export(const struct window *w, int part,
                  int (*emit)(void *arg, const struct window_play *plays, size_t n), void *arg)
{
        if (!window_part_active(w, part))
                return 0;
        const struct wpart *p = &w->parts[part];
        int64_t lo = w->cur - w->n7;
        size_t span = w->nb, nev = p->dedup.n, maxn = 0;
        uint8_t(*uids)[16] = malloc((w->nusers ? w->nusers : 1) * sizeof(*uids));
        uint8_t(*evs)[16] = malloc((nev ? nev : 1) * sizeof(*evs));
        size_t *start = calloc(span + 1, sizeof(*start));
        struct window_play *out = NULL;
        int rc = -1;
        if (!uids || !evs || !start)
                goto done;
        /* user index -> id (the index keeps only id -> index) */
        for (size_t i = 0; i < w->user_ix.cap; i++) {
                const struct htab_slot *s = &w->user_ix.slots[i];
                if (s->full && (uint32_t)s->val < w->nusers) {
                        memcpy(uids[(uint32_t)s->val], &s->k0, 8);
                        memcpy(uids[(uint32_t)s->val] + 8, &s->k1, 8);
                }
        }
        /* event ids grouped by bucket (a counting sort over the window's buckets) */
        for (size_t i = 0; i < p->dedup.cap; i++) {
                const struct htab_slot *s = &p->dedup.slots[i];
                if (!s->full)
                        continue;
                if (s->val < lo || (size_t)(s->val - lo) >= span)
                        goto done;
                start[s->val - lo + 1]++;
        }
        for (size_t b = 0; b < span; b++) {
                size_t n = p->logs[slot_of(w, lo + (int64_t)b)].n;
                if (start[b + 1] != n)
                        goto done; /* every added play has one event id and one log entry */
                if (n > maxn)
                        maxn = n;
                start[b + 1] += start[b];
        }
        for (size_t i = 0; i < p->dedup.cap; i++) {
                const struct htab_slot *s = &p->dedup.slots[i];
                if (s->full) {
                        uint8_t *e = evs[start[s->val - lo]++];
                        memcpy(e, &s->k0, 8);
                        memcpy(e + 8, &s->k1, 8);
                }
        }
        /* start[b] now ends bucket b's ids, i.e. begins bucket b + 1's */
        if (!(out = malloc((maxn ? maxn : 1) * sizeof(*out))))
                goto done;
        for (size_t b = 0; b < span; b++) {
                const struct blog *l = &p->logs[slot_of(w, lo + (int64_t)b)];
                size_t first = b ? start[b - 1] : 0;
                for (size_t i = 0; i < l->n; i++) {
                        struct window_play *pl = &out[i];
                        memcpy(pl->event_id, evs[first + i], 16);
                        memcpy(pl->user_id, uids[l->e[i].user & ~FLAG_LATEST], 16);
                        memcpy(pl->track_id, w->track_ids[l->e[i].track], 16);
                        pl->played_at_ms = (lo + (int64_t)b) * w->bucket_ms;
                }
                if (l->n && emit(arg, out, l->n) != 0)
                        goto done;
        }
        rc = 0;
done:
        free(uids);
        free(evs);
        free(start);
        free(out);
        return rc;
}

void window_stats(const struct window *w, struct window_stats *out)
{
        memset(out, 0, sizeof(*out));
        out->users = w->nusers;
        out->tracks = w->ntracks;
        out->bytes = htab_bytes(&w->track_ix) + htab_bytes(&w->user_ix) + w->captracks * 16;
        for (int i = 0; i < w->nparts; i++) {
                const struct wpart *p = &w->parts[i];
                if (!p->active)
                        continue;
                out->plays_7d += p->plays_7d;
                out->pairs += p->pairs.n;
                out->event_ids += p->dedup.n;
                out->bytes += htab_bytes(&p->pairs) + htab_bytes(&p->dedup) +
                              p->ncounts * sizeof(*p->counts) + w->nb * sizeof(struct blog) +
                              p->capjournal * sizeof(*p->journal);
                for (size_t b = 0; b < w->nb; b++)
                        out->bytes += p->logs[b].cap * sizeof(struct entry);
        }
}

double window_score(const struct window_counts *c)
{
        if (c->plays_7d < 3)
                return 0;
        return 10.0 * c->plays_24h + 2.0 * c->plays_7d + 20.0 * c->listeners_24h +
               5.0 * c->listeners_7d;
}
