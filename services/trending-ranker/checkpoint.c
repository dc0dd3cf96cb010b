/* checkpoint.c - window plays + Kafka offsets saved to and restored from Postgres. */
#include "checkpoint.h"
#include "window.h"

#include "log.h"
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REC_SIZE 56
#define HOUR_MS  ((int64_t)3600000)

struct ckpt {
        char *group, *owner;
        int nparts;
        int64_t *epoch;    /* our claim per partition; 0 = not claimed */
        int64_t *saved_at; /* offset of the last save, to skip idle partitions */
        bool *full;        /* next save writes the window's state, not the journal */
};

struct ckpt *ckpt_new(const char *group_id, const char *instance_id, int nparts)
{
        struct ckpt *c = calloc(1, sizeof(*c));
        if (!c || !(c->group = strdup(group_id)) || !(c->owner = strdup(instance_id)) ||
            !(c->epoch = calloc((size_t)nparts, sizeof(int64_t))) ||
            !(c->saved_at = calloc((size_t)nparts, sizeof(int64_t))) ||
            !(c->full = calloc((size_t)nparts, sizeof(bool)))) {
                ckpt_free(c);
                return NULL;
        }
        c->nparts = nparts;
        return c;
}

void ckpt_free(struct ckpt *c)
{
        if (!c)
                return;
        free(c->group);
        free(c->owner);
        free(c->epoch);
        free(c->saved_at);
        free(c->full);
        free(c);
}

void ckpt_mark_full(struct ckpt *c, int p)
{
        if (p >= 0 && p < c->nparts)
                c->full[p] = true;
}

