/* demo_catalog.c - the demo catalog in memory: genres with traits, artists, albums, tracks. */
#include "demo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Streams of the seeded generator; each entity kind draws from its own. */
enum { S_ARTIST = 1, S_ALBUM, S_TRACK, S_POPULARITY };

/* What a genre sounds like and how common its fans are. Index order is
 * qz_demo_genre_names'. */
static const struct genre_trait {
        uint8_t related[4];
        uint8_t n_related;
        double fans;
        int tempo_lo, tempo_hi;
        int duration_s;
        double minor_p, energy, brightness;
        int first_year;
} traits[QZ_DEMO_NGENRES] = {
    /* rock */ {{10, 16, 6, 14}, 4, 10, 100, 150, 230, 0.40, 0.70, 0.60, 1965},
    /* pop */ {{19, 8, 3, 10}, 4, 14, 95, 128, 205, 0.25, 0.65, 0.70, 1975},
    /* hip-hop */ {{8, 15, 3, 1}, 4, 12, 80, 100, 210, 0.55, 0.70, 0.50, 1985},
    /* electronic */ {{17, 18, 11, 1}, 4, 8, 110, 135, 260, 0.45, 0.70, 0.70, 1985},
    /* jazz */ {{14, 15, 5}, 3, 4, 80, 160, 300, 0.35, 0.35, 0.50, 1955},
    /* classical */ {{11, 4}, 2, 4, 60, 120, 360, 0.45, 0.20, 0.40, 1950},
    /* metal */ {{0, 16}, 2, 5, 110, 180, 280, 0.80, 0.95, 0.85, 1975},
    /* folk */ {{9, 10, 0}, 3, 4, 80, 120, 220, 0.35, 0.30, 0.35, 1960},
    /* r&b */ {{15, 2, 1}, 3, 7, 70, 105, 225, 0.40, 0.50, 0.50, 1970},
    /* country */ {{7, 14, 0}, 3, 5, 90, 130, 200, 0.20, 0.50, 0.50, 1960},
    /* indie */ {{0, 7, 1, 3}, 4, 7, 95, 140, 220, 0.45, 0.55, 0.55, 1990},
    /* ambient */ {{3, 5}, 2, 3, 60, 80, 380, 0.50, 0.10, 0.25, 1980},
    /* latin */ {{13, 1}, 2, 6, 90, 110, 210, 0.30, 0.75, 0.60, 1970},
    /* reggae */ {{12, 15}, 2, 3, 70, 90, 230, 0.30, 0.45, 0.45, 1970},
    /* blues */ {{4, 15, 0, 9}, 4, 3, 65, 110, 260, 0.50, 0.40, 0.40, 1955},
    /* soul */ {{8, 14, 4}, 3, 4, 75, 110, 220, 0.30, 0.50, 0.50, 1960},
    /* punk */ {{0, 6, 10}, 3, 3, 150, 180, 150, 0.40, 0.90, 0.80, 1976},
    /* techno */ {{3, 18}, 2, 4, 125, 140, 330, 0.70, 0.85, 0.65, 1988},
    /* house */ {{3, 17, 1}, 3, 5, 118, 128, 320, 0.35, 0.75, 0.70, 1986},
    /* k-pop */ {{1, 8, 2}, 3, 6, 100, 130, 200, 0.30, 0.80, 0.80, 2000},
};

size_t qz_demo_genre_related(int g, uint8_t *out, size_t out_size)
{
        size_t n = 0;
        if (out_size == 0)
                return 0;
        out[n++] = (uint8_t)g;
        for (size_t i = 0; i < traits[g].n_related && n < out_size; i++)
                out[n++] = traits[g].related[i];
        return n;
}

static double clamp(double x, double lo, double hi)
{
        return x < lo ? lo : x > hi ? hi : x;
}

static uint64_t fnv1a(const char *s)
{
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 1099511628211ULL;
        return h ? h : 1;
}

