/* cmd_demo.c - qoqnuzctl demo: seeded demo catalog, users, audio files and plays, loaded through
 * the real paths.
 *
 * The catalog enters as rows (the tracks trigger queues analysis; the
 * tracks.v1 relay publishes the unpublished rows later); plays go to the
 * play-ingestor over HTTP, or with --bulk straight into play_history by COPY
 * (then the reconcile jobs must run). */
#include "auth.h"
#include "clock.h"
#include "cfg.h"
#include "ctl.h"
#include "demo.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define AUDIO_CAP   256
#define SERVICE_SUB "00000000-0000-4000-8000-0000000de770" /* the demo loader's identity */

struct opts {
        unsigned long long users, artists, tracks, plays, days, seed, audio;
        const char *media_dir;
        const char *ingest_url;
        bool bulk, catalog_only, plays_only;
};

/* Counts plays on their way to the sink and prints progress on big loads. */
struct progress {
        qz_demo_emit_cb emit;
        void *ctx;
        unsigned long long count, total;
        double t0;
};

static int progress_emit_cb(const struct qz_demo_play *p, void *ctx, char *errstr,
                            size_t errstr_size)
{
        struct progress *pr = ctx;
        if (pr->emit(p, pr->ctx, errstr, errstr_size) != 0)
                return -1;
        if (++pr->count % 1000000 == 0) {
                double dt = qz_clock_mono_s() - pr->t0;
                fprintf(stderr, "demo: %llu/%llu plays, %.1f s, %.0f plays/s\n", pr->count,
                        pr->total, dt, (double)pr->count / (dt > 0 ? dt : 1e-9));
        }
        return 0;
}

static void usage(void)
{
        fprintf(stderr,
                "usage: qoqnuzctl demo [--users N] [--artists N] [--tracks N] [--plays N]\n"
                "         [--days N] [--seed N] [--audio N] [--media-dir DIR]\n"
                "         [--ingest-url URL] [--bulk] [--catalog-only | --plays-only]\n"
                "  defaults: 200 users, 60 artists, 1500 tracks, 20000 plays over 120 days,\n"
                "  seed 42, 24 audio files (at most %d) in $QOQNUZ_MEDIA_DIR or .run/media,\n"
                "  plays POSTed to http://127.0.0.1:8081/v1/plays; --bulk COPYs them into\n"
                "  play_history instead. Environment: QOQNUZ_PG_DSN, JWT_SECRET.\n",
                AUDIO_CAP);
}

