/* catalog.c - the catalog and neighbours in memory; a batch's play aggregates; the pools. */
#include "catalog.h"

#include "pg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DAY_MS 86400000LL

struct track {
        char id[PL_ID_LEN];
        uint64_t key; /* pl_rules_hash(id, 0) */
        int32_t artist;
        int16_t pop;
        bool deleted, has_rel;
        int32_t rel; /* released_at in days since 1970-01-01 */
        uint32_t g_off, g_n;
        uint32_t nb_off, nb_n;
};

/* Per-genre and per-artist lists of track indexes: list i is idx[off[i] .. off[i + 1]). */
struct lists {
        uint32_t *off;
        int32_t *idx;
};

/* String -> index, open addressing; the strings live in the owner's arrays. */
struct smap {
        int32_t *slot; /* -1 = empty */
        size_t mask;
};

struct pl_catalog {
        bool loaded;
        long long version;
        struct track *t;
        size_t nt;
        struct smap tmap;
        char (*artist)[PL_ID_LEN];
        size_t nartists, artists_cap;
        struct smap amap;
        char **genre;
        size_t ngenres, genres_cap;
        struct smap gmap;
        int32_t *tg; /* tracks' genres, by g_off/g_n */
        size_t ntg;
        struct lists by_artist; /* every track, by id */
        struct lists pop_genre; /* live tracks, popularity desc then id */
        struct lists rel_genre; /* live tracks with a release date, by date */
        int32_t *pop_all;       /* live tracks, popularity desc then id */
        size_t npop_all;
        int32_t *nb_t; /* neighbours, by nb_off/nb_n, in primary key order */
        float *nb_s;
        bool *nb_cf;
        size_t nnb;
        /* Scratch for one user at a time (stamps avoid clearing arrays). */
        uint32_t stamp, call, accstamp;
        uint32_t *played, *recent, *seen, *accst;
        double *acc;
        int32_t *touched;
        size_t ntouched;
        const struct pl_cat_user *active, *acc_user;
        double acc_cw;
        long long *gcount, *acount;
};

static uint64_t hash_str(const char *s, size_t len)
{
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < len; i++) {
                h ^= (unsigned char)tolower((unsigned char)s[i]);
                h *= 1099511628211ULL;
        }
        return h ^ (h >> 29);
}

static int smap_init(struct smap *m, size_t n)
{
        size_t cap = 16;
        while (cap < n * 2)
                cap <<= 1;
        free(m->slot);
        m->slot = malloc(cap * sizeof(*m->slot));
        if (!m->slot)
                return -1;
        memset(m->slot, 0xff, cap * sizeof(*m->slot));
        m->mask = cap - 1;
        return 0;
}

typedef const char *(*key_fn)(const struct pl_catalog *c, int32_t i);

static const char *track_key(const struct pl_catalog *c, int32_t i)
{
        return c->t[i].id;
}
static const char *artist_key(const struct pl_catalog *c, int32_t i)
{
        return c->artist[i];
}
static const char *genre_key(const struct pl_catalog *c, int32_t i)
{
        return c->genre[i];
}

/* The index of s, or -1; *slot_out gets the slot to insert at. */
static int32_t smap_find(const struct pl_catalog *c, const struct smap *m, key_fn key,
                         const char *s, size_t *slot_out)
{
        size_t i = (size_t)hash_str(s, strlen(s)) & m->mask;
        while (m->slot[i] >= 0) {
                if (strcmp(key(c, m->slot[i]), s) == 0) /* ids as Postgres prints them */
                        return m->slot[i];
                i = (i + 1) & m->mask;
        }
        if (slot_out)
                *slot_out = i;
        return -1;
}

struct pl_catalog *pl_catalog_new(void)
{
        return calloc(1, sizeof(struct pl_catalog));
}

static void catalog_clear(struct pl_catalog *c)
{
        free(c->t);
        free(c->tmap.slot);
        free(c->artist);
        free(c->amap.slot);
        for (size_t i = 0; i < c->ngenres; i++)
                free(c->genre[i]);
        free(c->genre);
        free(c->gmap.slot);
        free(c->tg);
        free(c->by_artist.off);
        free(c->by_artist.idx);
        free(c->pop_genre.off);
        free(c->pop_genre.idx);
        free(c->rel_genre.off);
        free(c->rel_genre.idx);
        free(c->pop_all);
        free(c->nb_t);
        free(c->nb_s);
        free(c->nb_cf);
        free(c->played);
        free(c->recent);
        free(c->seen);
        free(c->accst);
        free(c->acc);
        free(c->touched);
        free(c->gcount);
        free(c->acount);
        memset(c, 0, sizeof(*c));
}

void pl_catalog_free(struct pl_catalog *c)
{
        if (!c)
                return;
        catalog_clear(c);
        free(c);
}

size_t pl_catalog_tracks(const struct pl_catalog *c)
{
        return c->nt;
}

size_t pl_catalog_neighbours(const struct pl_catalog *c)
{
        return c->nnb;
}

const char *pl_cat_track_id(const struct pl_catalog *c, int32_t track)
{
        return c->t[track].id;
}

const char *pl_cat_track_artist(const struct pl_catalog *c, int32_t track)
{
        return c->artist[c->t[track].artist];
}

static int32_t intern_artist(struct pl_catalog *c, const char *id)
{
        size_t slot;
        int32_t a = smap_find(c, &c->amap, artist_key, id, &slot);
        if (a >= 0)
                return a;
        if (c->nartists == c->artists_cap)
                return -1; /* sized from the track count: cannot happen */
        a = (int32_t)c->nartists++;
        snprintf(c->artist[a], PL_ID_LEN, "%s", id);
        c->amap.slot[slot] = a;
        return a;
}

