/* catalog.c - the in-memory track catalog, loaded and refreshed incrementally from Postgres. */
#include "catalog.h"
#include "pg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qz_catalog {
        struct qz_catalog_track **slots; /* open addressing by id */
        size_t cap, n;
        char since[64]; /* newest updated_at seen, as Postgres text; "" before the first load */
};

static uint64_t hash_id(const char *s)
{
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

static void track_free(struct qz_catalog_track *t)
{
        if (!t)
                return;
        free(t->title);
        free(t->artist_name);
        free(t->album_title);
        for (size_t i = 0; i < t->ngenres; i++)
                free(t->genres[i]);
        free(t->genres);
        free(t);
}

struct qz_catalog *qz_catalog_new(void)
{
        return calloc(1, sizeof(struct qz_catalog));
}

void qz_catalog_free(struct qz_catalog *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->cap; i++)
                track_free(c->slots[i]);
        free(c->slots);
        free(c);
}

static size_t find_slot(const struct qz_catalog *c, const char *id)
{
        size_t mask = c->cap - 1;
        size_t i = hash_id(id) & mask;
        while (c->slots[i] && strcmp(c->slots[i]->id, id) != 0)
                i = (i + 1) & mask;
        return i;
}

const struct qz_catalog_track *qz_catalog_get(const struct qz_catalog *c, const char *id)
{
        if (!c->cap)
                return NULL;
        return c->slots[find_slot(c, id)];
}

size_t qz_catalog_size(const struct qz_catalog *c)
{
        return c->n;
}

static int grow(struct qz_catalog *c)
{
        size_t cap = c->cap ? c->cap * 2 : 1024;
        struct qz_catalog_track **old = c->slots;
        size_t oldcap = c->cap;
        if (!(c->slots = calloc(cap, sizeof(*c->slots)))) {
                c->slots = old;
                return -1;
        }
        c->cap = cap;
        for (size_t i = 0; i < oldcap; i++)
                if (old[i])
                        c->slots[find_slot(c, old[i]->id)] = old[i];
        free(old);
        return 0;
}

/* Removes slot i keeping the probe chains intact (backward shift). */
static void remove_slot(struct qz_catalog *c, size_t i)
{
        size_t mask = c->cap - 1, j = i;
        track_free(c->slots[i]);
        c->slots[i] = NULL;
        c->n--;
        for (;;) {
                j = (j + 1) & mask;
                if (!c->slots[j])
                        return;
                size_t home = hash_id(c->slots[j]->id) & mask;
                if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
                        c->slots[i] = c->slots[j];
                        c->slots[j] = NULL;
                        i = j;
                }
        }
}

/* Postgres text[] literal {a,"b c"} into strings (quotes and backslashes handled). */
static int parse_text_array(const char *s, char ***out, size_t *n)
{
        *out = NULL;
        *n = 0;
        if (*s++ != '{')
                return -1;
        size_t cap = 0;
        char *buf = malloc(strlen(s) + 1);
        if (!buf)
                return -1;
        while (*s && *s != '}') {
                size_t k = 0;
                if (*s == '"') {
                        for (s++; *s && *s != '"'; s++) {
                                if (*s == '\\' && s[1])
                                        s++;
                                buf[k++] = *s;
                        }
                        if (*s == '"')
                                s++;
                } else {
                        while (*s && *s != ',' && *s != '}')
                                buf[k++] = *s++;
                }
                buf[k] = '\0';
                if (*n == cap) {
                        cap = cap ? cap * 2 : 4;
                        void *g = realloc(*out, cap * sizeof(char *));
                        if (!g)
                                goto fail;
                        *out = g;
                }
                if (!((*out)[(*n)++] = strdup(buf)))
                        goto fail;
                if (*s == ',')
                        s++;
        }
        free(buf);
        return 0;
fail:
        free(buf);
        return -1;
}

int qz_catalog_refresh(struct qz_catalog *c, struct qz_pg *pg, long *changed, char *errstr,
                       size_t errstr_size)
{
        const char *sql =
            "SELECT t.id, t.title, t.artist_id, coalesce(a.name, ''), coalesce(t.album_id::text, "
            "''), coalesce(al.title, ''), t.duration_ms, t.genres, t.deleted_at IS NOT NULL, "
            "t.updated_at "
            "FROM tracks t LEFT JOIN artists a ON a.id = t.artist_id "
            "LEFT JOIN albums al ON al.id = t.album_id "
            "WHERE $1::timestamptz IS NULL OR t.updated_at > $1::timestamptz "
            "ORDER BY t.updated_at";
        const char *params[] = {c->since[0] ? c->since : NULL};
        PGresult *res = qz_pg_query(pg, sql, 1, params, errstr, errstr_size);
        if (!res)
                return -1;
        int rows = PQntuples(res);
        for (int r = 0; r < rows; r++) {
                const char *id = PQgetvalue(res, r, 0);
                if (strlen(id) != 36)
                        continue;
                if ((c->n + 1) * 10 > c->cap * 7 && grow(c) != 0)
                        goto oom;
                size_t i = find_slot(c, id);
                if (c->slots[i])
                        remove_slot(c, i);
                snprintf(c->since, sizeof(c->since), "%s", PQgetvalue(res, r, 9));
                if (strcmp(PQgetvalue(res, r, 8), "t") == 0)
                        continue;
                struct qz_catalog_track *t = calloc(1, sizeof(*t));
                if (!t)
                        goto oom;
                snprintf(t->id, sizeof(t->id), "%s", id);
                snprintf(t->artist_id, sizeof(t->artist_id), "%s", PQgetvalue(res, r, 2));
                snprintf(t->album_id, sizeof(t->album_id), "%s", PQgetvalue(res, r, 4));
                t->title = strdup(PQgetvalue(res, r, 1));
                t->artist_name = strdup(PQgetvalue(res, r, 3));
                t->album_title = strdup(PQgetvalue(res, r, 5));
                t->duration_ms = atol(PQgetvalue(res, r, 6));
                if (!t->title || !t->artist_name || !t->album_title ||
                    parse_text_array(PQgetvalue(res, r, 7), &t->genres, &t->ngenres) != 0) {
                        track_free(t);
                        goto oom;
                }
                c->slots[find_slot(c, id)] = t;
                c->n++;
        }
        PQclear(res);
        if (changed)
                *changed = rows;
        return 0;
oom:
        PQclear(res);
        snprintf(errstr, errstr_size, "catalog: out of memory");
        return -1;
}
