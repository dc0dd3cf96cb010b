/* redis_swap.c - write keys aside, then RENAME them over the live ones in one MULTI/EXEC. */
#include "redis_swap.h"
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qz_redis_swap {
        struct qz_redis *r;
        char *prefix;
        char **finals, **tmps, **dels;
        size_t n, cap, ndel, capdel;
};

struct qz_redis_swap *qz_redis_swap_new(struct qz_redis *r, const char *tmp_prefix)
{
        struct qz_redis_swap *s = calloc(1, sizeof(*s));
        if (!s || !(s->prefix = strdup(tmp_prefix))) {
                free(s);
                return NULL;
        }
        s->r = r;
        return s;
}

static void reset(struct qz_redis_swap *s)
{
        for (size_t i = 0; i < s->n; i++) {
                free(s->finals[i]);
                free(s->tmps[i]);
        }
        for (size_t i = 0; i < s->ndel; i++)
                free(s->dels[i]);
        s->n = s->ndel = 0;
}

void qz_redis_swap_free(struct qz_redis_swap *s)
{
        if (!s)
                return;
        reset(s);
        free(s->finals);
        free(s->tmps);
        free(s->dels);
        free(s->prefix);
        free(s);
}

const char *qz_redis_swap_key(struct qz_redis_swap *s, const char *final_key)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 64;
                char **f = realloc(s->finals, cap * sizeof(char *));
                if (f)
                        s->finals = f;
                char **t = realloc(s->tmps, cap * sizeof(char *));
                if (t)
                        s->tmps = t;
                if (!f || !t)
                        return NULL;
                s->cap = cap;
        }
        size_t len = strlen(s->prefix) + strlen(final_key) + 1;
        char *tmp = malloc(len), *fin = strdup(final_key);
        if (!tmp || !fin) {
                free(tmp);
                free(fin);
                return NULL;
        }
        snprintf(tmp, len, "%s%s", s->prefix, final_key);
        s->finals[s->n] = fin;
        s->tmps[s->n++] = tmp;
        const char *argv[] = {"DEL", tmp};
        qz_redis_append_argv(s->r, 2, argv, NULL);
        return tmp;
}

int qz_redis_swap_delete(struct qz_redis_swap *s, const char *final_key)
{
        if (s->ndel == s->capdel) {
                size_t cap = s->capdel ? s->capdel * 2 : 64;
                char **d = realloc(s->dels, cap * sizeof(char *));
                if (!d)
                        return -1;
                s->dels = d;
                s->capdel = cap;
        }
        if (!(s->dels[s->ndel] = strdup(final_key)))
                return -1;
        s->ndel++;
        return 0;
}

int qz_redis_swap_commit(struct qz_redis_swap *s, char *errstr, size_t errstr_size)
{
        redisReply **rep = NULL;
        size_t nrep = 0;
        int rc = -1;
        /* 1. the writes into the temporaries, plus EXISTS of each so the swap knows which
         *    temporaries are empty (RENAME of a missing key is an error that would abort). */
        for (size_t i = 0; i < s->n; i++) {
                const char *argv[] = {"EXISTS", s->tmps[i]};
                qz_redis_append_argv(s->r, 2, argv, NULL);
        }
        if (qz_redis_exec(s->r, &rep, &nrep, errstr, errstr_size) != 0)
                goto done;
        /* 2. the swap: every RENAME/DEL in one transaction */
        qz_redis_append(s->r, "MULTI");
        for (size_t i = 0; i < s->n; i++) {
                const redisReply *e = rep[nrep - s->n + i];
                if (e->type == REDIS_REPLY_INTEGER && e->integer == 1) {
                        const char *argv[] = {"RENAME", s->tmps[i], s->finals[i]};
                        qz_redis_append_argv(s->r, 3, argv, NULL);
                } else {
                        const char *argv[] = {"DEL", s->finals[i]};
                        qz_redis_append_argv(s->r, 2, argv, NULL);
                }
        }
        for (size_t i = 0; i < s->ndel; i++) {
                const char *argv[] = {"DEL", s->dels[i]};
                qz_redis_append_argv(s->r, 2, argv, NULL);
        }
        qz_redis_append(s->r, "EXEC");
        qz_redis_replies_free(rep, nrep);
        rep = NULL;
        if (qz_redis_exec(s->r, &rep, &nrep, errstr, errstr_size) != 0)
                goto done;
        if (nrep == 0 || rep[nrep - 1]->type != REDIS_REPLY_ARRAY) {
                snprintf(errstr, errstr_size, "redis swap: transaction aborted");
                goto done;
        }
        rc = 0;
done:
        if (rep)
                qz_redis_replies_free(rep, nrep);
        reset(s);
        return rc;
}
