/* demo_pg.c - writes the demo catalog and users into Postgres, and bulk-COPYs plays into
 * play_history.
 *
 * Catalog rows go through temporary staging tables and one
 * INSERT ... SELECT ... ON CONFLICT DO NOTHING per table, in one transaction:
 * a rerun inserts nothing, and the statement-level trigger on tracks queues
 * analysis for exactly the tracks that are new, as an upload would. */
#include "demo.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_USER_NAME = 30, S_USER_CREATED };

#define COPY_CHUNK_ROWS 500000
#define COPY_BUF_BYTES  (1 << 20)

static struct qz_pg *connect_pg(const char *dsn, char *errstr, size_t errstr_size)
{
        struct qz_pg_opts opts = {.dsn = dsn, .application_name = "qoqnuzctl-demo"};
        struct qz_pg *pg = qz_pg_new(&opts, errstr, errstr_size);
        if (pg && qz_pg_connect(pg, errstr, errstr_size) != 0) {
                qz_pg_free(pg);
                return NULL;
        }
        return pg;
}

/* Runs an INSERT and returns its row count, or -1. */
static long insert_count(struct qz_pg *pg, const char *sql, char *errstr, size_t errstr_size)
{
        PGresult *res = qz_pg_query(pg, sql, 0, NULL, errstr, errstr_size);
        if (!res)
                return -1;
        long n = atol(PQcmdTuples(res));
        PQclear(res);
        return n;
}

static void genre_array(const uint8_t *genres, size_t n, char *out, size_t out_size)
{
        size_t len = (size_t)snprintf(out, out_size, "{");
        for (size_t i = 0; i < n && len < out_size; i++)
                len += (size_t)snprintf(out + len, out_size - len, "%s\"%s\"", i ? "," : "",
                                        qz_demo_genre_names[genres[i]]);
        if (len < out_size)
                snprintf(out + len, out_size - len, "}");
}

static void day_text(int32_t day, char out[11])
{
        char ts[25];
        qz_demo_format_time((int64_t)day * 86400000LL, ts);
        memcpy(out, ts, 10);
        out[10] = '\0';
}

static int copy_catalog(struct qz_pg *pg, const struct qz_demo_catalog *c, char *const *audio,
                        char *errstr, size_t errstr_size)
{
        char genres[128], day[11], dur[16], pop[8];

        if (qz_pg_copy_begin(pg, "COPY demo_artists FROM STDIN", errstr, errstr_size) != 0)
                return -1;
        for (size_t i = 0; i < c->n_artists; i++) {
                const struct qz_demo_artist *a = &c->artists[i];
                genre_array(a->genres, a->n_genres, genres, sizeof(genres));
                const char *v[] = {a->id, a->name, genres};
                if (qz_pg_copy_row(pg, 3, v, errstr, errstr_size) != 0)
                        goto abort;
        }
        if (qz_pg_copy_end(pg, NULL, errstr, errstr_size) != 0)
                return -1;

        if (qz_pg_copy_begin(pg, "COPY demo_albums FROM STDIN", errstr, errstr_size) != 0)
                return -1;
        for (size_t i = 0; i < c->n_albums; i++) {
                const struct qz_demo_album *al = &c->albums[i];
                day_text(al->release_day, day);
                const char *v[] = {al->id, c->artists[al->artist].id, al->title, day};
                if (qz_pg_copy_row(pg, 4, v, errstr, errstr_size) != 0)
                        goto abort;
        }
        if (qz_pg_copy_end(pg, NULL, errstr, errstr_size) != 0)
                return -1;

        if (qz_pg_copy_begin(pg, "COPY demo_tracks FROM STDIN", errstr, errstr_size) != 0)
                return -1;
        for (size_t i = 0; i < c->n_tracks; i++) {
                const struct qz_demo_track *t = &c->tracks[i];
                genre_array(t->genres, t->n_genres, genres, sizeof(genres));
                day_text(t->release_day, day);
                snprintf(dur, sizeof(dur), "%d", (int)t->duration_ms);
                snprintf(pop, sizeof(pop), "%d", (int)t->popularity);
                const char *v[] = {t->id,
                                   t->title,
                                   c->artists[t->artist].id,
                                   c->albums[t->album].id,
                                   dur,
                                   audio ? audio[i] : NULL,
                                   genres,
                                   pop,
                                   day};
                if (qz_pg_copy_row(pg, 9, v, errstr, errstr_size) != 0)
                        goto abort;
        }
        return qz_pg_copy_end(pg, NULL, errstr, errstr_size);
abort:
        qz_pg_copy_abort(pg, "demo catalog load failed");
        return -1;
}