/* Open-addressed set of name hashes, so artist names do not repeat. */
static bool name_seen(uint64_t *set, size_t cap, const char *name)
{
        uint64_t h = fnv1a(name);
        for (size_t i = h % cap;; i = (i + 1) % cap) {
                if (set[i] == h)
                        return true;
                if (set[i] == 0) {
                        set[i] = h;
                        return false;
                }
        }
}

static int32_t day_of_year_start(int year)
{
        /* Days from 1970-01-01 to Jan 1 of year (proleptic Gregorian). */
        int y = year - 1;
        return (int32_t)(365 * (y - 1969) + (y / 4 - 1969 / 4) - (y / 100 - 1969 / 100) +
                         (y / 400 - 1969 / 400));
}

static void build_artists(struct qz_demo_catalog *c, uint64_t seed, uint64_t *names, size_t cap)
{
        double fans_cum[QZ_DEMO_NGENRES], acc = 0;
        for (int g = 0; g < QZ_DEMO_NGENRES; g++) {
                acc += traits[g].fans;
                fans_cum[g] = acc;
        }
        for (size_t i = 0; i < c->n_artists; i++) {
                struct qz_demo_artist *a = &c->artists[i];
                struct qz_demo_rng r = qz_demo_rng_for(seed, S_ARTIST, i);
                qz_demo_uuid(&r, a->id);
                /* The first artists cover every genre once, so small catalogs
                 * still have all of them; the rest follow fan numbers. */
                int g = i < QZ_DEMO_NGENRES ? (int)i
                                            : (int)qz_demo_pick_cum(fans_cum, QZ_DEMO_NGENRES,
                                                                    qz_demo_rng_unit(&r));
                uint8_t rel[5];
                size_t n_rel = qz_demo_genre_related(g, rel, 5);
                a->genres[0] = (uint8_t)g;
                a->n_genres = 1;
                size_t want = 1 + qz_demo_rng_below(&r, 3);
                for (size_t k = 1; k < n_rel && a->n_genres < want; k++)
                        if (qz_demo_rng_unit(&r) < 0.6)
                                a->genres[a->n_genres++] = rel[k];
                for (int tries = 0;; tries++) {
                        qz_demo_name_artist(&r, g, a->name, sizeof(a->name));
                        if (tries >= 8) {
                                size_t n = strlen(a->name);
                                snprintf(a->name + n, sizeof(a->name) - n, " %zu", i);
                        }
                        if (!name_seen(names, cap, a->name) || tries >= 8)
                                break;
                }
        }
}

/* Albums per artist (1-4) with release days spread over the artist's career
 * and about one in eight within the last 90 days (new_for_you and
 * discovery_weekly need recent releases). Returns album sizes' raw weights. */
static int build_albums(struct qz_demo_catalog *c, uint64_t seed, int32_t today, double **raw_out)
{
        size_t cap = c->n_artists * 4, n = 0;
        int today_year = 1970 + today / 365;
        c->albums = calloc(cap ? cap : 1, sizeof(*c->albums));
        double *raw = calloc(cap ? cap : 1, sizeof(*raw));
        if (!c->albums || !raw) {
                free(raw);
                return -1;
        }
        for (size_t i = 0; i < c->n_artists; i++) {
                struct qz_demo_rng r = qz_demo_rng_for(seed, S_ALBUM, i);
                const struct genre_trait *t = &traits[c->artists[i].genres[0]];
                double u = qz_demo_rng_unit(&r);
                size_t k = u < 0.3 ? 1 : u < 0.6 ? 2 : u < 0.85 ? 3 : 4;
                int span = today_year - t->first_year;
                int start_year = t->first_year + (int)(span * sqrt(qz_demo_rng_unit(&r)));
                int32_t career = day_of_year_start(start_year);
                if (career > today - 120)
                        career = today - 120;
                for (size_t j = 0; j < k; j++, n++) {
                        struct qz_demo_album *al = &c->albums[n];
                        qz_demo_uuid(&r, al->id);
                        qz_demo_name_album(&r, c->artists[i].name, al->title, sizeof(al->title));
                        al->artist = (uint32_t)i;
                        if (qz_demo_rng_unit(&r) < 0.12)
                                al->release_day = today - 1 - (int32_t)qz_demo_rng_below(&r, 90);
                        else
                                al->release_day = career + (int32_t)qz_demo_rng_below(
                                                               &r, (uint32_t)(today - 91 - career));
                        double v = qz_demo_rng_unit(&r);
                        raw[n] = v < 0.2    ? 1.0
                                 : v < 0.45 ? 4.0 + 2 * qz_demo_rng_unit(&r)
                                            : 8.0 + 6 * qz_demo_rng_unit(&r);
                }
        }
        c->n_albums = n;
        *raw_out = raw;
        return 0;
}

