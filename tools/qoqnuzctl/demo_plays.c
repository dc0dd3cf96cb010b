/* demo_plays.c - streams believable plays user by user: tastes, sessions, hours of day, skips.
 *
 * Each user prefers 1-3 related genres and a few artists, and owns a small
 * library ranked by affinity; plays draw ranks from a Zipf law, so favourites
 * repeat. Some library tracks are "old" (played only more than 65 days ago:
 * forgotten_favorites material) and some "recent" (only the last 30 days:
 * daily_mix material). Plays come in sessions at the hours a user in their
 * time zone listens, one source and device per session; a play never precedes
 * its track's release. Memory is one user's state at a time. */
#include "demo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_USER_ID = 20, S_USER_TASTE, S_USER_WEIGHT, S_USER_PLAYS, S_EVENT };
enum { LIB_MAX = 256, MAP_SIZE = 1024, ERA_ALL = 0, ERA_OLD, ERA_RECENT };

#define DAY_MS  86400000LL
#define HOUR_MS 3600000LL

static const char *const sources[] = {"album", "playlist", "radio", "search", "smart_playlist"};
static const double source_cum[] = {0.30, 0.58, 0.75, 0.85, 1.0};
static const char *const devices[] = {"mobile", "desktop", "web", "smart_speaker"};
static const double device_cum[] = {0.55, 0.80, 0.92, 1.0};

/* Relative listening by local hour: quiet nights, commute peaks, evenings. */
static const double weekday_hours[24] = {1.2, 0.7, 0.4, 0.3, 0.3, 0.5, 1.2, 2.8,
                                         3.6, 3.0, 2.6, 2.6, 3.0, 2.8, 2.6, 2.7,
                                         3.2, 4.0, 4.4, 4.6, 4.6, 4.2, 3.2, 2.0};
static const double weekend_hours[24] = {2.2, 1.6, 1.0, 0.6, 0.4, 0.3, 0.4, 0.8,
                                         1.4, 2.2, 3.0, 3.5, 3.8, 3.8, 3.6, 3.5,
                                         3.6, 3.8, 4.0, 4.2, 4.4, 4.4, 3.8, 3.0};

struct user {
        size_t index;
        uint64_t seq; /* plays emitted so far */
        char id[37];
        struct qz_demo_rng r;
        uint8_t genres[3];
        size_t n_genres;
        uint32_t lib[LIB_MAX];
        uint8_t era[LIB_MAX];
        size_t n_lib;
        uint32_t map_track[MAP_SIZE]; /* track index + 1, 0 = empty */
        uint16_t map_rank[MAP_SIZE];
        int tz_hours;
        int device;
        double hours_cum[2][24]; /* weekday, weekend */
};

struct gen {
        const struct qz_demo_catalog *c;
        const struct qz_demo_plays_cfg *cfg;
        int64_t start_ms, old_end_ms, recent_start_ms;
        double zipf_cum[LIB_MAX];
        qz_demo_emit_cb emit;
        void *ctx;
};

void qz_demo_user_id(uint64_t seed, size_t index, char out[37])
{
        struct qz_demo_rng r = qz_demo_rng_for(seed, S_USER_ID, index);
        qz_demo_uuid(&r, out);
}

/* Days since epoch to a civil date (Howard Hinnant's algorithm). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        unsigned doe = (unsigned)(z - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t yy = (int64_t)yoe + era * 400;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        *d = doy - (153 * mp + 2) / 5 + 1;
        *m = mp < 10 ? mp + 3 : mp - 9;
        *y = (int)(yy + (*m <= 2));
}

static char *put_digits(char *p, unsigned v, int width)
{
        for (int i = width - 1; i >= 0; i--, v /= 10)
                p[i] = (char)('0' + v % 10);
        return p + width;
}

void qz_demo_format_time(int64_t ms, char out[25])
{
        int64_t days = ms >= 0 ? ms / DAY_MS : (ms - DAY_MS + 1) / DAY_MS;
        int64_t rem = ms - days * DAY_MS;
        int y;
        unsigned mo, d;
        char *p = out;
        civil_from_days(days, &y, &mo, &d);
        /* Hand-rolled: bulk loads format millions of these. */
        p = put_digits(p, (unsigned)(y < 0 ? 0 : y > 9999 ? 9999 : y), 4);
        *p++ = '-';
        p = put_digits(p, mo, 2);
        *p++ = '-';
        p = put_digits(p, d, 2);
        *p++ = 'T';
        p = put_digits(p, (unsigned)(rem / HOUR_MS), 2);
        *p++ = ':';
        p = put_digits(p, (unsigned)(rem / 60000 % 60), 2);
        *p++ = ':';
        p = put_digits(p, (unsigned)(rem / 1000 % 60), 2);
        *p++ = '.';
        p = put_digits(p, (unsigned)(rem % 1000), 3);
        *p++ = 'Z';
        *p = '\0';
}

