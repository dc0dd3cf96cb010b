/* rules.c - the pure selection rules of every playlist (see rules.h). */
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pl_pool_push(struct pl_pool *p, const char *track_id, const char *artist_id, double score)
{
        if (p->n == p->cap) {
                size_t cap = p->cap ? p->cap * 2 : 64;
                struct pl_cand *c = realloc(p->c, cap * sizeof(*c));
                if (!c)
                        return -1;
                p->c = c;
                p->cap = cap;
        }
        struct pl_cand *x = &p->c[p->n++];
        /* strnlen + memcpy: the batch path pushes millions of candidates (snprintf showed). */
        size_t lt = strnlen(track_id, PL_ID_LEN - 1),
               la = artist_id ? strnlen(artist_id, PL_ID_LEN - 1) : 0;
        memcpy(x->track_id, track_id, lt);
        x->track_id[lt] = '\0';
        if (la)
                memcpy(x->artist_id, artist_id, la);
        x->artist_id[la] = '\0';
        x->score = score;
        x->source = 0;
        return 0;
}

void pl_pool_free(struct pl_pool *p)
{
        free(p->c);
        p->c = NULL;
        p->n = p->cap = 0;
}

static int cand_cmp(const void *a, const void *b)
{
        const struct pl_cand *x = a, *y = b;
        if (x->score > y->score)
                return -1;
        if (x->score < y->score)
                return 1;
        return strcmp(x->track_id, y->track_id);
}

void pl_rules_sort(struct pl_cand *c, size_t n)
{
        if (n > 1)
                qsort(c, n, sizeof(*c), cand_cmp);
}

/* ---- a set of track ids (open addressing on a 64-bit hash of the id) ---- */

struct idset {
        const char **keys;
        size_t mask;
};

uint64_t pl_rules_hash(const char *s, uint64_t h)
{
        /* FNV-1a, then a splitmix64 finaliser so nearby inputs spread. */
        if (!h)
                h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 1099511628211ULL;
        }
        h ^= h >> 30;
        h *= 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 27;
        h *= 0x94d049bb133111ebULL;
        h ^= h >> 31;
        return h;
}

static int idset_init(struct idset *s, size_t n)
{
        size_t cap = 16;
        while (cap < 2 * n + 1)
                cap *= 2;
        s->keys = calloc(cap, sizeof(*s->keys));
        s->mask = cap - 1;
        return s->keys ? 0 : -1;
}

/* Adds key (borrowed); false when it was already there. */
static bool idset_add(struct idset *s, const char *key)
{
        size_t i = (size_t)pl_rules_hash(key, 0) & s->mask;
        while (s->keys[i]) {
                if (strcmp(s->keys[i], key) == 0)
                        return false;
                i = (i + 1) & s->mask;
        }
        s->keys[i] = key;
        return true;
}

/* ---- assembly ---- */

/* Next candidate of pool p at or after *pos that is not yet taken; NULL when dry. */
static const struct pl_cand *next_fresh(const struct pl_pool *p, size_t *pos, struct idset *seen)
{
        while (*pos < p->n) {
                const struct pl_cand *c = &p->c[*pos];
                size_t i = (size_t)pl_rules_hash(c->track_id, 0) & seen->mask;
                bool dup = false;
                while (seen->keys[i]) {
                        if (strcmp(seen->keys[i], c->track_id) == 0) {
                                dup = true;
                                break;
                        }
                        i = (i + 1) & seen->mask;
                }
                if (!dup)
                        return c;
                (*pos)++;
        }
        return NULL;
}

long pl_rules_assemble(const struct pl_assembly *a, struct pl_cand *out, size_t *per_pool)
{
        struct idset seen = {0};
        size_t *pos = calloc(a->npools ? a->npools : 1, sizeof(*pos));
        size_t *taken = calloc(a->npools ? a->npools : 1, sizeof(*taken));
        size_t n = 0;
        long rc = -1;
        if (!pos || !taken || idset_init(&seen, a->target + a->nexclude) != 0)
                goto fail;
        for (size_t i = 0; i < a->nexclude; i++)
                idset_add(&seen, a->exclude[i]);
        size_t nshared = a->nshared < a->npools ? a->nshared : a->npools;
        double total_share = 0;
        for (size_t i = 0; i < nshared; i++)
                total_share += a->shares[i];
        /* Shared pools: each position goes to the live pool furthest below its share. Pools
         * still under their quota (share * target) go first, so a pool that ran dry leaves its
         * places to the others. */
        while (n < a->target && nshared > 0) {
                long best = -1;
                bool best_under = false;
                double best_ratio = 0;
                for (size_t i = 0; i < nshared; i++) {
                        if (!next_fresh(&a->pools[i], &pos[i], &seen))
                                continue;
                        double quota = a->shares[i] / total_share * (double)a->target;
                        bool under = (double)taken[i] < quota;
                        double ratio = (double)taken[i] / (quota > 0 ? quota : 1e-9);
                        if (best < 0 || (under && !best_under) ||
                            (under == best_under && ratio < best_ratio)) {
                                best = (long)i;
                                best_under = under;
                                best_ratio = ratio;
                        }
                }
                if (best < 0)
                        break;
                out[n] = a->pools[best].c[pos[best]++];
                out[n].source = (int)best;
                idset_add(&seen, out[n].track_id);
                taken[best]++;
                n++;
        }
        /* Fallback pools, in order. */
        for (size_t i = nshared; i < a->npools && n < a->target; i++) {
                const struct pl_cand *c;
                while (n < a->target && (c = next_fresh(&a->pools[i], &pos[i], &seen))) {
                        out[n] = *c;
                        out[n].source = (int)i;
                        idset_add(&seen, out[n].track_id);
                        pos[i]++;
                        taken[i]++;
                        n++;
                }
        }
        if (per_pool)
                memcpy(per_pool, taken, a->npools * sizeof(*taken));
        rc = (long)n;
fail:
        free(seen.keys);
        free(pos);
        free(taken);
        return rc;
}