static int cmp_score_desc(const void *a, const void *b)
{
        const double *x = a, *y = b;
        return (x[0] < y[0]) - (x[0] > y[0]);
}

static void build_tracks(struct qz_demo_catalog *c, uint64_t seed, const double *raw)
{
        double total = 0, acc = 0;
        for (size_t a = 0; a < c->n_albums; a++)
                total += raw[a];
        /* Album sizes by largest-remainder rounding of the raw weights, so
         * they add up to exactly n_tracks; albums of one artist are adjacent,
         * so an artist's tracks are contiguous. */
        for (size_t a = 0; a < c->n_albums; a++) {
                struct qz_demo_album *al = &c->albums[a];
                size_t begin = (size_t)llround(acc / total * (double)c->n_tracks);
                acc += raw[a];
                size_t end = (size_t)llround(acc / total * (double)c->n_tracks);
                if (a + 1 == c->n_albums)
                        end = c->n_tracks;
                al->first_track = (uint32_t)begin;
                al->n_tracks = (uint32_t)(end - begin);
                struct qz_demo_artist *ar = &c->artists[al->artist];
                if (ar->n_tracks == 0)
                        ar->first_track = (uint32_t)begin;
                ar->n_tracks += al->n_tracks;
                for (size_t i = begin; i < end; i++) {
                        struct qz_demo_track *t = &c->tracks[i];
                        struct qz_demo_rng r = qz_demo_rng_for(seed, S_TRACK, i);
                        const struct genre_trait *g = &traits[ar->genres[0]];
                        qz_demo_uuid(&r, t->id);
                        qz_demo_name_track(&r, t->title, sizeof(t->title));
                        t->artist = al->artist;
                        t->album = (uint32_t)a;
                        t->release_day = al->release_day;
                        t->genres[0] = ar->genres[0];
                        t->n_genres = 1;
                        for (size_t k = 1; k < ar->n_genres; k++)
                                if (qz_demo_rng_unit(&r) < 0.6)
                                        t->genres[t->n_genres++] = ar->genres[k];
                        double d = g->duration_s * (1.0 + 0.2 * qz_demo_rng_normal(&r));
                        t->duration_ms = (int32_t)(clamp(d, 120, 420) * 1000) +
                                         (int32_t)qz_demo_rng_below(&r, 1000);
                        if (t->duration_ms > 420000)
                                t->duration_ms = 420000;
                        t->tempo_bpm = (float)(g->tempo_lo +
                                               (g->tempo_hi - g->tempo_lo) * qz_demo_rng_unit(&r));
                        t->minor = qz_demo_rng_unit(&r) < g->minor_p;
                        t->energy =
                            (float)clamp(g->energy + 0.12 * qz_demo_rng_normal(&r), 0.05, 1.0);
                        t->brightness =
                            (float)clamp(g->brightness + 0.12 * qz_demo_rng_normal(&r), 0.05, 1.0);
                }
        }
}

/* Popularity: Zipf-like over a ranking that favours popular artists, so a
 * handful of tracks sit near 100 and the long tail near 0. */