static int64_t release_ms(const struct gen *g, uint32_t track)
{
        return (int64_t)g->c->tracks[track].release_day * DAY_MS;
}

static int map_find(const struct user *u, uint32_t track)
{
        for (size_t i = (track * 2654435761u) % MAP_SIZE;; i = (i + 1) % MAP_SIZE) {
                if (u->map_track[i] == 0)
                        return -1;
                if (u->map_track[i] == track + 1)
                        return u->map_rank[i];
        }
}

static void map_put(struct user *u, uint32_t track, size_t rank)
{
        size_t i = (track * 2654435761u) % MAP_SIZE;
        while (u->map_track[i] != 0 && u->map_track[i] != track + 1)
                i = (i + 1) % MAP_SIZE;
        u->map_track[i] = track + 1;
        u->map_rank[i] = (uint16_t)rank;
}

struct keyed {
        double key;
        uint32_t track;
        bool fav;
};

static int cmp_keyed(const void *a, const void *b)
{
        const struct keyed *x = a, *y = b;
        return (x->key > y->key) - (x->key < y->key);
}

static bool in_keyed(const struct keyed *k, size_t n, uint32_t track)
{
        for (size_t i = 0; i < n; i++)
                if (k[i].track == track)
                        return true;
        return false;
}

static uint32_t pick_genre_track(const struct gen *g, struct user *u)
{
        /* The first genre is the user's main one: 60% of picks. */
        size_t gi = (u->n_genres == 1 || qz_demo_rng_unit(&u->r) < 0.6)
                        ? 0
                        : 1 + qz_demo_rng_below(&u->r, (uint32_t)(u->n_genres - 1));
        int genre = u->genres[gi];
        size_t k =
            qz_demo_pick_cum(g->c->genre_cum[genre], g->c->genre_n[genre], qz_demo_rng_unit(&u->r));
        return g->c->genre_tracks[genre][k];
}

/* Builds user u's taste: genres, favourite artists, ranked library, eras,
 * time zone and device. */
