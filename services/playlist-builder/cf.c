/* cf.c - item-item collaborative filtering and content similarity (see cf.h). */
#include "cf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct scored {
        uint32_t id;
        float score;
};

static int scored_cmp(const void *a, const void *b)
{
        const struct scored *x = a, *y = b;
        if (x->score != y->score)
                return x->score > y->score ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

static int pair_user_cmp(const void *a, const void *b)
{
        const struct pl_cf_pair *x = a, *y = b;
        if (x->user != y->user)
                return x->user < y->user ? -1 : 1;
        if (x->w != y->w)
                return x->w > y->w ? -1 : 1; /* most played first, for the per-user cap */
        return x->track < y->track ? -1 : x->track > y->track;
}

/* Appends the best k of cand[0..n) for track t to *out. */
static int keep_top(uint32_t t, struct scored *cand, size_t n, size_t k, struct pl_cf_nb **out,
                    size_t *nout, size_t *cap)
{
        qsort(cand, n, sizeof(*cand), scored_cmp);
        if (n > k)
                n = k;
        if (*nout + n > *cap) {
                size_t nc = (*cap ? *cap * 2 : 1024);
                while (nc < *nout + n)
                        nc *= 2;
                struct pl_cf_nb *o = realloc(*out, nc * sizeof(*o));
                if (!o)
                        return -1;
                *out = o;
                *cap = nc;
        }
        for (size_t i = 0; i < n; i++)
                (*out)[(*nout)++] = (struct pl_cf_nb){t, cand[i].id, cand[i].score};
        return 0;
}

int pl_cf_compute(const struct pl_cf_pair *pairs, size_t npairs, uint32_t nusers, uint32_t ntracks,
                  const struct pl_cf_opts *o, struct pl_cf_nb **out, size_t *nout)
{
        struct pl_cf_pair *p = NULL;
        size_t *ustart = NULL, *tstart = NULL, *tfill = NULL;
        uint32_t *tusers = NULL, *touched = NULL, *cnt = NULL;
        float *tw = NULL, *acc = NULL;
        double *norm = NULL;
        struct scored *cand = NULL;
        size_t cap = 0, kept = 0;
        int rc = -1;
        *out = NULL;
        *nout = 0;
        if (npairs == 0 || ntracks == 0)
                return 0;
        /* By user, heaviest first; apply the per-user cap. */
        if (!(p = malloc(npairs * sizeof(*p))))
                goto fail;
        memcpy(p, pairs, npairs * sizeof(*p));
        qsort(p, npairs, sizeof(*p), pair_user_cmp);
        for (size_t i = 0, run = 0; i < npairs; i++) {
                run = (i > 0 && p[i].user == p[i - 1].user) ? run + 1 : 0;
                if (o->max_per_user && run >= o->max_per_user)
                        continue;
                p[kept++] = p[i];
        }
        ustart = calloc((size_t)nusers + 1, sizeof(*ustart));
        tstart = calloc((size_t)ntracks + 1, sizeof(*tstart));
        tfill = calloc((size_t)ntracks, sizeof(*tfill));
        tusers = malloc(kept * sizeof(*tusers));
        tw = malloc(kept * sizeof(*tw));
        norm = calloc(ntracks, sizeof(*norm));
        acc = calloc(ntracks, sizeof(*acc));
        cnt = calloc(ntracks, sizeof(*cnt));
        touched = malloc(ntracks * sizeof(*touched));
        cand = malloc(ntracks * sizeof(*cand));
        if (!ustart || !tstart || !tfill || !tusers || !tw || !norm || !acc || !cnt || !touched ||
            !cand)
                goto fail;
        /* CSR by user (p is sorted by user) and by track. */
        for (size_t i = 0; i < kept; i++) {
                ustart[p[i].user + 1]++;
                tstart[p[i].track + 1]++;
                norm[p[i].track] += (double)p[i].w * p[i].w;
        }
        for (uint32_t u = 0; u < nusers; u++)
                ustart[u + 1] += ustart[u];
        for (uint32_t t = 0; t < ntracks; t++) {
                tstart[t + 1] += tstart[t];
                norm[t] = sqrt(norm[t]);
        }
        for (size_t i = 0; i < kept; i++) {
                size_t at = tstart[p[i].track] + tfill[p[i].track]++;
                tusers[at] = p[i].user;
                tw[at] = p[i].w;
        }
        for (uint32_t t = 0; t < ntracks; t++) {
                size_t ntouched = 0;
                for (size_t a = tstart[t]; a < tstart[t + 1]; a++) {
                        uint32_t u = tusers[a];
                        float wu = tw[a];
                        for (size_t b = ustart[u]; b < ustart[u + 1]; b++) {
                                uint32_t j = p[b].track;
                                if (j == t)
                                        continue;
                                if (cnt[j]++ == 0)
                                        touched[ntouched++] = j;
                                acc[j] += wu * p[b].w;
                        }
                }
                size_t nc = 0;
                for (size_t x = 0; x < ntouched; x++) {
                        uint32_t j = touched[x];
                        if (cnt[j] >= (o->min_common ? o->min_common : 1) && norm[t] > 0 &&
                            norm[j] > 0) {
                                double s = acc[j] / (norm[t] * norm[j]);
                                if (o->shrink > 0)
                                        s *= cnt[j] / (cnt[j] + o->shrink);
                                cand[nc++] = (struct scored){j, (float)s};
                        }
                        acc[j] = 0;
                        cnt[j] = 0;
                }
                if (keep_top(t, cand, nc, o->k, out, nout, &cap) != 0)
                        goto fail;
        }
        rc = 0;
fail:
        if (rc != 0) {
                free(*out);
                *out = NULL;
                *nout = 0;
        }
        free(p);
        free(ustart);
        free(tstart);
        free(tfill);
        free(tusers);
        free(tw);
        free(norm);
        free(acc);
        free(cnt);
        free(touched);
        free(cand);
        return rc;
}

static int feat_group_cmp(const void *a, const void *b)
{
        const struct pl_cf_feat *x = a, *y = b;
        if (x->group != y->group)
                return x->group < y->group ? -1 : 1;
        return x->track < y->track ? -1 : x->track > y->track;
}

int pl_cf_content(const struct pl_cf_feat *items, size_t n, size_t k, double min_score,
                  struct pl_cf_nb **out, size_t *nout)
{
        struct pl_cf_feat *f = NULL;
        struct scored *cand = NULL;
        size_t cap = 0;
        int rc = -1;
        *out = NULL;
        *nout = 0;
        if (n == 0)
                return 0;
        if (!(f = malloc(n * sizeof(*f))) || !(cand = malloc(n * sizeof(*cand))))
                goto fail;
        memcpy(f, items, n * sizeof(*f));
        qsort(f, n, sizeof(*f), feat_group_cmp);
        const double maxd = sqrt((double)PL_CF_NFEAT);
        for (size_t g0 = 0; g0 < n;) {
                size_t g1 = g0;
                while (g1 < n && f[g1].group == f[g0].group)
                        g1++;
                for (size_t i = g0; i < g1; i++) {
                        size_t nc = 0;
                        for (size_t j = g0; j < g1; j++) {
                                if (j == i)
                                        continue;
                                double d = 0;
                                for (int x = 0; x < PL_CF_NFEAT; x++) {
                                        double e = f[i].f[x] - f[j].f[x];
                                        d += e * e;
                                }
                                double s = 1.0 - sqrt(d) / maxd;
                                if (s >= min_score)
                                        cand[nc++] = (struct scored){f[j].track, (float)s};
                        }
                        if (keep_top(f[i].track, cand, nc, k, out, nout, &cap) != 0)
                                goto fail;
                }
                g0 = g1;
        }
        rc = 0;
fail:
        if (rc != 0) {
                free(*out);
                *out = NULL;
                *nout = 0;
        }
        free(f);
        free(cand);
        return rc;
}
