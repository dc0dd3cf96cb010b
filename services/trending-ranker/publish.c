/* publish.c - ranked lists into Redis (atomic swap) and the top 100 into trending_tracks. */
#include "publish.h"

#include "catalog.h"
#include "json.h"
#include "pg.h"
#include "redis.h"
#include "redis_swap.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <uuid/uuid.h>

#define KEY_PREFIX "qoqnuz:trending:"

struct publish {
        struct qz_redis *r;
        struct qz_redis_swap *swap;
        size_t max_list;
        char **prev; /* keys written by the previous publish (genre lists, track hashes) */
        size_t nprev;
};

struct publish *publish_new(struct qz_redis *r, const char *tmp_prefix, size_t max_list)
{
        struct publish *p = calloc(1, sizeof(*p));
        if (!p || !(p->swap = qz_redis_swap_new(r, tmp_prefix))) {
                free(p);
                return NULL;
        }
        p->r = r;
        p->max_list = max_list;
        return p;
}

static void free_keys(char **k, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(k[i]);
        free(k);
}

void publish_free(struct publish *p)
{
        if (!p)
                return;
        qz_redis_swap_free(p->swap);
        free_keys(p->prev, p->nprev);
        free(p);
}

struct keyset {
        char **k;
        size_t n, cap;
};

static int keyset_add(struct keyset *s, const char *k)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 256;
                void *g = realloc(s->k, cap * sizeof(char *));
                if (!g)
                        return -1;
                s->k = g;
                s->cap = cap;
        }
        char *copy = strdup(k);
        if (!copy)
                return -1;
        s->k[s->n++] = copy;
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An empty set has no array (k NULL), which qsort must not be given. */
static void keyset_sort(struct keyset *s)
{
        if (s->n > 1)
                qsort(s->k, s->n, sizeof(char *), cmp_str);
}

/* One ZSET of up to max_list items, appended as ZADD commands of 256 members. */
static void zadd_list(struct publish *p, const char *tmp, const struct window *w,
                      const struct rank_item *const *items, size_t n)
{
        enum { CHUNK = 256 };
        const char *argv[2 + 2 * CHUNK];
        char scores[CHUNK][32], ids[CHUNK][37];
        for (size_t i = 0; i < n;) {
                int argc = 2;
                argv[0] = "ZADD";
                argv[1] = tmp;
                for (size_t k = 0; k < CHUNK && i < n; k++, i++) {
                        snprintf(scores[k], sizeof(scores[k]), "%.17g", items[i]->score);
                        uuid_unparse_lower(window_track_id(w, items[i]->track), ids[k]);
                        argv[argc++] = scores[k];
                        argv[argc++] = ids[k];
                }
                qz_redis_append_argv(p->r, argc, argv, NULL);
        }
}