static void build_user(const struct gen *g, size_t index, uint64_t n_plays, struct user *u)
{
        const struct qz_demo_catalog *c = g->c;
        struct keyed cand[LIB_MAX];
        size_t n = 0;
        double gcum[QZ_DEMO_NGENRES], acc = 0;

        memset(u->map_track, 0, sizeof(u->map_track));
        u->index = index;
        u->seq = 0;
        qz_demo_user_id(g->cfg->seed, index, u->id);
        u->r = qz_demo_rng_for(g->cfg->seed, S_USER_TASTE, index);
        for (int i = 0; i < QZ_DEMO_NGENRES; i++) {
                acc += c->genre_n[i] ? c->genre_weight[i] : 0;
                gcum[i] = acc;
        }
        int main_genre = (int)qz_demo_pick_cum(gcum, QZ_DEMO_NGENRES, qz_demo_rng_unit(&u->r));
        uint8_t rel[5];
        size_t n_rel = qz_demo_genre_related(main_genre, rel, 5);
        size_t want = 1 + qz_demo_rng_below(&u->r, 3);
        u->genres[0] = (uint8_t)main_genre;
        u->n_genres = 1;
        for (size_t k = 1; k < n_rel && u->n_genres < want; k++)
                if (c->genre_n[rel[k]] && qz_demo_rng_unit(&u->r) < 0.5)
                        u->genres[u->n_genres++] = rel[k];

        size_t lib_size = 10 + (size_t)(n_plays / 3);
        if (lib_size > LIB_MAX)
                lib_size = LIB_MAX;
        /* Favourite artists: found through popular tracks of the user's
         * genres, so popular artists have more fans. Each brings a few of
         * their tracks into the library. */
        size_t n_fav = 2 + qz_demo_rng_below(&u->r, 4);
        for (size_t f = 0; f < n_fav; f++) {
                const struct qz_demo_artist *a =
                    &c->artists[c->tracks[pick_genre_track(g, u)].artist];
                size_t take = 2 + lib_size / (4 * n_fav);
                for (size_t k = 0; k < take * 2 && n < lib_size / 2 && a->n_tracks; k++) {
                        uint32_t t = a->first_track + qz_demo_rng_below(&u->r, a->n_tracks);
                        if (!in_keyed(cand, n, t))
                                cand[n++] = (struct keyed){0, t, true};
                        if (k + 1 >= take && qz_demo_rng_unit(&u->r) < 0.5)
                                break;
                }
        }
        for (size_t tries = 0; n < lib_size && tries < 4 * lib_size; tries++) {
                uint32_t t = pick_genre_track(g, u);
                if (!in_keyed(cand, n, t))
                        cand[n++] = (struct keyed){0, t, false};
        }
        /* Rank by weighted random keys: favourites and popular tracks tend
         * to the top, with room for personal quirks. */
        for (size_t i = 0; i < n; i++) {
                double w =
                    (cand[i].fav ? 4.0 : 1.0) * (1.0 + c->tracks[cand[i].track].popularity / 25.0);
                double x = qz_demo_rng_unit(&u->r);
                cand[i].key = -log(x > 1e-12 ? x : 1e-12) / w;
        }
        qsort(cand, n, sizeof(cand[0]), cmp_keyed);
        u->n_lib = n;
        bool eras = g->cfg->days >= 75;
        for (size_t i = 0; i < n; i++) {
                u->lib[i] = cand[i].track;
                u->era[i] = ERA_ALL;
                if (eras) {
                        double x = qz_demo_rng_unit(&u->r);
                        u->era[i] = x < 0.10 ? ERA_OLD : x < 0.20 ? ERA_RECENT : ERA_ALL;
                }
        }
        /* Half the users had a favourite they have since dropped. */
        if (eras && n > 4 && qz_demo_rng_unit(&u->r) < 0.5)
                u->era[1 + qz_demo_rng_below(&u->r, 3)] = ERA_OLD;
        for (size_t i = 0; i < n; i++) {
                if (u->era[i] == ERA_OLD && release_ms(g, u->lib[i]) > g->old_end_ms - 14 * DAY_MS)
                        u->era[i] = ERA_ALL; /* too new to have been forgotten */
                map_put(u, u->lib[i], i);
        }

        u->tz_hours = (int)qz_demo_rng_below(&u->r, 18) - 8; /* UTC-8 .. UTC+9 */
        int shift = (int)qz_demo_rng_below(&u->r, 5) - 2;    /* early bird .. night owl */
        u->device = (int)qz_demo_pick_cum(device_cum, 4, qz_demo_rng_unit(&u->r));
        for (int w = 0; w < 2; w++) {
                const double *prof = w ? weekend_hours : weekday_hours;
                double a2 = 0;
                for (int h = 0; h < 24; h++) {
                        a2 += prof[(h - shift + 24) % 24];
                        u->hours_cum[w][h] = a2;
                }
        }
}

static bool eligible(const struct gen *g, const struct user *u, uint32_t track, int64_t t)
{
        if (t < release_ms(g, track))
                return false;
        int rank = map_find(u, track);
        if (rank < 0)
                return true;
        if (u->era[rank] == ERA_OLD)
                return t < g->old_end_ms;
        if (u->era[rank] == ERA_RECENT)
                return t >= g->recent_start_ms;
        return true;
}