static int copy_users(struct qz_pg *pg, uint64_t seed, size_t n_users, int64_t before_ms,
                      char *errstr, size_t errstr_size)
{
        char id[37], name[64], created[25];
        if (qz_pg_copy_begin(pg, "COPY demo_users FROM STDIN", errstr, errstr_size) != 0)
                return -1;
        for (size_t i = 0; i < n_users; i++) {
                struct qz_demo_rng rn = qz_demo_rng_for(seed, S_USER_NAME, i);
                struct qz_demo_rng rc = qz_demo_rng_for(seed, S_USER_CREATED, i);
                qz_demo_user_id(seed, i, id);
                qz_demo_name_user(&rn, name, sizeof(name));
                /* Signed up some time (up to ~13 months) before their history starts. */
                qz_demo_format_time(before_ms - (int64_t)qz_demo_rng_below(&rc, 400) * 86400000LL -
                                        (int64_t)qz_demo_rng_below(&rc, 86400000),
                                    created);
                const char *v[] = {id, name, created};
                if (qz_pg_copy_row(pg, 3, v, errstr, errstr_size) != 0) {
                        qz_pg_copy_abort(pg, "demo user load failed");
                        return -1;
                }
        }
        return qz_pg_copy_end(pg, NULL, errstr, errstr_size);
}

int qz_demo_pg_load_catalog(const char *dsn, const struct qz_demo_catalog *c,
                            char *const *audio_paths, uint64_t seed, size_t n_users,
                            int64_t users_before_ms, struct qz_demo_catalog_counts *out,
                            char *errstr, size_t errstr_size)
{
        struct qz_pg *pg = connect_pg(dsn, errstr, errstr_size);
        if (!pg)
                return -1;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                goto fail;
        if (qz_pg_exec(pg,
                       "CREATE TEMP TABLE demo_artists (id uuid, name text, genres text[])"
                       " ON COMMIT DROP;"
                       "CREATE TEMP TABLE demo_albums (id uuid, artist_id uuid, title text,"
                       " release_date date) ON COMMIT DROP;"
                       "CREATE TEMP TABLE demo_tracks (id uuid, title text, artist_id uuid,"
                       " album_id uuid, duration_ms integer, audio_url text, genres text[],"
                       " popularity smallint, released_at date) ON COMMIT DROP;"
                       "CREATE TEMP TABLE demo_users (id uuid, display_name text,"
                       " created_at timestamptz) ON COMMIT DROP;",
                       errstr, errstr_size) != 0)
                goto fail_tx;
        if (copy_catalog(pg, c, audio_paths, errstr, errstr_size) != 0 ||
            copy_users(pg, seed, n_users, users_before_ms, errstr, errstr_size) != 0)
                goto fail_tx;
        if ((out->artists = insert_count(pg,
                                         "INSERT INTO artists (id, name, genres)"
                                         " SELECT id, name, genres FROM demo_artists"
                                         " ON CONFLICT DO NOTHING",
                                         errstr, errstr_size)) < 0 ||
            (out->albums = insert_count(pg,
                                        "INSERT INTO albums (id, artist_id, title, release_date)"
                                        " SELECT id, artist_id, title, release_date"
                                        " FROM demo_albums ON CONFLICT DO NOTHING",
                                        errstr, errstr_size)) < 0 ||
            (out->tracks = insert_count(pg,
                                        "INSERT INTO tracks (id, title, artist_id, album_id,"
                                        " duration_ms, audio_url, genres, popularity,"
                                        " released_at) SELECT id, title, artist_id, album_id,"
                                        " duration_ms, audio_url, genres, popularity,"
                                        " released_at FROM demo_tracks ON CONFLICT DO NOTHING",
                                        errstr, errstr_size)) < 0 ||
            (out->users = insert_count(pg,
                                       "INSERT INTO users (id, display_name, created_at)"
                                       " SELECT id, display_name, created_at FROM demo_users"
                                       " ON CONFLICT DO NOTHING",
                                       errstr, errstr_size)) < 0)
                goto fail_tx;
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                goto fail;
        qz_pg_free(pg);
        return 0;
fail_tx : {
        char ignored[256];
        qz_pg_rollback(pg, ignored, sizeof(ignored));
}
fail:
        qz_pg_free(pg);
        return -1;
}

/* ---- bulk plays ---- */

struct qz_demo_copy {
        struct qz_pg *pg;
        bool direct; /* play_history was empty: COPY straight in */
        bool in_copy;
        char *buf;
        size_t len;
        long chunk_rows;
        long long inserted;
};