static int32_t intern_genre(struct pl_catalog *c, const char *g)
{
        size_t slot;
        int32_t x = smap_find(c, &c->gmap, genre_key, g, &slot);
        if (x >= 0)
                return x;
        if (c->ngenres == c->genres_cap)
                return -1;
        x = (int32_t)c->ngenres++;
        if (!(c->genre[x] = strdup(g)))
                return -1;
        c->gmap.slot[slot] = x;
        return x;
}

static int cmp_pop(const void *a, const void *b, void *ctx)
{
        const struct pl_catalog *c = ctx;
        const struct track *x = &c->t[*(const int32_t *)a], *y = &c->t[*(const int32_t *)b];
        if (x->pop != y->pop)
                return x->pop > y->pop ? -1 : 1;
        return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

static int cmp_rel(const void *a, const void *b, void *ctx)
{
        const struct pl_catalog *c = ctx;
        const struct track *x = &c->t[*(const int32_t *)a], *y = &c->t[*(const int32_t *)b];
        if (x->rel != y->rel)
                return x->rel < y->rel ? -1 : 1;
        return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

/* Per-key lists from (key, track) memberships; keep(t) filters, cmp orders each list. */
static int make_lists(struct pl_catalog *c, struct lists *l, size_t nkeys, bool by_genre,
                      int (*keep)(const struct track *),
                      int (*cmp)(const void *, const void *, void *))
{
        l->off = calloc(nkeys + 1, sizeof(*l->off));
        size_t total = by_genre ? c->ntg : c->nt;
        l->idx = malloc((total ? total : 1) * sizeof(*l->idx));
        uint32_t *fill = calloc(nkeys + 1, sizeof(*fill));
        if (!l->off || !l->idx || !fill) {
                free(fill);
                return -1;
        }
        for (int pass = 0; pass < 2; pass++) {
                for (size_t i = 0; i < c->nt; i++) {
                        const struct track *t = &c->t[i];
                        if (keep && !keep(t))
                                continue;
                        uint32_t n = by_genre ? t->g_n : 1;
                        for (uint32_t j = 0; j < n; j++) {
                                int32_t k = by_genre ? c->tg[t->g_off + j] : t->artist;
                                if (pass == 0)
                                        l->off[k + 1]++;
                                else
                                        l->idx[l->off[k] + fill[k]++] = (int32_t)i;
                        }
                }
                if (pass == 0)
                        for (size_t k = 0; k < nkeys; k++)
                                l->off[k + 1] += l->off[k];
        }
        free(fill);
        for (size_t k = 0; cmp && k < nkeys; k++)
                qsort_r(l->idx + l->off[k], l->off[k + 1] - l->off[k], sizeof(int32_t), cmp, c);
        return 0;
}

static int keep_live(const struct track *t)
{
        return !t->deleted;
}

static int keep_released(const struct track *t)
{
        return !t->deleted && t->has_rel;
}

static int load_tracks(struct pl_catalog *c, struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        PGresult *r = qz_pg_query(
            pg,
            "SELECT id::text, artist_id::text, popularity, released_at - date '1970-01-01', "
            "deleted_at IS NOT NULL FROM tracks t ORDER BY t.id",
            0, NULL, errstr, errstr_size);
        if (!r)
                return -1;
        size_t n = (size_t)PQntuples(r);
        c->nt = n;
        c->artists_cap = n + 1;
        if (!(c->t = calloc(n + 1, sizeof(*c->t))) ||
            !(c->artist = calloc(c->artists_cap, sizeof(*c->artist))) ||
            smap_init(&c->tmap, n) != 0 || smap_init(&c->amap, n) != 0)
                goto oom;
        for (size_t i = 0; i < n; i++) {
                struct track *t = &c->t[i];
                snprintf(t->id, sizeof(t->id), "%s", PQgetvalue(r, (int)i, 0));
                t->key = pl_rules_hash(t->id, 0);
                t->artist = intern_artist(c, PQgetvalue(r, (int)i, 1));
                t->pop = (int16_t)atoi(PQgetvalue(r, (int)i, 2));
                t->has_rel = !PQgetisnull(r, (int)i, 3);
                t->rel = t->has_rel ? atoi(PQgetvalue(r, (int)i, 3)) : 0;
                t->deleted = PQgetvalue(r, (int)i, 4)[0] == 't';
                size_t slot;
                smap_find(c, &c->tmap, track_key, t->id, &slot);
                c->tmap.slot[slot] = (int32_t)i;
        }
        PQclear(r);
        /* Genres: one row per element (a repeated genre counts twice, as unnest does). */
        r = qz_pg_query(pg,
                        "SELECT t.id::text, x.g FROM tracks t, unnest(t.genres) AS x(g) "
                        "ORDER BY t.id",
                        0, NULL, errstr, errstr_size);
        if (!r)
                return -1;
        size_t ng = (size_t)PQntuples(r);
        c->ntg = ng;
        c->genres_cap = ng + 1;
        if (!(c->tg = malloc((ng + 1) * sizeof(*c->tg))) ||
            !(c->genre = calloc(c->genres_cap, sizeof(*c->genre))) || smap_init(&c->gmap, ng) != 0)
                goto oom;
        int32_t cur = -1;
        for (size_t i = 0; i < ng; i++) {
                int32_t ti = smap_find(c, &c->tmap, track_key, PQgetvalue(r, (int)i, 0), NULL);
                int32_t g = intern_genre(c, PQgetvalue(r, (int)i, 1));
                if (ti < 0 || g < 0)
                        goto oom;
                if (ti != cur) {
                        c->t[ti].g_off = (uint32_t)i;
                        cur = ti;
                }
                c->tg[i] = g;
                c->t[ti].g_n++;
        }
        PQclear(r);
        return 0;
oom:
        PQclear(r);
        snprintf(errstr, errstr_size, "catalog: out of memory or inconsistent rows");
        return -1;
}

static int load_neighbours(struct pl_catalog *c, struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        size_t cap = 1 << 16;
        c->nb_t = malloc(cap * sizeof(*c->nb_t));
        c->nb_s = malloc(cap * sizeof(*c->nb_s));
        c->nb_cf = malloc(cap * sizeof(*c->nb_cf));
        if (!c->nb_t || !c->nb_s || !c->nb_cf)
                goto oom;
        /* A cursor: 5M neighbours would not fit one PGresult comfortably. */
        if (qz_pg_exec(pg,
                       "DECLARE pl_nb NO SCROLL CURSOR FOR SELECT track_id::text, "
                       "similar_track_id::text, kind = 'cf', score FROM track_similarities s "
                       "ORDER BY s.track_id, s.kind, s.similar_track_id", /* uuid order */
                       errstr, errstr_size) != 0)
                return -1;
        int32_t cur = -1;
        for (;;) {
                PGresult *r =
                    qz_pg_query(pg, "FETCH 50000 FROM pl_nb", 0, NULL, errstr, errstr_size);
                if (!r)
                        return -1;
                int rows = PQntuples(r);
                for (int i = 0; i < rows; i++) {
                        /* Rows come grouped by track: most repeat the previous one. */
                        const char *as = PQgetvalue(r, i, 0);
                        int32_t a = cur >= 0 && strcmp(c->t[cur].id, as) == 0
                                        ? cur
                                        : smap_find(c, &c->tmap, track_key, as, NULL);
                        int32_t b = smap_find(c, &c->tmap, track_key, PQgetvalue(r, i, 1), NULL);
                        if (a < 0 || b < 0)
                                continue; /* cannot happen: foreign keys, one snapshot */
                        if (c->nnb == cap) {
                                cap *= 2;
                                int32_t *nt = realloc(c->nb_t, cap * sizeof(*nt));
                                if (nt)
                                        c->nb_t = nt;
                                float *ns = realloc(c->nb_s, cap * sizeof(*ns));
                                if (ns)
                                        c->nb_s = ns;
                                bool *nc = realloc(c->nb_cf, cap * sizeof(*nc));
                                if (nc)
                                        c->nb_cf = nc;
                                if (!nt || !ns || !nc) {
                                        PQclear(r);
                                        goto oom;
                                }
                        }
                        if (a != cur) {
                                c->t[a].nb_off = (uint32_t)c->nnb;
                                cur = a;
                        }
                        c->t[a].nb_n++;
                        c->nb_t[c->nnb] = b;
                        c->nb_s[c->nnb] = strtof(PQgetvalue(r, i, 3), NULL);
                        c->nb_cf[c->nnb] = PQgetvalue(r, i, 2)[0] == 't';
                        c->nnb++;
                }
                PQclear(r);
                if (rows == 0)
                        break;
        }
        return qz_pg_exec(pg, "CLOSE pl_nb", errstr, errstr_size);
oom:
        snprintf(errstr, errstr_size, "catalog: out of memory");
        return -1;
}

static int derive(struct pl_catalog *c)
{
        size_t n = c->nt ? c->nt : 1;
        if (make_lists(c, &c->by_artist, c->nartists, false, NULL, NULL) != 0 ||
            make_lists(c, &c->pop_genre, c->ngenres, true, keep_live, cmp_pop) != 0 ||
            make_lists(c, &c->rel_genre, c->ngenres, true, keep_released, cmp_rel) != 0)
                return -1;
        if (!(c->pop_all = malloc(n * sizeof(*c->pop_all))))
                return -1;
        for (size_t i = 0; i < c->nt; i++)
                if (!c->t[i].deleted)
                        c->pop_all[c->npop_all++] = (int32_t)i;
        qsort_r(c->pop_all, c->npop_all, sizeof(int32_t), cmp_pop, c);
        c->played = calloc(n, sizeof(uint32_t));
        c->recent = calloc(n, sizeof(uint32_t));
        c->seen = calloc(n, sizeof(uint32_t));
        c->accst = calloc(n, sizeof(uint32_t));
        c->acc = calloc(n, sizeof(double));
        c->touched = malloc(n * sizeof(int32_t));
        c->gcount = calloc(c->ngenres + 1, sizeof(long long));
        c->acount = calloc(c->nartists + 1, sizeof(long long));
        if (!c->played || !c->recent || !c->seen || !c->accst || !c->acc || !c->touched ||
            !c->gcount || !c->acount)
                return -1;
        return 0;
}

int pl_catalog_sync(struct pl_catalog *c, struct qz_pg *pg, bool *reloaded, char sqlstate[8],
                    char *errstr, size_t errstr_size)
{
        *reloaded = false;
        sqlstate[0] = '\0';
        PGresult *r = qz_pg_query(pg, "SELECT version FROM playlist_catalog_version", 0, NULL,
                                  errstr, errstr_size);
        if (!r) {
                snprintf(sqlstate, 8, "%s", qz_pg_sqlstate(pg));
                return -1;
        }
        if (PQntuples(r) != 1) {
                /* Without the row nothing would ever say the catalog changed. */
                PQclear(r);
                snprintf(errstr, errstr_size, "playlist_catalog_version has no row (sql/051)");
                snprintf(sqlstate, 8, "P0002");
                return -1;
        }
        long long v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (c->loaded && v == c->version)
                return 0;
        catalog_clear(c);
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                goto failed;
        if (qz_pg_exec(pg, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", errstr,
                       errstr_size) != 0)
                goto fail;
        /* The version again inside the snapshot: what is loaded is exactly that version. */
        if (!(r = qz_pg_query(pg, "SELECT version FROM playlist_catalog_version", 0, NULL, errstr,
                              errstr_size)))
                goto fail;
        v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        if (load_tracks(c, pg, errstr, errstr_size) != 0 ||
            load_neighbours(c, pg, errstr, errstr_size) != 0)
                goto fail;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                goto failed;
        if (derive(c) != 0) {
                catalog_clear(c);
                snprintf(errstr, errstr_size, "catalog: out of memory");
                return -1;
        }
        c->version = v;
        c->loaded = true;
        *reloaded = true;
        return 0;
fail:
        /* The state first: the rollback clears it. */
        snprintf(sqlstate, 8, "%s", qz_pg_sqlstate(pg));
        qz_pg_rollback(pg, NULL, 0);
        catalog_clear(c);
        return -1;
failed:
        snprintf(sqlstate, 8, "%s", qz_pg_sqlstate(pg));
        catalog_clear(c);
        return -1;
}

/* ---- a batch of users ---- */

void pl_cat_batch_free(struct pl_cat_batch *b)
{
        for (size_t i = 0; b->users && i < b->nusers; i++)
                free(b->users[i].pairs);
        free(b->users);
        free(b->umap);
        if (b->cat)
                b->cat->active = b->cat->acc_user = NULL;
        memset(b, 0, sizeof(*b));
}

const struct pl_cat_user *pl_cat_batch_user(const struct pl_cat_batch *b, const char *user_id)
{
        if (!user_id || !b->umap)
                return NULL;
        size_t i = (size_t)hash_str(user_id, strlen(user_id)) & b->umask;
        while (b->umap[i] >= 0) {
                if (strcasecmp(b->users[b->umap[i]].id, user_id) == 0)
                        return &b->users[b->umap[i]];
                i = (i + 1) & b->umask;
        }
        return NULL;
}

static void batch_index(struct pl_cat_batch *b, size_t u)
{
        size_t i = (size_t)hash_str(b->users[u].id, strlen(b->users[u].id)) & b->umask;
        while (b->umap[i] >= 0)
                i = (i + 1) & b->umask;
        b->umap[i] = (int32_t)u;
}

static int cmp_seed(const void *a, const void *b)
{
        const struct pl_cat_pair *x = *(const struct pl_cat_pair *const *)a,
                                 *y = *(const struct pl_cat_pair *const *)b;
        if (x->seed != y->seed)
                return x->seed > y->seed ? -1 : 1;
        return strcmp(x->id, y->id);
}

/* The profile (pl_profile): top 5 genres and top 10 artists of all plays of known tracks
 * (deleted ones too), count desc then name/id; the seeds (SEEDS_SQL). */
static int genre_before(const struct pl_catalog *c, int32_t a, int32_t b)
{
        return strcmp(c->genre[a], c->genre[b]) < 0;
}

static int artist_before(const struct pl_catalog *c, int32_t a, int32_t b)
{
        return strcmp(c->artist[a], c->artist[b]) < 0;
}

/* Moves the first min(limit, n) of ids by count (descending; ties: before()) to the front of ids,
 * in order, by selection (limit is 5 or 10, so cheaper than a sort). Returns how many. */
static size_t top_by_count(const struct pl_catalog *c, int32_t *ids, size_t n, size_t limit,
                           const long long *count,
                           int (*before)(const struct pl_catalog *, int32_t, int32_t))
{
        size_t k;
        for (k = 0; k < limit && k < n; k++) {
                size_t best = k;
                for (size_t i = k + 1; i < n; i++) {
                        long long ci = count[ids[i]], cb = count[ids[best]];
                        if (ci > cb || (ci == cb && before(c, ids[i], ids[best])))
                                best = i;
                }
                int32_t x = ids[k];
                ids[k] = ids[best];
                ids[best] = x;
        }
        return k;
}

static int profile(struct pl_catalog *c, struct pl_cat_user *u)
{
        int32_t *gt = malloc((c->ngenres + 1) * sizeof(*gt));
        int32_t *at = malloc((u->npairs + 1) * sizeof(*at));
        const struct pl_cat_pair **sp = malloc((u->npairs + 1) * sizeof(*sp));
        if (!gt || !at || !sp) {
                free(gt);
                free(at);
                free(sp);
                return -1;
        }
        size_t ngt = 0, nat = 0, nsp = 0;
        for (size_t i = 0; i < u->npairs; i++) {
                const struct pl_cat_pair *p = &u->pairs[i];
                u->nplays += p->cnt;
                if (p->has_seed)
                        sp[nsp++] = p;
                if (p->track < 0)
                        continue;
                const struct track *t = &c->t[p->track];
                for (uint32_t j = 0; j < t->g_n; j++) {
                        int32_t g = c->tg[t->g_off + j];
                        if (c->gcount[g] == 0)
                                gt[ngt++] = g;
                        c->gcount[g] += p->cnt;
                }
                if (c->acount[t->artist] == 0)
                        at[nat++] = t->artist;
                c->acount[t->artist] += p->cnt;
        }
        /* the profile: top 5 genres and top 10 artists by plays, ties by name */
        size_t m = top_by_count(c, gt, ngt, 5, c->gcount, genre_before);
        for (size_t k = 0; k < m; k++)
                u->genres[u->ngenres++] = gt[k];
        m = top_by_count(c, at, nat, 10, c->acount, artist_before);
        for (size_t k = 0; k < m; k++)
                u->artists[u->nartists++] = at[k];
        for (size_t i = 0; i < ngt; i++)
                c->gcount[gt[i]] = 0;
        for (size_t i = 0; i < nat; i++)
                c->acount[at[i]] = 0;
        qsort(sp, nsp, sizeof(*sp), cmp_seed);
        for (size_t i = 0; i < nsp && i < 50; i++)
                u->seeds[u->nseeds++] = (size_t)(sp[i] - u->pairs);
        free(gt);
        free(at);
        free(sp);
        return 0;
}

/* "{id,id,...}": a uuid[] literal of ids[0..n) (uuids, at most 36 characters each); malloc'd,
 * the caller frees; NULL on no memory. */
static char *ids_literal(const char *const *ids, size_t n)
{
        char *lit = malloc(n * 37 + 3);
        if (!lit)
                return NULL;
        size_t o = 0;
        lit[o++] = '{';
        for (size_t i = 0; i < n; i++) {
                size_t len = strnlen(ids[i], 36);
                if (i)
                        lit[o++] = ',';
                memcpy(lit + o, ids[i], len);
                o += len;
        }
        lit[o++] = '}';
        lit[o] = '\0';
        return lit;
}

int pl_cat_batch_load(struct pl_cat_batch *b, struct pl_catalog *c, struct qz_pg *pg,
                      const char *const *user_ids, size_t n, int64_t now_ms, const char *now,
                      const char *tau, char *errstr, size_t errstr_size)
{
        memset(b, 0, sizeof(*b));
        b->cat = c;
        b->now_ms = now_ms;
        char *lit = NULL;
        const char **ids = NULL;
        size_t *cnt = NULL;
        PGresult *r = NULL;
        if (!(b->users = calloc(n ? n : 1, sizeof(*b->users))))
                goto oom;
        b->umask = 15;
        while (b->umask + 1 < n * 2)
                b->umask = b->umask * 2 + 1;
        if (!(b->umap = malloc((b->umask + 1) * sizeof(*b->umap))))
                goto oom;
        memset(b->umap, 0xff, (b->umask + 1) * sizeof(*b->umap));
        if (!(ids = malloc((n ? n : 1) * sizeof(*ids))))
                goto oom;
        for (size_t i = 0; i < n; i++) {
                if (pl_cat_batch_user(b, user_ids[i]))
                        continue;
                struct pl_cat_user *u = &b->users[b->nusers++];
                for (size_t k = 0; k < PL_ID_LEN - 1 && user_ids[i][k]; k++)
                        u->id[k] = (char)tolower((unsigned char)user_ids[i][k]);
                batch_index(b, b->nusers - 1);
                ids[b->nusers - 1] = u->id;
        }
        lit = ids_literal(ids, b->nusers); /* the distinct users, lowercased */
        free(ids);
        if (!lit)
                goto oom;
        const char *v[] = {lit, now, tau};
        /* Every user's plays per track before now, with the pools' scores computed by the same
         * expressions as gen.c's statements (so the floating-point values are the same). */
        r = qz_pg_query(
            pg,
            "SELECT h.user_id::text, h.track_id::text, count(*), count(*) FILTER (WHERE "
            "h.played_at >= $2::timestamptz - interval '30 days'), "
            "sum(CASE WHEN h.completed THEN 1.0 ELSE 0.5 END * "
            "exp(-date_part('epoch', $2::timestamptz - h.played_at) / 86400.0 / $3::float8)) "
            "FILTER (WHERE h.played_at >= $2::timestamptz - interval '30 days'), "
            "sum(exp(-date_part('epoch', $2::timestamptz - h.played_at) / 86400.0 / "
            "$3::float8)) FILTER (WHERE h.played_at >= $2::timestamptz - interval '90 days'), "
            "count(*)::float8 + extract(epoch FROM max(h.played_at)) / 1e10, "
            "max(h.played_at) < $2::timestamptz - interval '60 days' "
            "FROM play_history h WHERE h.user_id = ANY ($1::uuid[]) "
            "AND h.played_at < $2::timestamptz GROUP BY h.user_id, h.track_id",
            3, v, errstr, errstr_size);
        if (!r)
                goto fail;
        int rows = PQntuples(r);
        int32_t *owner = malloc(((size_t)rows + 1) * sizeof(*owner));
        if (!owner)
                goto oom;
        for (int i = 0; i < rows; i++) {
                const struct pl_cat_user *u = pl_cat_batch_user(b, PQgetvalue(r, i, 0));
                owner[i] = u ? (int32_t)(u - b->users) : -1;
                if (u)
                        b->users[owner[i]].npairs++;
        }
        for (size_t i = 0; i < b->nusers; i++)
                if (!(b->users[i].pairs =
                          calloc(b->users[i].npairs + 1, sizeof(*b->users[i].pairs)))) {
                        free(owner);
                        goto oom;
                }
        if (!(cnt = calloc(b->nusers + 1, sizeof(*cnt)))) {
                free(owner);
                goto oom;
        }
        for (int i = 0; i < rows; i++) {
                if (owner[i] < 0)
                        continue;
                struct pl_cat_user *u = &b->users[owner[i]];
                struct pl_cat_pair *p = &u->pairs[cnt[owner[i]]++];
                snprintf(p->id, sizeof(p->id), "%s", PQgetvalue(r, i, 1));
                p->track = smap_find(c, &c->tmap, track_key, p->id, NULL);
                p->cnt = atoi(PQgetvalue(r, i, 2));
                p->cnt30 = atoi(PQgetvalue(r, i, 3));
                p->recent = PQgetisnull(r, i, 4) ? 0 : strtod(PQgetvalue(r, i, 4), NULL);
                p->has_seed = !PQgetisnull(r, i, 5);
                p->seed = p->has_seed ? strtod(PQgetvalue(r, i, 5), NULL) : 0;
                p->fscore = strtod(PQgetvalue(r, i, 6), NULL);
                p->old = PQgetvalue(r, i, 7)[0] == 't';
        }
        free(owner);
        PQclear(r);
        r = NULL;
        const char *vu[] = {lit};
        if (!(r = qz_pg_query(pg, "SELECT id::text FROM users WHERE id = ANY ($1::uuid[])", 1, vu,
                              errstr, errstr_size)))
                goto fail;
        for (int i = 0; i < PQntuples(r); i++) {
                struct pl_cat_user *u =
                    (struct pl_cat_user *)pl_cat_batch_user(b, PQgetvalue(r, i, 0));
                if (u)
                        u->known = true;
        }
        PQclear(r);
        r = NULL;
        for (size_t i = 0; i < b->nusers; i++)
                if (profile(c, &b->users[i]) != 0)
                        goto oom;
        free(cnt);
        free(lit);
        return 0;
oom:
        snprintf(errstr, errstr_size, "out of memory");
fail:
        PQclear(r);
        free(cnt);
        free(lit);
        pl_cat_batch_free(b);
        return -1;
}

static int cmp_id(const void *a, const void *b)
{
        return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

int pl_cat_batch_plays(struct qz_pg *pg, const char *const *user_ids, size_t n, const char *now,
                       long long *plays, char *errstr, size_t errstr_size)
{
        char *lit = ids_literal(user_ids, n);
        if (!lit) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        for (size_t i = 0; i < n; i++)
                plays[i] = 0;
        const char *v[] = {lit, now};
        /* Plays, not distinct tracks: an index-only scan of play_history (user_id, played_at),
         * where counting the tracks would read the rows. Plays bound a user's load rows. */
        PGresult *r = qz_pg_query(pg,
                                  "SELECT user_id::text, count(*) FROM play_history WHERE "
                                  "user_id = ANY ($1::uuid[]) AND played_at < $2::timestamptz "
                                  "GROUP BY 1",
                                  2, v, errstr, errstr_size);
        free(lit);
        if (!r)
                return -1;
        for (int i = 0; i < PQntuples(r); i++) {
                const char *id = PQgetvalue(r, i, 0);
                const char *const *hit = bsearch(&id, user_ids, n, sizeof(*user_ids), cmp_id);
                if (hit)
                        plays[hit - user_ids] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        }
        PQclear(r);
        return 0;
}

/* ---- pools ---- */

static int32_t today(const struct pl_cat_batch *b)
{
        int64_t d = b->now_ms / DAY_MS;
        if (b->now_ms < 0 && b->now_ms % DAY_MS)
                d--;
        return (int32_t)d;
}

/* Marks u's played and recently played tracks (once per user). */
static void activate(struct pl_cat_batch *b, const struct pl_cat_user *u)
{
        struct pl_catalog *c = b->cat;
        if (c->active == u)
                return;
        if (++c->stamp == 0) {
                memset(c->played, 0, c->nt * sizeof(uint32_t));
                memset(c->recent, 0, c->nt * sizeof(uint32_t));
                c->stamp = 1;
        }
        for (size_t i = 0; i < u->npairs; i++) {
                const struct pl_cat_pair *p = &u->pairs[i];
                if (p->track < 0)
                        continue;
                c->played[p->track] = c->stamp;
                if (p->cnt30 > 0)
                        c->recent[p->track] = c->stamp;
        }
        c->active = u;
}

/* The seeds' similarity sums (the nb / aff CTEs), in seed order then neighbour order. */
static void accumulate(struct pl_cat_batch *b, const struct pl_cat_user *u, double cw)
{
        struct pl_catalog *c = b->cat;
        if (c->acc_user == u && c->acc_cw == cw)
                return;
        if (++c->accstamp == 0) {
                memset(c->accst, 0, c->nt * sizeof(uint32_t));
                c->accstamp = 1;
        }
        c->ntouched = 0;
        for (size_t s = 0; s < u->nseeds; s++) {
                const struct pl_cat_pair *p = &u->pairs[u->seeds[s]];
                if (p->track < 0)
                        continue;
                const struct track *t = &c->t[p->track];
                for (uint32_t j = t->nb_off; j < t->nb_off + t->nb_n; j++) {
                        int32_t x = c->nb_t[j];
                        double term = p->seed * (double)c->nb_s[j] * (c->nb_cf[j] ? 1.0 : cw);
                        if (c->accst[x] != c->accstamp) {
                                c->accst[x] = c->accstamp;
                                c->acc[x] = term;
                                c->touched[c->ntouched++] = x;
                        } else {
                                c->acc[x] += term;
                        }
                }
        }
        c->acc_user = u;
        c->acc_cw = cw;
}

#define scored pl_cat_scored

static int cmp_scored(const void *a, const void *b)
{
        const struct scored *x = a, *y = b;
        if (x->s != y->s)
                return x->s > y->s ? -1 : 1;
        return x->track < y->track ? -1 : (x->track > y->track);
}

static bool before(const struct scored *x, const struct scored *y)
{
        return x->s > y->s || (x->s == y->s && x->track < y->track);
}

void pl_cat_top(struct pl_cat_scored *v, size_t n, size_t k)
{
        /* Quickselect (Hoare partition, middle pivot) until v[0..k) holds the k first in
         * order, then sort only those. */
        size_t lo = 0, hi = n;
        while (lo < k && k < hi && hi - lo > 1) {
                /* The lower middle: with it Hoare's j stays below hi - 1, so each round
                 * shrinks the range. */
                struct scored pivot = v[lo + (hi - lo - 1) / 2];
                size_t i = lo, j = hi - 1;
                for (;;) {
                        while (before(&v[i], &pivot))
                                i++;
                        while (before(&pivot, &v[j]))
                                j--;
                        if (i >= j)
                                break;
                        struct scored t = v[i];
                        v[i] = v[j];
                        v[j] = t;
                        i++;
                        j--;
                }
                /* v[lo..j] <= pivot <= v[j+1..hi) */
                if (k <= j + 1)
                        hi = j + 1;
                else
                        lo = j + 1;
        }
        qsort(v, n < k ? n : k, sizeof(*v), cmp_scored);
}

/* Sorts (score desc, id asc: the index order is the id order) and pushes the first limit. */
static int push_sorted(struct pl_catalog *c, struct scored *v, size_t n, size_t limit,
                       struct pl_pool *out)
{
        pl_cat_top(v, n, limit);
        for (size_t i = 0; i < n && i < limit; i++)
                if (pl_pool_push(out, c->t[v[i].track].id, c->artist[c->t[v[i].track].artist],
                                 v[i].s) != 0)
                        return -1;
        return 0;
}

/* Scores one of the user's (track, plays) pairs into *score; false = not a candidate. */
typedef bool (*pair_score_fn)(const struct pl_cat_pair *p, double *score);

/* The user's played tracks, live in the catalog, that score() keeps, best first, up to limit. */
static int pair_pool(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                     pair_score_fn score, struct pl_pool *out)
{
        struct pl_catalog *c = b->cat;
        struct scored *v = malloc((u->npairs + 1) * sizeof(*v));
        size_t n = 0;
        if (!v)
                return -1;
        for (size_t i = 0; i < u->npairs; i++) {
                const struct pl_cat_pair *p = &u->pairs[i];
                double sc;
                if (p->track >= 0 && !c->t[p->track].deleted && score(p, &sc))
                        v[n++] = (struct scored){p->track, sc};
        }
        int rc = push_sorted(c, v, n, limit, out);
        free(v);
        return rc;
}

/* played in the last 30 days; the recency-weighted score */
static bool recent_score(const struct pl_cat_pair *p, double *score)
{
        *score = p->recent;
        return p->cnt30 > 0;
}

int pl_cat_recent(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                  struct pl_pool *out)
{
        return pair_pool(b, u, limit, recent_score, out);
}

int pl_cat_neighbours(struct pl_cat_batch *b, const struct pl_cat_user *u, double cw, size_t limit,
                      struct pl_pool *out)
{
        struct pl_catalog *c = b->cat;
        activate(b, u);
        accumulate(b, u, cw);
        struct scored *v = malloc((c->ntouched + 1) * sizeof(*v));
        size_t n = 0;
        if (!v)
                return -1;
        for (size_t i = 0; i < c->ntouched; i++) {
                int32_t x = c->touched[i];
                if (!c->t[x].deleted && c->recent[x] != c->stamp)
                        v[n++] = (struct scored){x, c->acc[x]};
        }
        int rc = push_sorted(c, v, n, limit, out);
        free(v);
        return rc;
}

/* Scores track x, of the user's rank-th top artist, into *score; false = not a candidate. */
typedef bool (*artist_score_fn)(const struct pl_catalog *c, int32_t x, size_t rank, int32_t day,
                                double *score);

/* The tracks of the user's top artists that score() keeps, best first, up to limit. */
static int artist_pool(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                       artist_score_fn score, struct pl_pool *out)
{
        struct pl_catalog *c = b->cat;
        int32_t day = today(b);
        size_t cap = 0, n = 0;
        for (size_t i = 0; i < u->nartists; i++)
                cap += c->by_artist.off[u->artists[i] + 1] - c->by_artist.off[u->artists[i]];
        struct scored *v = malloc((cap + 1) * sizeof(*v));
        if (!v)
                return -1;
        for (size_t i = 0; i < u->nartists; i++) {
                int32_t a = u->artists[i];
                for (uint32_t j = c->by_artist.off[a]; j < c->by_artist.off[a + 1]; j++) {
                        int32_t x = c->by_artist.idx[j];
                        double sc;
                        if (score(c, x, i, day, &sc))
                                v[n++] = (struct scored){x, sc};
                }
        }
        int rc = push_sorted(c, v, n, limit, out);
        free(v);
        return rc;
}

/* released, live and not among the recent plays (activate() stamped them) */
static bool artist_track_score(const struct pl_catalog *c, int32_t x, size_t rank, int32_t day,
                               double *score)
{
        const struct track *t = &c->t[x];
        if (t->deleted || (t->has_rel && t->rel > day) || c->recent[x] == c->stamp)
                return false;
        /* popularity / 100.0 + 0.5 * (11 - position) / 10.0, exact in 1/1000s */
        long k = (long)t->pop * 10 + 50L * (long)(10 - rank);
        *score = (double)k / 1000.0;
        return true;
}

int pl_cat_artist_tracks(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                         struct pl_pool *out)
{
        activate(b, u);
        return artist_pool(b, u, limit, artist_track_score, out);
}

static bool popular_ok(const struct pl_catalog *c, int32_t x, int32_t day, int mode)
{
        const struct track *t = &c->t[x];
        if (t->has_rel && t->rel > day)
                return false;
        if (mode == 1 && c->recent[x] == c->stamp)
                return false;
        if (mode == 2 && c->played[x] == c->stamp)
                return false;
        return true;
}

int pl_cat_popular(struct pl_cat_batch *b, const struct pl_cat_user *u, bool by_genre,
                   const char *exclude, size_t limit, struct pl_pool *out)
{
        struct pl_catalog *c = b->cat;
        activate(b, u);
        int32_t day = today(b);
        int mode = strcmp(exclude, "recent") == 0 ? 1 : strcmp(exclude, "ever") == 0 ? 2 : 0;
        if (!by_genre) {
                for (size_t i = 0; i < c->npop_all && out->n < limit; i++) {
                        int32_t x = c->pop_all[i];
                        if (popular_ok(c, x, day, mode) &&
                            pl_pool_push(out, c->t[x].id, c->artist[c->t[x].artist],
                                         (double)c->t[x].pop) != 0)
                                return -1;
                }
                return 0;
        }
        /* A merge of the genres' lists, all in the same order (popularity desc, id). */
        uint32_t pos[5], end[5];
        size_t ng = u->ngenres;
        for (size_t g = 0; g < ng; g++) {
                pos[g] = c->pop_genre.off[u->genres[g]];
                end[g] = c->pop_genre.off[u->genres[g] + 1];
        }
        int32_t last = -1;
        while (out->n < limit) {
                int32_t best = -1;
                size_t bg = 0;
                for (size_t g = 0; g < ng; g++) {
                        if (pos[g] == end[g])
                                continue;
                        int32_t x = c->pop_genre.idx[pos[g]];
                        if (best < 0 || c->t[x].pop > c->t[best].pop ||
                            (c->t[x].pop == c->t[best].pop && x < best)) {
                                best = x;
                                bg = g;
                        }
                }
                if (best < 0)
                        break;
                pos[bg]++;
                if (best == last)
                        continue; /* the same track in two of the genres */
                last = best;
                if (popular_ok(c, best, day, mode) &&
                    pl_pool_push(out, c->t[best].id, c->artist[c->t[best].artist],
                                 (double)c->t[best].pop) != 0)
                        return -1;
        }
        return 0;
}

/* released in the last 30 days, live; newest first, then popularity */
static bool new_release_score(const struct pl_catalog *c, int32_t x, size_t rank, int32_t day,
                              double *score)
{
        (void)rank;
        const struct track *t = &c->t[x];
        if (t->deleted || !t->has_rel || t->rel < day - 30 || t->rel > day)
                return false;
        *score = (double)(t->rel - (day - 30)) + (double)t->pop / 1000.0;
        return true;
}

int pl_cat_new_for_you(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                       struct pl_pool *out)
{
        return artist_pool(b, u, limit, new_release_score, out);
}

/* 3+ plays, none in the last 60 days; most played first */
static bool forgotten_score(const struct pl_cat_pair *p, double *score)
{
        *score = p->fscore;
        return p->cnt >= 3 && p->old;
}

int pl_cat_forgotten(struct pl_cat_batch *b, const struct pl_cat_user *u, size_t limit,
                     struct pl_pool *out)
{
        return pair_pool(b, u, limit, forgotten_score, out);
}

long pl_cat_discovery(struct pl_cat_batch *b, const struct pl_cat_user *u, double cw,
                      struct pl_cat_disc **rows)
{
        struct pl_catalog *c = b->cat;
        activate(b, u);
        accumulate(b, u, cw);
        int32_t day = today(b);
        size_t cap = 0, n = 0;
        for (size_t g = 0; g < u->ngenres; g++)
                cap += c->rel_genre.off[u->genres[g] + 1] - c->rel_genre.off[u->genres[g]];
        struct pl_cat_disc *v = malloc((cap + 1) * sizeof(*v));
        if (!v)
                return -1;
        if (++c->call == 0) {
                memset(c->seen, 0, c->nt * sizeof(uint32_t));
                c->call = 1;
        }
        for (size_t g = 0; g < u->ngenres; g++) {
                int32_t k = u->genres[g];
                uint32_t lo = c->rel_genre.off[k], hi = c->rel_genre.off[k + 1];
                while (lo < hi) { /* first with released_at >= today - 90 */
                        uint32_t mid = lo + (hi - lo) / 2;
                        if (c->t[c->rel_genre.idx[mid]].rel < day - 90)
                                lo = mid + 1;
                        else
                                hi = mid;
                }
                for (uint32_t j = lo; j < c->rel_genre.off[k + 1]; j++) {
                        int32_t x = c->rel_genre.idx[j];
                        if (c->t[x].rel > day)
                                break;
                        if (c->seen[x] == c->call || c->played[x] == c->stamp)
                                continue;
                        c->seen[x] = c->call;
                        v[n++] = (struct pl_cat_disc){x, c->t[x].key, (double)c->t[x].pop,
                                                      c->accst[x] == c->accstamp ? c->acc[x] : 0};
                }
        }
        *rows = v;
        return (long)n;
}