static int64_t floordiv(int64_t a, int64_t b)
{
        int64_t q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void rec_put(uint8_t *o, const struct window_play *p)
{
        memcpy(o, p->event_id, 16);
        memcpy(o + 16, p->user_id, 16);
        memcpy(o + 32, p->track_id, 16);
        uint64_t v = (uint64_t)p->played_at_ms;
        for (int i = 0; i < 8; i++)
                o[48 + i] = (uint8_t)(v >> (8 * i)); /* little-endian on every host */
}

#define RESTORE_AHEAD 8 /* plays prefetched ahead (window_prefetch) */

static void rec_get(const uint8_t *o, struct window_play *p)
{
        uint64_t v = 0;
        memcpy(p->event_id, o, 16);
        memcpy(p->user_id, o + 16, 16);
        memcpy(p->track_id, o + 32, 16);
        for (int i = 0; i < 8; i++)
                v |= (uint64_t)o[48 + i] << (8 * i);
        p->played_at_ms = (int64_t)v;
}

/* libpq directly: qz_pg's helpers are text-only and the chunks are binary. NULL + errstr. */
static PGresult *run(struct qz_pg *pg, const char *sql, int n, const char *const *vals,
                     const int *lens, const int *fmts, int result_binary, char *errstr,
                     size_t errstr_size)
{
        PGconn *conn = qz_pg_conn(pg);
        if (!conn) {
                snprintf(errstr, errstr_size, "postgres not connected");
                return NULL;
        }
        PGresult *res = PQexecParams(conn, sql, n, NULL, vals, lens, fmts, result_binary);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                snprintf(errstr, errstr_size, "%s",
                         res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
                errstr[strcspn(errstr, "\n")] = '\0';
                PQclear(res);
                return NULL;
        }
        return res;
}

static int run_ok(struct qz_pg *pg, const char *sql, int n, const char *const *vals, char *errstr,
                  size_t errstr_size)
{
        PGresult *res = run(pg, sql, n, vals, NULL, NULL, 0, errstr, errstr_size);
        PQclear(res);
        return res ? 0 : -1;
}

int ckpt_restore(struct ckpt *c, struct qz_pg *pg, struct window *w, const bool *want,
                 int64_t *offsets, long *plays, char *errstr, size_t errstr_size)
{
        PGresult *res = NULL;
        *plays = 0;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        for (int p = 0; p < c->nparts; p++) {
                char part[16];
                if (!want[p])
                        continue;
                snprintf(part, sizeof(part), "%d", p);
                const char *v[] = {c->group, part, c->owner};
                if (!(res = run(pg,
                                "INSERT INTO trending_checkpoints (group_id, part, epoch, owner) "
                                "VALUES ($1, $2::int, 1, $3) ON CONFLICT (group_id, part) DO "
                                "UPDATE SET epoch = trending_checkpoints.epoch + 1, "
                                "owner = EXCLUDED.owner RETURNING epoch, next_offset",
                                3, v, NULL, NULL, 0, errstr, errstr_size)))
                        goto fail;
                c->epoch[p] = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
                c->full[p] = false;
                bool have = !PQgetisnull(res, 0, 1);
                offsets[p] = have ? strtoll(PQgetvalue(res, 0, 1), NULL, 10) : CKPT_NO_OFFSET;
                c->saved_at[p] = offsets[p];
                PQclear(res);
                if (!have) { /* chunks without an offset cannot exist; be sure anyway */
                        if (run_ok(pg,
                                   "DELETE FROM trending_checkpoint_plays WHERE group_id = $1 "
                                   "AND part = $2::int",
                                   2, v, errstr, errstr_size) != 0)
                                goto fail;
                        continue;
                }
                if (!(res = run(pg,
                                "SELECT data FROM trending_checkpoint_plays WHERE group_id = $1 "
                                "AND part = $2::int ORDER BY hour_ms, seq",
                                2, v, NULL, NULL, 1, errstr, errstr_size)))
                        goto fail;
                /* sized up front, and each play's slots fetched a few plays ahead: a
                 * restore is a bulk load like a rebuild (window_reserve, window_prefetch) */
                size_t total = 0;
                for (int i = 0; i < PQntuples(res); i++)
                        total += (size_t)PQgetlength(res, i, 0) / REC_SIZE;
                window_reserve(w, p, total, false); /* a hint: the tables grow as needed */
                for (int i = 0; i < PQntuples(res); i++) {
                        const uint8_t *d = (const uint8_t *)PQgetvalue(res, i, 0);
                        int len = PQgetlength(res, i, 0);
                        for (int o = 0; o + REC_SIZE <= len; o += REC_SIZE) {
                                struct window_play pl;
                                if (o + (2 * RESTORE_AHEAD + 1) * REC_SIZE <= len) {
                                        rec_get(d + o + 2 * RESTORE_AHEAD * REC_SIZE, &pl);
                                        window_prefetch_ids(w, &pl);
                                }
                                if (o + (RESTORE_AHEAD + 1) * REC_SIZE <= len) {
                                        rec_get(d + o + RESTORE_AHEAD * REC_SIZE, &pl);
                                        window_prefetch(w, p, &pl);
                                }
                                rec_get(d + o, &pl);
                                if (window_add(w, p, &pl, false) == WINDOW_ADDED)
                                        (*plays)++;
                        }
                }
                PQclear(res);
                res = NULL;
        }
        return qz_pg_commit(pg, errstr, errstr_size);
fail : {
        char ignore[64];
        qz_pg_rollback(pg, ignore, sizeof(ignore));
}
        return -1;
}

struct export_ctx {
        struct ckpt *c;
        struct qz_pg *pg;
        const char *part;
        uint8_t *buf;
        size_t cap;
        long plays;
        char *errstr;
        size_t errstr_size;
};

/* window_export's emit: one bucket's plays (all in the bucket's first hour) as one chunk. */
static int export_chunk(void *arg, const struct window_play *plays, size_t n)
{
        struct export_ctx *x = arg;
        char hour[24];
        if (n > x->cap) {
                uint8_t *b = realloc(x->buf, n * REC_SIZE);
                if (!b) {
                        snprintf(x->errstr, x->errstr_size, "checkpoint: out of memory");
                        return -1;
                }
                x->buf = b;
                x->cap = n;
        }
        for (size_t i = 0; i < n; i++)
                rec_put(x->buf + i * REC_SIZE, &plays[i]);
        snprintf(hour, sizeof(hour), "%" PRId64,
                 floordiv(plays[0].played_at_ms, HOUR_MS) * HOUR_MS);
        const char *v[] = {x->c->group, x->part, hour, (const char *)x->buf};
        int lens[] = {0, 0, 0, (int)(n * REC_SIZE)}, fmts[] = {0, 0, 0, 1};
        PGresult *res = run(x->pg,
                            "INSERT INTO trending_checkpoint_plays (group_id, part, hour_ms, "
                            "data) VALUES ($1, $2::int, $3::bigint, $4::bytea)",
                            4, v, lens, fmts, 0, x->errstr, x->errstr_size);
        if (!res)
                return -1;
        PQclear(res);
        x->plays += (long)n;
        return 0;
}

/* Replaces partition p's stored plays with the window's state (after a rebuild). */
static int save_full(struct ckpt *c, struct qz_pg *pg, int p, struct window *w, long *plays,
                     char *errstr, size_t errstr_size)
{
        char part[16];
        snprintf(part, sizeof(part), "%d", p);
        const char *v[] = {c->group, part};
        struct export_ctx x = {c, pg, part, NULL, 0, 0, errstr, errstr_size};
        errstr[0] = '\0';
        if (run_ok(pg,
                   "DELETE FROM trending_checkpoint_plays WHERE group_id = $1 AND part = $2::int",
                   2, v, errstr, errstr_size) != 0)
                return -1;
        int rc = window_export(w, p, export_chunk, &x);
        if (rc != 0 && !x.errstr[0])
                snprintf(errstr, errstr_size, "checkpoint: cannot export the window");
        free(x.buf);
        *plays = x.plays;
        return rc;
}

static int cmp_hour(const void *a, const void *b)
{
        int64_t x = floordiv(((const struct window_play *)a)->played_at_ms, HOUR_MS);
        int64_t y = floordiv(((const struct window_play *)b)->played_at_ms, HOUR_MS);
        return (x > y) - (x < y);
}

/* One partition's journal, sorted by hour, as one chunk row per hour. */
static int save_part(struct ckpt *c, struct qz_pg *pg, int p, const struct window_play *j, size_t n,
                     char *errstr, size_t errstr_size)
{
        struct window_play *s = malloc((n ? n : 1) * sizeof(*s));
        uint8_t *buf = malloc((n ? n : 1) * REC_SIZE);
        char part[16], hour[24];
        int rc = -1;
        if (!s || !buf) {
                snprintf(errstr, errstr_size, "checkpoint: out of memory");
                goto done;
        }
        if (n > 0) /* an emptied journal may be NULL (window_journal_consume frees it) */
                memcpy(s, j, n * sizeof(*s));
        qsort(s, n, sizeof(*s), cmp_hour);
        snprintf(part, sizeof(part), "%d", p);
        for (size_t i = 0; i < n;) {
                int64_t h = floordiv(s[i].played_at_ms, HOUR_MS);
                size_t k = 0;
                for (; i < n && floordiv(s[i].played_at_ms, HOUR_MS) == h; i++, k++)
                        rec_put(buf + k * REC_SIZE, &s[i]);
                snprintf(hour, sizeof(hour), "%" PRId64, h * HOUR_MS);
                const char *v[] = {c->group, part, hour, (const char *)buf};
                int lens[] = {0, 0, 0, (int)(k * REC_SIZE)}, fmts[] = {0, 0, 0, 1};
                PGresult *res = run(pg,
                                    "INSERT INTO trending_checkpoint_plays (group_id, part, "
                                    "hour_ms, data) VALUES ($1, $2::int, $3::bigint, $4::bytea)",
                                    4, v, lens, fmts, 0, errstr, errstr_size);
                if (!res)
                        goto done;
                PQclear(res);
        }
        rc = 0;
done:
        free(s);
        free(buf);
        return rc;
}

int ckpt_save(struct ckpt *c, struct qz_pg *pg, struct window *w, const bool *owned,
              const int64_t *offsets, long *plays, int *fenced, char *errstr, size_t errstr_size)
{
        int64_t bucket_ms = window_bucket_ms(w), cur = window_cur_bucket(w) * bucket_ms;
        int64_t lo = cur - (WINDOW_7D_MS / bucket_ms) * bucket_ms; /* window's oldest edge */
        char lo_s[24], closed_s[24];
        size_t *taken = calloc((size_t)c->nparts, sizeof(size_t));
        bool any = false;
        *plays = 0;
        *fenced = 0;
        if (!taken) {
                snprintf(errstr, errstr_size, "checkpoint: out of memory");
                return -1;
        }
        snprintf(lo_s, sizeof(lo_s), "%" PRId64, floordiv(lo, HOUR_MS) * HOUR_MS);
        snprintf(closed_s, sizeof(closed_s), "%" PRId64, floordiv(cur, HOUR_MS) * HOUR_MS);
        for (int p = 0; p < c->nparts; p++) {
                size_t n = 0;
                if (owned[p] && c->epoch[p] > 0) {
                        window_journal(w, p, &n);
                        any = any || n > 0 || c->full[p] || offsets[p] != c->saved_at[p];
                }
        }
        if (!any) {
                free(taken);
                return 0;
        }
        if (qz_pg_begin(pg, errstr, errstr_size) != 0) {
                free(taken);
                return -1;
        }
        for (int p = 0; p < c->nparts; p++) {
                size_t n = 0;
                const struct window_play *j;
                char part[16], off[24];
                if (!owned[p] || c->epoch[p] <= 0)
                        continue;
                j = window_journal(w, p, &n);
                if (n == 0 && !c->full[p] && offsets[p] == c->saved_at[p])
                        continue;
                snprintf(part, sizeof(part), "%d", p);
                snprintf(off, sizeof(off), "%" PRId64, offsets[p]);
                const char *v[] = {c->group, part, off, NULL};
                PGresult *res = run(pg,
                                    "SELECT epoch FROM trending_checkpoints WHERE group_id = $1 "
                                    "AND part = $2::int FOR UPDATE",
                                    2, v, NULL, NULL, 0, errstr, errstr_size);
                if (!res)
                        goto fail;
                bool mine =
                    PQntuples(res) == 1 && strtoll(PQgetvalue(res, 0, 0), NULL, 10) == c->epoch[p];
                PQclear(res);
                if (!mine) { /* reassigned: the new owner restored; our revoke is coming */
                        (*fenced)++;
                        c->epoch[p] = 0;
                        c->full[p] = false;
                        continue;
                }
                long written = (long)n;
                if (c->full[p]) {
                        /* the journal's plays are in the window's state too */
                        if (save_full(c, pg, p, w, &written, errstr, errstr_size) != 0)
                                goto fail;
                } else if (save_part(c, pg, p, j, n, errstr, errstr_size) != 0)
                        goto fail;
                v[2] = lo_s;
                if (run_ok(pg,
                           "DELETE FROM trending_checkpoint_plays WHERE group_id = $1 AND "
                           "part = $2::int AND hour_ms + 3600000 <= $3::bigint",
                           3, v, errstr, errstr_size) != 0)
                        goto fail;
                /* closed hours with several chunks (late plays, many saves): one row each */
                v[2] = closed_s;
                if ((n > 0 || c->full[p]) &&
                    run_ok(pg,
                           "WITH d AS (DELETE FROM trending_checkpoint_plays "
                           "WHERE group_id = $1 AND part = $2::int AND hour_ms IN "
                           "(SELECT hour_ms FROM trending_checkpoint_plays WHERE "
                           "group_id = $1 AND part = $2::int AND hour_ms < $3::bigint "
                           "GROUP BY hour_ms HAVING count(*) > 1) "
                           "RETURNING hour_ms, seq, data) "
                           "INSERT INTO trending_checkpoint_plays (group_id, part, "
                           "hour_ms, data) SELECT $1, $2::int, hour_ms, "
                           "string_agg(data, ''::bytea ORDER BY seq) FROM d "
                           "GROUP BY hour_ms",
                           3, v, errstr, errstr_size) != 0)
                        goto fail;
                v[2] = off;
                if (run_ok(pg,
                           "UPDATE trending_checkpoints SET next_offset = $3::bigint, "
                           "saved_at = now() WHERE group_id = $1 AND part = $2::int",
                           3, v, errstr, errstr_size) != 0)
                        goto fail;
                taken[p] = n;
                *plays += written;
        }
        if (qz_pg_commit(pg, errstr, errstr_size) != 0) {
                free(taken);
                return -1;
        }
        for (int p = 0; p < c->nparts; p++)
                if (owned[p] && c->epoch[p] > 0) {
                        window_journal_consume(w, p, taken[p]);
                        c->saved_at[p] = offsets[p];
                        c->full[p] = false;
                }
        free(taken);
        return 0;
fail : {
        char ignore[64];
        qz_pg_rollback(pg, ignore, sizeof(ignore));
}
        free(taken);
        return -1;
}