struct qz_demo_copy *qz_demo_copy_open(const char *dsn, char *errstr, size_t errstr_size)
{
        struct qz_demo_copy *s = calloc(1, sizeof(*s));
        PGresult *res = NULL;
        if (!s || !(s->buf = malloc(COPY_BUF_BYTES + 512))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (!(s->pg = connect_pg(dsn, errstr, errstr_size)))
                goto fail;
        /* A bulk demo load need not wait for each chunk's WAL flush. */
        if (qz_pg_exec(s->pg, "SET synchronous_commit = off", errstr, errstr_size) != 0)
                goto fail;
        res = qz_pg_query(s->pg, "SELECT NOT EXISTS (SELECT 1 FROM play_history)", 0, NULL, errstr,
                          errstr_size);
        if (!res)
                goto fail;
        s->direct = PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        /* Otherwise plays go through a staging table and ON CONFLICT DO
         * NOTHING, so a rerun with the same seed adds nothing. */
        if (!s->direct &&
            qz_pg_exec(s->pg,
                       "CREATE TEMP TABLE demo_plays (event_id uuid, user_id uuid, track_id uuid,"
                       " played_at timestamptz, duration_played_ms integer, completed boolean,"
                       " source text, device_type text)",
                       errstr, errstr_size) != 0)
                goto fail;
        return s;
fail:
        if (s) {
                qz_pg_free(s->pg);
                free(s->buf);
                free(s);
        }
        return NULL;
}

static int end_chunk(struct qz_demo_copy *s, char *errstr, size_t errstr_size)
{
        long rows = 0;
        if (s->len && qz_pg_copy_put(s->pg, s->buf, s->len, errstr, errstr_size) != 0) {
                qz_pg_copy_abort(s->pg, "demo bulk load failed");
                s->in_copy = false;
                return -1;
        }
        s->len = 0;
        s->in_copy = false;
        s->chunk_rows = 0;
        if (qz_pg_copy_end(s->pg, &rows, errstr, errstr_size) != 0)
                return -1;
        if (s->direct) {
                s->inserted += rows;
                return 0;
        }
        long n = insert_count(s->pg,
                              "INSERT INTO play_history (event_id, user_id, track_id, played_at,"
                              " duration_played_ms, completed, source, device_type)"
                              " SELECT * FROM demo_plays ON CONFLICT DO NOTHING",
                              errstr, errstr_size);
        if (n < 0 || qz_pg_exec(s->pg, "TRUNCATE demo_plays", errstr, errstr_size) != 0)
                return -1;
        s->inserted += n;
        return 0;
}

static char *put_int(char *p, long v)
{
        char tmp[24];
        int n = 0;
        if (v < 0) {
                *p++ = '-';
                v = -v;
        }
        do
                tmp[n++] = (char)('0' + v % 10);
        while ((v /= 10) > 0);
        while (n)
                *p++ = tmp[--n];
        return p;
}

static int copy_emit_cb(const struct qz_demo_play *pl, void *ctx, char *errstr, size_t errstr_size)
{
        struct qz_demo_copy *s = ctx;
        if (!s->in_copy) {
                const char *sql = s->direct ? "COPY play_history (event_id, user_id, track_id,"
                                              " played_at, duration_played_ms, completed, source,"
                                              " device_type) FROM STDIN"
                                            : "COPY demo_plays FROM STDIN";
                if (qz_pg_copy_begin(s->pg, sql, errstr, errstr_size) != 0)
                        return -1;
                s->in_copy = true;
        }
        /* Every field is ours (UUIDs, fixed words, numbers): no escaping. */
        char *p = s->buf + s->len;
        memcpy(p, pl->event_id, 36);
        p[36] = '\t';
        memcpy(p + 37, pl->user_id, 36);
        p[73] = '\t';
        memcpy(p + 74, pl->track_id, 36);
        p[110] = '\t';
        qz_demo_format_time(pl->played_at_ms, p + 111);
        p += 111 + 24;
        *p++ = '\t';
        p = put_int(p, pl->duration_played_ms);
        *p++ = '\t';
        *p++ = pl->completed ? 't' : 'f';
        *p++ = '\t';
        size_t n = strlen(pl->source);
        memcpy(p, pl->source, n);
        p += n;
        *p++ = '\t';
        n = strlen(pl->device_type);
        memcpy(p, pl->device_type, n);
        p += n;
        *p++ = '\n';
        s->len = (size_t)(p - s->buf);
        if (s->len >= COPY_BUF_BYTES) {
                if (qz_pg_copy_put(s->pg, s->buf, s->len, errstr, errstr_size) != 0) {
                        qz_pg_copy_abort(s->pg, "demo bulk load failed");
                        s->in_copy = false;
                        s->len = 0;
                        return -1;
                }
                s->len = 0;
        }
        if (++s->chunk_rows >= COPY_CHUNK_ROWS)
                return end_chunk(s, errstr, errstr_size);
        return 0;
}

qz_demo_emit_cb qz_demo_copy_emit_cb(void)
{
        return copy_emit_cb;
}

int qz_demo_copy_close(struct qz_demo_copy *s, bool commit, long long *inserted, char *errstr,
                       size_t errstr_size)
{
        int rc = 0;
        if (s->in_copy) {
                if (commit) {
                        rc = end_chunk(s, errstr, errstr_size);
                } else {
                        qz_pg_copy_abort(s->pg, "demo bulk load stopped");
                }
        }
        if (inserted)
                *inserted = s->inserted;
        qz_pg_free(s->pg);
        free(s->buf);
        free(s);
        return rc;
}