static int parse_count(const char *flag, const char *v, unsigned long long min,
                       unsigned long long max, unsigned long long *out)
{
        char *end = NULL;
        errno = 0;
        unsigned long long x = v ? strtoull(v, &end, 10) : 0;
        if (!v || !*v || *end || errno || v[0] == '-' || x < min || x > max) {
                fprintf(stderr, "qoqnuzctl demo: %s: bad value '%s': expected %llu..%llu\n", flag,
                        v ? v : "", min, max);
                return -1;
        }
        *out = x;
        return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
        static const struct {
                const char *name;
                size_t off;
                unsigned long long min, max;
        } counts[] = {
            {"--users", offsetof(struct opts, users), 1, 100000000ULL},
            {"--artists", offsetof(struct opts, artists), 1, 10000000ULL},
            {"--tracks", offsetof(struct opts, tracks), 1, 100000000ULL},
            {"--plays", offsetof(struct opts, plays), 0, 10000000000ULL},
            {"--days", offsetof(struct opts, days), 1, 3650},
            {"--seed", offsetof(struct opts, seed), 0, ULLONG_MAX},
            {"--audio", offsetof(struct opts, audio), 0, 1000000},
        };
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *eq = strchr(a, '=');
                size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
                const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
                bool takes = false, known = false;
                for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
                        if (strlen(counts[k].name) != nlen || strncmp(a, counts[k].name, nlen) != 0)
                                continue;
                        if (parse_count(counts[k].name, val, counts[k].min, counts[k].max,
                                        (unsigned long long *)((char *)o + counts[k].off)) != 0)
                                return -1;
                        known = takes = true;
                }
                if (!known && nlen == 11 && strncmp(a, "--media-dir", nlen) == 0) {
                        o->media_dir = val;
                        known = takes = true;
                } else if (!known && nlen == 12 && strncmp(a, "--ingest-url", nlen) == 0) {
                        o->ingest_url = val;
                        known = takes = true;
                } else if (!known && !eq && strcmp(a, "--bulk") == 0) {
                        o->bulk = known = true;
                } else if (!known && !eq && strcmp(a, "--catalog-only") == 0) {
                        o->catalog_only = known = true;
                } else if (!known && !eq && strcmp(a, "--plays-only") == 0) {
                        o->plays_only = known = true;
                } else if (!known && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
                        usage();
                        exit(0);
                }
                if (!known) {
                        fprintf(stderr, "qoqnuzctl demo: unknown argument '%s'\n", a);
                        return -1;
                }
                if (takes && (!val || !*val)) {
                        fprintf(stderr, "qoqnuzctl demo: %.*s needs a value\n", (int)nlen, a);
                        return -1;
                }
                if (takes && !eq)
                        i++;
        }
        if (o->catalog_only && o->plays_only) {
                fprintf(stderr,
                        "qoqnuzctl demo: --catalog-only and --plays-only exclude each other\n");
                return -1;
        }
        if (o->audio > AUDIO_CAP) {
                fprintf(stderr, "qoqnuzctl demo: --audio capped at %d\n", AUDIO_CAP);
                o->audio = AUDIO_CAP;
        }
        if (o->audio > o->tracks)
                o->audio = o->tracks;
        return 0;
}

static int mkdir_p(const char *path, char *errstr, size_t errstr_size)
{
        char buf[PATH_MAX];
        if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
                snprintf(errstr, errstr_size, "path too long: %.300s", path);
                return -1;
        }
        for (char *p = buf + 1;; p++) {
                if (*p != '/' && *p != '\0')
                        continue;
                char c = *p;
                *p = '\0';
                if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                        snprintf(errstr, errstr_size, "cannot create %.300s: %s", buf,
                                 strerror(errno));
                        return -1;
                }
                *p = c;
                if (c == '\0')
                        return 0;
        }
}

/* Writes o->audio tracks' WAV files and a labels.tsv of what each encodes
 * (for measuring the analysis). Fills paths[i] (malloc'd, caller frees). */
static int write_audio(const struct qz_demo_catalog *c, const struct opts *o, char **paths,
                       char *dir_out, size_t dir_out_size, char *errstr, size_t errstr_size)
{
        char dir[PATH_MAX], abs[PATH_MAX], path[PATH_MAX + 64];
        FILE *labels = NULL;

        if (snprintf(dir, sizeof(dir), "%s/demo", o->media_dir) >= (int)sizeof(dir) ||
            mkdir_p(dir, errstr, errstr_size) != 0)
                goto fail;
        if (!realpath(dir, abs)) {
                snprintf(errstr, errstr_size, "cannot resolve %.300s: %s", dir, strerror(errno));
                goto fail;
        }
        snprintf(dir_out, dir_out_size, "%s", abs);
        snprintf(path, sizeof(path), "%s/labels.tsv", abs);
        if (!(labels = fopen(path, "w"))) {
                snprintf(errstr, errstr_size, "cannot write %.300s: %s", path, strerror(errno));
                goto fail;
        }
        fprintf(labels, "track_id\tpath\ttempo_bpm\tmode\tenergy\tbrightness\tgenre\n");
        /* Round-robin over artists (the first twenty cover every genre
         * once), so even a few files span tempos, modes and energies. */
        for (size_t k = 0, done = 0; done < o->audio && k < c->n_artists * c->n_tracks; k++) {
                const struct qz_demo_artist *a = &c->artists[k % c->n_artists];
                size_t j = k / c->n_artists;
                if (j >= a->n_tracks)
                        continue;
                size_t i = a->first_track + j;
                const struct qz_demo_track *t = &c->tracks[i];
                done++;
                snprintf(path, sizeof(path), "%s/%s.wav", abs, t->id);
                if (qz_demo_audio_write(t, o->seed, i, path, errstr, errstr_size) != 0)
                        goto fail;
                if (!(paths[i] = strdup(path))) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto fail;
                }
                fprintf(labels, "%s\t%s\t%.1f\t%s\t%.2f\t%.2f\t%s\n", t->id, path, t->tempo_bpm,
                        t->minor ? "minor" : "major", t->energy, t->brightness,
                        qz_demo_genre_names[t->genres[0]]);
        }
        if (fclose(labels) != 0) {
                labels = NULL;
                snprintf(errstr, errstr_size, "cannot write labels.tsv: %s", strerror(errno));
                goto fail;
        }
        return 0;