/* ---- artist spacing ---- */

static bool same_artist(const struct pl_cand *a, const struct pl_cand *b)
{
        return a->artist_id[0] && strcmp(a->artist_id, b->artist_id) == 0;
}

/* Moves items[from] to index to (to < from), shifting items[to..from) one up. */
static void move_back(struct pl_cand *items, size_t from, size_t to)
{
        struct pl_cand x = items[from];
        memmove(&items[to + 1], &items[to], (from - to) * sizeof(*items));
        items[to] = x;
}

size_t pl_rules_space_artists(struct pl_cand *items, size_t n)
{
        for (size_t i = 1; i < n; i++) {
                if (!same_artist(&items[i], &items[i - 1]))
                        continue;
                /* Forward: pull the next item of another artist into place i. */
                size_t j = i + 1;
                while (j < n && same_artist(&items[j], &items[i - 1]))
                        j++;
                if (j < n) {
                        move_back(items, j, i);
                        continue;
                }
                /* Nothing left to pull: move items[i] back to a gap between two others. */
                for (size_t k = 0; k < i; k++) {
                        bool left_ok = k == 0 || !same_artist(&items[k - 1], &items[i]);
                        bool right_ok = !same_artist(&items[k], &items[i]);
                        if (left_ok && right_ok) {
                                move_back(items, i, k);
                                break;
                        }
                }
        }
        return pl_rules_artist_repeats(items, n);
}

size_t pl_rules_artist_repeats(const struct pl_cand *items, size_t n)
{
        size_t r = 0;
        for (size_t i = 1; i < n; i++)
                r += same_artist(&items[i], &items[i - 1]);
        return r;
}

/* ---- seeded randomness ---- */

void pl_rules_iso_week(int64_t ms, int *iso_year, int *iso_week, int *weekday)
{
        time_t t = (time_t)(ms / 1000);
        if (ms < 0 && ms % 1000)
                t--;
        struct tm tm;
        gmtime_r(&t, &tm);
        int wd = tm.tm_wday == 0 ? 7 : tm.tm_wday; /* 1 = Monday */
        /* The week's Thursday decides the ISO year. */
        time_t thu = t + (time_t)(4 - wd) * 86400;
        struct tm th;
        gmtime_r(&thu, &th);
        *iso_year = th.tm_year + 1900;
        *iso_week = th.tm_yday / 7 + 1;
        *weekday = wd;
}

uint64_t pl_rules_seed(const char *user_id, int iso_year, int iso_week)
{
        char buf[80];
        snprintf(buf, sizeof(buf), "%s/%04d-W%02d", user_id, iso_year, iso_week);
        return pl_rules_hash(buf, 0);
}

double pl_rules_rand_key(uint64_t seed, uint64_t track_key)
{
        /* The seed spread by a golden-ratio multiply, then splitmix64's finaliser: every bit of
         * the result depends on every bit of both (until 29 Nov 2026 the id was rehashed from
         * a seed-dependent start, 5% of a builder's CPU at 100k tracks). */
        uint64_t h = track_key ^ (seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
        h ^= h >> 30;
        h *= 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 27;
        h *= 0x94d049bb133111ebULL;
        h ^= h >> 31;
        return (double)(h >> 11) / 9007199254740992.0; /* 2^53 */
}

double pl_rules_rand(uint64_t seed, const char *track_id)
{
        return pl_rules_rand_key(seed, pl_rules_hash(track_id, 0));
}

/* ---- A/B variants ---- */

int pl_rules_variant(const char *spec, const char *salt, const char *user_id, char *out,
                     size_t out_size, char *errstr, size_t errstr_size)
{
        char names[16][32];
        long weights[16], total = 0;
        size_t n = 0;
        const char *p = spec;
        while (p && *p) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                const char *colon = memchr(p, ':', len);
                char *end = NULL;
                long w = colon ? strtol(colon + 1, &end, 10) : -1;
                size_t nlen = colon ? (size_t)(colon - p) : 0;
                if (!colon || nlen == 0 || nlen >= sizeof(names[0]) || end != p + len || w <= 0 ||
                    w > 1000000 || n == 16) {
                        snprintf(errstr, errstr_size,
                                 "bad variant list '%s': expected name:weight[,name:weight]", spec);
                        return -1;
                }
                memcpy(names[n], p, nlen);
                names[n][nlen] = '\0';
                weights[n++] = w;
                total += w;
                p = comma ? comma + 1 : NULL;
                if (p && !*p) {
                        snprintf(errstr, errstr_size, "bad variant list '%s': trailing comma",
                                 spec);
                        return -1;
                }
        }
        if (n == 0) {
                snprintf(errstr, errstr_size, "empty variant list");
                return -1;
        }
        if (!out)
                return 0;
        char key[160];
        snprintf(key, sizeof(key), "%s/%s", salt ? salt : "", user_id);
        long x = (long)(pl_rules_hash(key, 0) % (uint64_t)total);
        size_t i = 0;
        while (x >= weights[i]) {
                x -= weights[i];
                i++;
        }
        snprintf(out, out_size, "%s", names[i]);
        return 0;
}
