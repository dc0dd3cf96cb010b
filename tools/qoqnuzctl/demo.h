/* demo.h - the demo-data generator behind `qoqnuzctl demo`: seeded randomness,
 * the in-memory catalog, synthesized audio, the play stream and its two sinks.
 *
 * Everything is a pure function of (seed, sizes, anchor time): the same flags
 * on the same day give the same ids, names and plays, so a rerun upserts
 * instead of duplicating.
 *
 * Ownership: a catalog built by qz_demo_catalog_build is freed with
 * qz_demo_catalog_free; strings inside it live as long as the catalog. A play
 * passed to an emit callback is only valid during the call. Sinks are opened
 * and closed by the caller; close frees them. */
#ifndef QZ_DEMO_H
#define QZ_DEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- demo_rng.c: splitmix64 streams, UUIDs, small distributions ---- */

struct qz_demo_rng {
        uint64_t state;
};

/* An independent stream per (seed, stream, index): reruns and different
 * flag values draw the same numbers for the same entity. */
struct qz_demo_rng qz_demo_rng_for(uint64_t seed, uint64_t stream, uint64_t index);
uint64_t qz_demo_rng_next(struct qz_demo_rng *r);
double qz_demo_rng_unit(struct qz_demo_rng *r);                /* [0, 1) */
uint32_t qz_demo_rng_below(struct qz_demo_rng *r, uint32_t n); /* [0, n), n > 0 */
double qz_demo_rng_normal(struct qz_demo_rng *r);              /* mean 0, sd 1 */
/* Index into cum[0..n) (non-decreasing cumulative weights, cum[n-1] > 0). */
size_t qz_demo_pick_cum(const double *cum, size_t n, double u);
/* Formats a random (version 4) UUID taken from the stream; out has 37 bytes. */
void qz_demo_uuid(struct qz_demo_rng *r, char out[37]);

/* ---- demo_names.c: believable generated names ---- */

enum { QZ_DEMO_NGENRES = 20 };
extern const char *const qz_demo_genre_names[QZ_DEMO_NGENRES];

void qz_demo_name_artist(struct qz_demo_rng *r, int genre, char *out, size_t out_size);
void qz_demo_name_album(struct qz_demo_rng *r, const char *artist, char *out, size_t out_size);
void qz_demo_name_track(struct qz_demo_rng *r, char *out, size_t out_size);
void qz_demo_name_user(struct qz_demo_rng *r, char *out, size_t out_size);

/* ---- demo_catalog.c: artists, albums, tracks in memory ---- */

struct qz_demo_artist {
        char id[37];
        char name[64];
        uint8_t genres[3];
        uint8_t n_genres;
        uint32_t first_track, n_tracks; /* an artist's tracks are contiguous */
};

struct qz_demo_album {
        char id[37];
        char title[96];
        uint32_t artist;
        int32_t release_day; /* days since 1970-01-01 */
        uint32_t first_track, n_tracks;
};

struct qz_demo_track {
        char id[37];
        char title[96];
        uint32_t artist, album;
        int32_t duration_ms;
        int32_t release_day;
        uint8_t genres[3];
        uint8_t n_genres;
        uint8_t popularity; /* 0-100, Zipf-like over the catalog */
        /* What the synthesized audio encodes (and an analysis should find). */
        float tempo_bpm; /* 60-180 */
        bool minor;
        float energy;     /* 0-1: loudness, density */
        float brightness; /* 0-1: harmonic content */
};

struct qz_demo_catalog {
        struct qz_demo_artist *artists;
        struct qz_demo_album *albums;
        struct qz_demo_track *tracks;
        size_t n_artists, n_albums, n_tracks;
        /* Per genre: the tracks tagged with it and their cumulative
         * popularity weights, for taste sampling. */
        uint32_t *genre_tracks[QZ_DEMO_NGENRES];
        double *genre_cum[QZ_DEMO_NGENRES];
        size_t genre_n[QZ_DEMO_NGENRES];
        double genre_weight[QZ_DEMO_NGENRES]; /* how common a genre's fans are */
};