fail:
        if (labels)
                fclose(labels);
        return -1;
}

static int load_plays(const struct qz_demo_catalog *c, const struct opts *o, const char *dsn,
                      const char *secret, int64_t end_ms)
{
        char err[512] = "";
        struct qz_demo_plays_cfg cfg = {.seed = o->seed,
                                        .n_users = o->users,
                                        .n_plays = o->plays,
                                        .days = (int)o->days,
                                        .end_ms = end_ms};
        struct progress pr = {.total = o->plays, .t0 = qz_clock_mono_s()};
        struct qz_demo_copy *copy = NULL;
        struct qz_demo_ingest *http = NULL;
        char *token = NULL;
        long long stored = 0, rejected = 0;

        if (o->bulk) {
                if (!(copy = qz_demo_copy_open(dsn, err, sizeof(err))))
                        goto fail;
                pr.emit = qz_demo_copy_emit_cb();
                pr.ctx = copy;
        } else {
                token = qz_auth_sign(secret, SERVICE_SUB, "service", (int64_t)time(NULL) + 86400,
                                     err, sizeof(err));
                if (!token || !(http = qz_demo_ingest_open(o->ingest_url, token, err, sizeof(err))))
                        goto fail;
                pr.emit = qz_demo_ingest_emit_cb();
                pr.ctx = http;
        }
        int rc = qz_demo_plays_generate(c, &cfg, progress_emit_cb, &pr, err, sizeof(err));
        char err2[512] = "";
        int rc2 = copy
                      ? qz_demo_copy_close(copy, rc == 0, &stored, err2, sizeof(err2))
                      : qz_demo_ingest_close(http, rc == 0, &stored, &rejected, err2, sizeof(err2));
        copy = NULL;
        http = NULL;
        if (rc != 0 || rc2 != 0) {
                if (rc == 0)
                        snprintf(err, sizeof(err), "%s", err2);
                goto fail;
        }
        double dt = qz_clock_mono_s() - pr.t0;
        if (o->bulk) {
                printf("demo: %llu plays over %llu days COPYed into play_history (%lld new) in "
                       "%.1f s, %.0f plays/s\n",
                       o->plays, o->days, stored, dt, (double)o->plays / (dt > 0 ? dt : 1e-9));
                printf("demo: these plays bypassed plays.v1: run the reconcile jobs now:\n"
                       "  SELECT aggregate_all_user_listening_history();  -- "
                       "aggregate-listening-history\n"
                       "  SELECT calculate_trending_tracks();             -- calculate-trending\n");
        } else {
                printf("demo: %llu plays over %llu days POSTed to %s: %lld accepted, %lld "
                       "rejected in %.1f s, %.0f plays/s\n",
                       o->plays, o->days, o->ingest_url, stored, rejected, dt,
                       (double)o->plays / (dt > 0 ? dt : 1e-9));
        }
        free(token);
        return rejected > 0 ? 1 : 0;
fail:
        fprintf(stderr, "qoqnuzctl demo: plays: %s\n", err);
        if (copy)
                qz_demo_copy_close(copy, false, NULL, err, sizeof(err));
        if (http)
                qz_demo_ingest_close(http, false, NULL, NULL, err, sizeof(err));
        free(token);
        return 1;
}