static int64_t session_start(const struct gen *g, struct user *u)
{
        int days = g->cfg->days;
        for (int tries = 0; tries < 20; tries++) {
                /* Slightly more listening lately, as a growing service sees. */
                /* Day 0 is the (partial) first day, day `days` today up to
                 * the end hour; times outside the span are drawn again. */
                uint32_t d = qz_demo_rng_below(&u->r, (uint32_t)days + 1);
                if (qz_demo_rng_unit(&u->r) > 0.67 + 0.33 * d / days)
                        continue;
                int64_t local_day = g->start_ms / DAY_MS + d;
                int weekday = (int)((local_day + 4) % 7); /* 0 = Sunday */
                int w = weekday == 0 || weekday == 6;
                int h = (int)qz_demo_pick_cum(u->hours_cum[w], 24, qz_demo_rng_unit(&u->r));
                int64_t t = local_day * DAY_MS + h * HOUR_MS +
                            (int64_t)qz_demo_rng_below(&u->r, (uint32_t)HOUR_MS) -
                            u->tz_hours * HOUR_MS;
                if (t >= g->start_ms && t < g->cfg->end_ms)
                        return t;
        }
        return g->start_ms +
               (int64_t)(qz_demo_rng_unit(&u->r) * (double)(g->cfg->end_ms - g->start_ms));
}

/* A time in track lib[rank]'s window when no session time fits it. */
static int64_t standalone_time(const struct gen *g, struct user *u, size_t rank)
{
        int64_t lo = g->start_ms, hi = g->cfg->end_ms;
        int64_t rel = release_ms(g, u->lib[rank]);
        if (rel > lo)
                lo = rel;
        if (u->era[rank] == ERA_OLD && g->old_end_ms < hi)
                hi = g->old_end_ms;
        if (u->era[rank] == ERA_RECENT && g->recent_start_ms > lo)
                lo = g->recent_start_ms;
        if (lo >= hi) {
                lo = rel > g->start_ms ? rel : g->start_ms;
                hi = g->cfg->end_ms;
        }
        return lo + (int64_t)(qz_demo_rng_unit(&u->r) * (double)(hi - lo));
}

static int emit_play(struct gen *g, struct user *u, uint32_t track, int64_t t, double p_complete,
                     const char *source, const char *device, int32_t *played, char *errstr,
                     size_t errstr_size)
{
        const struct qz_demo_track *tr = &g->c->tracks[track];
        struct qz_demo_play p;
        /* The event id follows from the play itself (user, per-user
         * sequence, track, time): rerunning the same flags repeats it, while
         * other flags that change the play also change its id. */
        struct qz_demo_rng er = qz_demo_rng_for(g->cfg->seed, S_EVENT, u->index);
        er = qz_demo_rng_for(qz_demo_rng_next(&er) ^ (uint64_t)t, track, u->seq++);
        qz_demo_uuid(&er, p.event_id);
        p.user_id = u->id;
        p.track_id = tr->id;
        p.played_at_ms = t;
        p.completed = qz_demo_rng_unit(&u->r) < p_complete;
        if (p.completed) {
                p.duration_played_ms = tr->duration_ms - (int32_t)qz_demo_rng_below(&u->r, 1500);
        } else {
                /* Skips cluster early in a track. */
                double x = qz_demo_rng_unit(&u->r);
                p.duration_played_ms = 5000 + (int32_t)(x * x * (tr->duration_ms * 0.85 - 5000));
        }
        if (p.duration_played_ms > tr->duration_ms)
                p.duration_played_ms = tr->duration_ms;
        if (p.duration_played_ms < 0)
                p.duration_played_ms = 0;
        p.source = source;
        p.device_type = device;
        *played = p.duration_played_ms;
        return g->emit(&p, g->ctx, errstr, errstr_size);
}