static int assign_popularity(struct qz_demo_catalog *c, uint64_t seed)
{
        double *score = malloc(c->n_tracks * 2 * sizeof(double) + 1);
        if (!score)
                return -1;
        struct qz_demo_rng r = qz_demo_rng_for(seed, S_POPULARITY, 0);
        double *artist_rank = malloc(c->n_artists * sizeof(double) + 1);
        if (!artist_rank) {
                free(score);
                return -1;
        }
        for (size_t i = 0; i < c->n_artists; i++)
                artist_rank[i] = 1.0 + qz_demo_rng_below(&r, (uint32_t)c->n_artists);
        for (size_t i = 0; i < c->n_tracks; i++) {
                score[2 * i] =
                    -0.9 * log(artist_rank[c->tracks[i].artist]) + 0.9 * qz_demo_rng_normal(&r);
                score[2 * i + 1] = (double)i;
        }
        qsort(score, c->n_tracks, 2 * sizeof(double), cmp_score_desc);
        for (size_t rank = 0; rank < c->n_tracks; rank++) {
                size_t i = (size_t)score[2 * rank + 1];
                double p = 100.0 * pow((double)rank + 1.0, -0.35);
                c->tracks[i].popularity = (uint8_t)clamp(floor(p), 0, 100);
        }
        free(artist_rank);
        free(score);
        return 0;
}

static int build_genre_index(struct qz_demo_catalog *c)
{
        for (int g = 0; g < QZ_DEMO_NGENRES; g++) {
                c->genre_weight[g] = traits[g].fans;
                c->genre_n[g] = 0;
        }
        for (size_t i = 0; i < c->n_tracks; i++)
                for (size_t k = 0; k < c->tracks[i].n_genres; k++)
                        c->genre_n[c->tracks[i].genres[k]]++;
        for (int g = 0; g < QZ_DEMO_NGENRES; g++) {
                c->genre_tracks[g] = malloc(c->genre_n[g] * sizeof(uint32_t) + 1);
                c->genre_cum[g] = malloc(c->genre_n[g] * sizeof(double) + 1);
                if (!c->genre_tracks[g] || !c->genre_cum[g])
                        return -1;
                c->genre_n[g] = 0;
        }
        for (size_t i = 0; i < c->n_tracks; i++) {
                const struct qz_demo_track *t = &c->tracks[i];
                for (size_t k = 0; k < t->n_genres; k++) {
                        int g = t->genres[k];
                        size_t n = c->genre_n[g]++;
                        c->genre_tracks[g][n] = (uint32_t)i;
                        c->genre_cum[g][n] = (n ? c->genre_cum[g][n - 1] : 0) + 1.0 + t->popularity;
                }
        }
        return 0;
}

int qz_demo_catalog_build(struct qz_demo_catalog *c, uint64_t seed, size_t n_artists,
                          size_t n_tracks, int32_t today_day, char *errstr, size_t errstr_size)
{
        uint64_t *names = NULL;
        double *raw = NULL;
        size_t cap = n_artists * 2 + 1;

        memset(c, 0, sizeof(*c));
        if (n_artists == 0 || n_tracks == 0) {
                snprintf(errstr, errstr_size, "the catalog needs at least one artist and track");
                return -1;
        }
        c->n_artists = n_artists;
        c->n_tracks = n_tracks;
        c->artists = calloc(n_artists, sizeof(*c->artists));
        c->tracks = calloc(n_tracks, sizeof(*c->tracks));
        names = calloc(cap, sizeof(*names));
        if (!c->artists || !c->tracks || !names)
                goto fail;
        build_artists(c, seed, names, cap);
        if (build_albums(c, seed, today_day, &raw) < 0)
                goto fail;
        build_tracks(c, seed, raw);
        if (assign_popularity(c, seed) < 0 || build_genre_index(c) < 0)
                goto fail;
        free(names);
        free(raw);
        return 0;
fail:
        free(names);
        free(raw);
        qz_demo_catalog_free(c);
        snprintf(errstr, errstr_size, "out of memory building the catalog");
        return -1;
}

void qz_demo_catalog_free(struct qz_demo_catalog *c)
{
        free(c->artists);
        free(c->albums);
        free(c->tracks);
        for (int g = 0; g < QZ_DEMO_NGENRES; g++) {
                free(c->genre_tracks[g]);
                free(c->genre_cum[g]);
        }
        memset(c, 0, sizeof(*c));
}