int ctl_demo(int argc, char **argv)
{
        const char *dsn = NULL, *secret = NULL, *media_env = NULL;
        const struct qz_cfg_entry cfg[] = {
            {"QOQNUZ_PG_DSN", QZ_CFG_PG_DSN, "postgresql://qoqnuz:qoqnuz@127.0.0.1:55432/qoqnuz", 0,
             -1, &dsn, "Postgres for catalog rows and --bulk plays"},
            {"JWT_SECRET", QZ_CFG_STR, "dev-jwt-secret", 0, -1, &secret,
             "HS256 secret for the service token"},
            {"QOQNUZ_MEDIA_DIR", QZ_CFG_STR, ".run/media", 0, -1, &media_env,
             "where synthesized audio files go"},
            {NULL, 0, NULL, 0, 0, NULL, NULL},
        };
        struct opts o = {.users = 200,
                         .artists = 60,
                         .tracks = 1500,
                         .plays = 20000,
                         .days = 120,
                         .seed = 42,
                         .audio = 24,
                         .ingest_url = "http://127.0.0.1:8081/v1/plays"};
        struct qz_demo_catalog cat = {0};
        char **paths = NULL;
        char err[512] = "", audio_dir[PATH_MAX] = "";
        int rc = 1;

        if (parse_args(argc, argv, &o) != 0) {
                usage();
                return 2;
        }
        qz_cfg_load_or_exit(cfg);
        if (!o.media_dir)
                o.media_dir = media_env;

        /* Plays end at the current hour and releases count from today, so a
         * rerun within the hour reproduces every row exactly. */
        time_t now = time(NULL);
        int64_t end_ms = ((int64_t)now / 3600) * 3600 * 1000;
        int32_t today = (int32_t)(now / 86400);
        double t0 = qz_clock_mono_s();

        if (qz_demo_catalog_build(&cat, o.seed, o.artists, o.tracks, today, err, sizeof(err)) != 0)
                goto fail;
        if (!o.plays_only) {
                struct qz_demo_catalog_counts n = {0};
                paths = calloc(o.tracks, sizeof(*paths));
                if (!paths) {
                        snprintf(err, sizeof(err), "out of memory");
                        goto fail;
                }
                if (o.audio && write_audio(&cat, &o, paths, audio_dir, sizeof(audio_dir), err,
                                           sizeof(err)) != 0)
                        goto fail;
                if (qz_demo_pg_load_catalog(dsn, &cat, paths, o.seed, o.users,
                                            end_ms - (int64_t)o.days * 86400000LL, &n, err,
                                            sizeof(err)) != 0)
                        goto fail;
                printf("demo: seed %llu: %zu artists, %zu albums, %zu tracks, %llu users "
                       "(new rows: %ld artists, %ld albums, %ld tracks, %ld users) in %.1f s\n",
                       o.seed, cat.n_artists, cat.n_albums, cat.n_tracks, o.users, n.artists,
                       n.albums, n.tracks, n.users, qz_clock_mono_s() - t0);
                if (o.audio)
                        printf("demo: %llu audio files (WAV 22050 Hz mono) and labels.tsv in %s\n",
                               o.audio, audio_dir);
        }
        rc = 0;
        if (!o.catalog_only && o.plays > 0)
                rc = load_plays(&cat, &o, dsn, secret, end_ms);
        goto done;
fail:
        fprintf(stderr, "qoqnuzctl demo: %s\n", err);
        rc = 1;
done:
        if (paths)
                for (size_t i = 0; i < o.tracks; i++)
                        free(paths[i]);
        free(paths);
        qz_demo_catalog_free(&cat);
        return rc;
}