/* One user's plays, in sessions. */
static int user_plays(struct gen *g, struct user *u, uint64_t n_plays, char *errstr,
                      size_t errstr_size)
{
        const struct qz_demo_catalog *c = g->c;
        uint64_t done = 0;
        while (done < n_plays) {
                int64_t t = session_start(g, u);
                size_t len = 1 + (size_t)(-log(1.0 - qz_demo_rng_unit(&u->r)) * 6.0);
                const char *source =
                    sources[qz_demo_pick_cum(source_cum, 5, qz_demo_rng_unit(&u->r))];
                const char *device =
                    qz_demo_rng_unit(&u->r) < 0.75
                        ? devices[u->device]
                        : devices[qz_demo_pick_cum(device_cum, 4, qz_demo_rng_unit(&u->r))];
                int64_t prev = -1;
                for (size_t i = 0; i < len && done < n_plays; i++, done++) {
                        int64_t track = -1;
                        double p_complete = 0.55;
                        /* Album sessions go on with the album's next track. */
                        if (prev >= 0 && strcmp(source, "album") == 0) {
                                const struct qz_demo_album *al = &c->albums[c->tracks[prev].album];
                                if ((uint32_t)prev + 1 < al->first_track + al->n_tracks &&
                                    eligible(g, u, (uint32_t)prev + 1, t))
                                        track = prev + 1;
                                p_complete = 0.78;
                        }
                        for (int tries = 0; track < 0 && tries < 12; tries++) {
                                if (qz_demo_rng_unit(&u->r) < 0.06) {
                                        uint32_t x = pick_genre_track(g, u); /* exploring */
                                        if (eligible(g, u, x, t)) {
                                                track = x;
                                                p_complete = 0.55;
                                        }
                                        continue;
                                }
                                size_t rank = qz_demo_pick_cum(g->zipf_cum, u->n_lib,
                                                               qz_demo_rng_unit(&u->r));
                                if (eligible(g, u, u->lib[rank], t)) {
                                        track = u->lib[rank];
                                        p_complete = 0.86 - 0.14 * (double)rank / (double)u->n_lib;
                                }
                        }
                        int32_t played = 0;
                        if (track < 0) {
                                /* Nothing of this user's fits the session's
                                 * time: a lone play at a time that fits. */
                                size_t rank = qz_demo_pick_cum(g->zipf_cum, u->n_lib,
                                                               qz_demo_rng_unit(&u->r));
                                if (emit_play(g, u, u->lib[rank], standalone_time(g, u, rank), 0.8,
                                              source, device, &played, errstr, errstr_size) < 0)
                                        return -1;
                                done++;
                                break;
                        }
                        if (emit_play(g, u, (uint32_t)track, t, p_complete, source, device, &played,
                                      errstr, errstr_size) < 0)
                                return -1;
                        prev = track;
                        t += played + 300 + (int64_t)qz_demo_rng_below(&u->r, 4000);
                        if (t >= g->cfg->end_ms) {
                                done++;
                                break;
                        }
                }
        }
        return 0;
}

int qz_demo_plays_generate(const struct qz_demo_catalog *c, const struct qz_demo_plays_cfg *cfg,
                           qz_demo_emit_cb emit, void *ctx, char *errstr, size_t errstr_size)
{
        struct gen g = {.c = c, .cfg = cfg, .emit = emit, .ctx = ctx};
        struct user *u = NULL;
        double total = 0, acc = 0;
        uint64_t given = 0;
        int rc = -1;

        if (cfg->n_users == 0 || cfg->days <= 0) {
                snprintf(errstr, errstr_size, "plays need at least one user and one day");
                return -1;
        }
        g.start_ms = cfg->end_ms - (int64_t)cfg->days * DAY_MS;
        g.old_end_ms = cfg->end_ms - 65 * DAY_MS;
        g.recent_start_ms = cfg->end_ms - 30 * DAY_MS;
        for (size_t i = 0; i < LIB_MAX; i++)
                g.zipf_cum[i] = (i ? g.zipf_cum[i - 1] : 0) + 1.0 / (double)(i + 1);
        u = malloc(sizeof(*u));
        if (!u) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        /* Heavy and light listeners: log-normal weights, rounded so the
         * shares add up to exactly n_plays. Two passes keep memory flat. */
        for (size_t i = 0; i < cfg->n_users; i++) {
                struct qz_demo_rng r = qz_demo_rng_for(cfg->seed, S_USER_WEIGHT, i);
                total += exp(1.1 * qz_demo_rng_normal(&r));
        }
        for (size_t i = 0; i < cfg->n_users; i++) {
                struct qz_demo_rng r = qz_demo_rng_for(cfg->seed, S_USER_WEIGHT, i);
                acc += exp(1.1 * qz_demo_rng_normal(&r));
                uint64_t upto = i + 1 == cfg->n_users
                                    ? cfg->n_plays
                                    : (uint64_t)llround(acc / total * (double)cfg->n_plays);
                if (upto > cfg->n_plays)
                        upto = cfg->n_plays;
                uint64_t n = upto > given ? upto - given : 0;
                given += n;
                if (n == 0)
                        continue;
                build_user(&g, i, n, u);
                if (user_plays(&g, u, n, errstr, errstr_size) < 0)
                        goto fail;
        }
        rc = 0;
fail:
        free(u);
        return rc;
}