int publish_redis(struct publish *p, const struct window *w, const struct qz_catalog *cat,
                  const struct rank_item *items, size_t n, int64_t calculated_at_ms,
                  const char *source, char *errstr, size_t errstr_size)
{
        struct keyset now = {0}, genres = {0};
        const struct rank_item **list = NULL;
        const struct qz_catalog_track **cats = NULL;
        bool *listed = NULL;
        char calc[40], key[512];
        const char *tmp;
        int rc = -1;
        size_t top = n < p->max_list ? n : p->max_list;
        qz_time_format(calculated_at_ms, calc, sizeof(calc));
        if (!(list = malloc((n ? n : 1) * sizeof(*list))) ||
            !(cats = malloc((n ? n : 1) * sizeof(*cats))) ||
            !(listed = calloc(n ? n : 1, sizeof(*listed))))
                goto oom;
        for (size_t i = 0; i < n; i++) {
                char id[37];
                uuid_unparse_lower(window_track_id(w, items[i].track), id);
                cats[i] = qz_catalog_get(cat, id);
                for (size_t g = 0; cats[i] && g < cats[i]->ngenres; g++) {
                        snprintf(key, sizeof(key), KEY_PREFIX "genre:%s", cats[i]->genres[g]);
                        if (keyset_add(&genres, key) != 0)
                                goto oom;
                }
        }

        /* global list */
        for (size_t i = 0; i < top; i++) {
                list[i] = &items[i];
                listed[i] = true;
        }
        if (!(tmp = qz_redis_swap_key(p->swap, KEY_PREFIX "global")))
                goto oom;
        zadd_list(p, tmp, w, list, top);

        /* genre lists: the items are sorted, so each genre's first max_list are its top */
        keyset_sort(&genres);
        for (size_t gi = 0; gi < genres.n; gi++) {
                if (gi > 0 && strcmp(genres.k[gi], genres.k[gi - 1]) == 0)
                        continue;
                const char *gname = genres.k[gi] + strlen(KEY_PREFIX "genre:");
                size_t k = 0;
                for (size_t i = 0; i < n && k < p->max_list; i++)
                        for (size_t g = 0; cats[i] && g < cats[i]->ngenres; g++)
                                if (strcmp(cats[i]->genres[g], gname) == 0) {
                                        listed[i] = true;
                                        list[k++] = &items[i];
                                        break;
                                }
                if (!(tmp = qz_redis_swap_key(p->swap, genres.k[gi])) ||
                    keyset_add(&now, genres.k[gi]) != 0)
                        goto oom;
                zadd_list(p, tmp, w, list, k);
        }

        /* the hash of every listed track */
        for (size_t i = 0; i < n; i++) {
                char id[37], f[5][32], dur[24];
                const struct qz_catalog_track *t = cats[i];
                if (!listed[i])
                        continue;
                uuid_unparse_lower(window_track_id(w, items[i].track), id);
                snprintf(key, sizeof(key), KEY_PREFIX "track:%s", id);
                if (!(tmp = qz_redis_swap_key(p->swap, key)) || keyset_add(&now, key) != 0)
                        goto oom;
                snprintf(f[0], sizeof(f[0]), "%.17g", items[i].score);
                snprintf(f[1], sizeof(f[1]), "%u", items[i].c.plays_24h);
                snprintf(f[2], sizeof(f[2]), "%u", items[i].c.plays_7d);
                snprintf(f[3], sizeof(f[3]), "%u", items[i].c.listeners_24h);
                snprintf(f[4], sizeof(f[4]), "%u", items[i].c.listeners_7d);
                snprintf(dur, sizeof(dur), "%ld", t ? t->duration_ms : 0L);
                /* a JSON array, not a comma list: a genre may itself contain a comma */
                json_t *ga = json_array();
                for (size_t g = 0; ga && t && g < t->ngenres; g++)
                        json_array_append_new(ga, json_string(t->genres[g]));
                char *gjson = ga ? json_dumps(ga, JSON_COMPACT) : NULL;
                json_decref(ga);
                if (!gjson)
                        goto oom;
                const char *argv[] = {"HSET",
                                      tmp,
                                      "trend_score",
                                      f[0],
                                      "play_count_24h",
                                      f[1],
                                      "play_count_7d",
                                      f[2],
                                      "unique_listeners_24h",
                                      f[3],
                                      "unique_listeners_7d",
                                      f[4],
                                      "calculated_at",
                                      calc,
                                      "title",
                                      t ? t->title : "",
                                      "artist_id",
                                      t ? t->artist_id : "",
                                      "artist_name",
                                      t ? t->artist_name : "",
                                      "album_id",
                                      t ? t->album_id : "",
                                      "album_title",
                                      t ? t->album_title : "",
                                      "duration_ms",
                                      dur,
                                      "genres",
                                      gjson};
                qz_redis_append_argv(p->r, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
                free(gjson);
        }

        /* meta */
        if (!(tmp = qz_redis_swap_key(p->swap, KEY_PREFIX "meta")))
                goto oom;
        {
                const char *argv[] = {"HSET",   tmp,      "calculated_at", calc,
                                      "window", "24h,7d", "source",        source};
                qz_redis_append_argv(p->r, 8, argv, NULL);
        }

        /* keys of the previous publish not in this one: deleted in the same swap */
        keyset_sort(&now);
        for (size_t i = 0; i < p->nprev; i++)
                if (!bsearch(&p->prev[i], now.k, now.n, sizeof(char *), cmp_str))
                        if (qz_redis_swap_delete(p->swap, p->prev[i]) != 0)
                                goto oom;
        if (qz_redis_swap_commit(p->swap, errstr, errstr_size) != 0)
                goto done;
        free_keys(p->prev, p->nprev);
        p->prev = now.k;
        p->nprev = now.n;
        now.k = NULL;
        now.n = 0;
        rc = 0;
        goto done;
oom:
        snprintf(errstr, errstr_size, "publish: out of memory");
        {
                char ignore[8];
                qz_redis_swap_commit(p->swap, ignore, sizeof(ignore)); /* drops the queue */
        }
done:
        free_keys(now.k, now.n);
        free_keys(genres.k, genres.n);
        free(list);
        free(cats);
        free(listed);
        return rc;
}

/* Appends v to a Postgres array literal being built in *buf ("{" first, "}" added by the
 * caller). */
static int arr_add(char **buf, size_t *len, size_t *cap, const char *v)
{
        size_t need = *len + strlen(v) + 3;
        if (need > *cap) {
                size_t c = *cap ? *cap * 2 : 4096;
                while (c < need)
                        c *= 2;
                char *g = realloc(*buf, c);
                if (!g)
                        return -1;
                *buf = g;
                *cap = c;
        }
        *len += (size_t)sprintf(*buf + *len, "%s%s", *len > 1 ? "," : "", v);
        return 0;
}

int publish_pg(struct qz_pg *pg, const struct publish_row *rows, size_t n, int64_t calculated_at_ms,
               char *errstr, size_t errstr_size)
{
        char *a[6] = {0};
        size_t len[6], cap[6];
        char calc[40];
        int rc = -1;
        qz_time_format(calculated_at_ms, calc, sizeof(calc));
        for (int k = 0; k < 6; k++) {
                if (!(a[k] = malloc(cap[k] = 4096)))
                        goto oom;
                strcpy(a[k], "{");
                len[k] = 1;
        }
        for (size_t i = 0; i < n; i++) {
                char id[37], v[5][32];
                uuid_unparse_lower(rows[i].id, id);
                snprintf(v[0], sizeof(v[0]), "%.17g", rows[i].score);
                snprintf(v[1], sizeof(v[1]), "%u", rows[i].c.plays_24h);
                snprintf(v[2], sizeof(v[2]), "%u", rows[i].c.plays_7d);
                snprintf(v[3], sizeof(v[3]), "%u", rows[i].c.listeners_24h);
                snprintf(v[4], sizeof(v[4]), "%u", rows[i].c.listeners_7d);
                if (arr_add(&a[0], &len[0], &cap[0], id) != 0)
                        goto oom;
                for (int k = 0; k < 5; k++)
                        if (arr_add(&a[k + 1], &len[k + 1], &cap[k + 1], v[k]) != 0)
                                goto oom;
        }
        for (int k = 0; k < 6; k++)
                strcpy(a[k] + len[k], "}"); /* arr_add always leaves room for 2 more bytes */
        const char *params[] = {a[0], a[1], a[2], a[3], a[4], a[5], calc};
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                goto done;
        PGresult *res = NULL;
        if (qz_pg_exec(pg, "DELETE FROM trending_tracks", errstr, errstr_size) != 0 ||
            !(res = qz_pg_query(pg,
                                "INSERT INTO trending_tracks (track_id, trend_score, "
                                "play_count_24h, play_count_7d, unique_listeners_24h, "
                                "unique_listeners_7d, calculated_at) "
                                "SELECT *, $7::timestamptz FROM unnest($1::uuid[], "
                                "$2::float8[], $3::int[], $4::int[], $5::int[], $6::int[])",
                                7, params, errstr, errstr_size))) {
                char ignore[64];
                qz_pg_rollback(pg, ignore, sizeof(ignore));
                goto done;
        }
        PQclear(res);
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                goto done;
        rc = 0;
        goto done;
oom:
        snprintf(errstr, errstr_size, "snapshot: out of memory");
done:
        for (int k = 0; k < 6; k++)
                free(a[k]);
        return rc;
}