/* today_day: the day (since epoch) releases are relative to. */
int qz_demo_catalog_build(struct qz_demo_catalog *c, uint64_t seed, size_t n_artists,
                          size_t n_tracks, int32_t today_day, char *errstr, size_t errstr_size);
void qz_demo_catalog_free(struct qz_demo_catalog *c);
/* The genres related to g (including g itself first); returns how many. */
size_t qz_demo_genre_related(int g, uint8_t *out, size_t out_size);

/* ---- demo_audio.c: short WAV files an analysis can tell apart ---- */

enum { QZ_DEMO_AUDIO_RATE = 22050 };

/* Writes a 16-bit PCM mono WAV (8-15 s) for track t at path, atomically
 * (temp file + rename). */
int qz_demo_audio_write(const struct qz_demo_track *t, uint64_t seed, size_t index,
                        const char *path, char *errstr, size_t errstr_size);

/* ---- demo_plays.c: the play stream ---- */

struct qz_demo_play {
        char event_id[37];
        const char *user_id;
        const char *track_id;
        int64_t played_at_ms; /* Unix ms, UTC */
        int32_t duration_played_ms;
        bool completed;
        const char *source;
        const char *device_type;
};

typedef int (*qz_demo_emit_cb)(const struct qz_demo_play *p, void *ctx, char *errstr,
                               size_t errstr_size);

struct qz_demo_plays_cfg {
        uint64_t seed;
        size_t n_users;
        uint64_t n_plays;
        int days;
        int64_t end_ms; /* plays fall in [end_ms - days, end_ms) */
};

/* The user ids are a pure function of (seed, index). */
void qz_demo_user_id(uint64_t seed, size_t index, char out[37]);
/* Generates exactly cfg->n_plays plays user by user, calling emit for each;
 * stops at the first emit error. Memory stays O(catalog), not O(plays). */
int qz_demo_plays_generate(const struct qz_demo_catalog *c, const struct qz_demo_plays_cfg *cfg,
                           qz_demo_emit_cb emit, void *ctx, char *errstr, size_t errstr_size);
/* "2026-11-29T10:00:00.123Z" into out (25 bytes). */
void qz_demo_format_time(int64_t ms, char out[25]);

/* ---- demo_pg.c: catalog rows and bulk plays in Postgres ---- */

struct qz_demo_catalog_counts {
        long artists, albums, tracks, users; /* rows newly inserted */
};

/* Inserts artists, albums, tracks (ON CONFLICT DO NOTHING, so the tracks
 * trigger queues analysis for new rows only) and users. audio_paths[i] is
 * track i's audio_url or NULL. */
int qz_demo_pg_load_catalog(const char *dsn, const struct qz_demo_catalog *c,
                            char *const *audio_paths, uint64_t seed, size_t n_users,
                            int64_t users_before_ms, struct qz_demo_catalog_counts *out,
                            char *errstr, size_t errstr_size);

struct qz_demo_copy; /* a bulk COPY sink for play_history */
struct qz_demo_copy *qz_demo_copy_open(const char *dsn, char *errstr, size_t errstr_size);
qz_demo_emit_cb qz_demo_copy_emit_cb(void);
/* Finishes the last chunk; *inserted = rows that were new. Frees s either way. */
int qz_demo_copy_close(struct qz_demo_copy *s, bool commit, long long *inserted, char *errstr,
                       size_t errstr_size);

/* ---- demo_ingest.c: POST /v1/plays in batches of 500 ---- */

struct qz_demo_ingest;
struct qz_demo_ingest *qz_demo_ingest_open(const char *url, const char *token, char *errstr,
                                           size_t errstr_size);
qz_demo_emit_cb qz_demo_ingest_emit_cb(void);
/* Posts what is buffered, reports the totals, frees s. */
int qz_demo_ingest_close(struct qz_demo_ingest *s, bool flush, long long *accepted,
                         long long *rejected, char *errstr, size_t errstr_size);

#endif
