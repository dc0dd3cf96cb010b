/* test_analysis_features.c - lib/analysis on synthesized signals: click tracks at known tempo,
 * a sine at a known level, silence, files on disk, and the pure helpers (backoff, kNN, mood). */
#include "analysis/analysis.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RATE 22050

/* Decaying 1 kHz clicks at bpm over a faint noise floor. */
static float *click_track(double bpm, double seconds, size_t *n)
{
        *n = (size_t)(seconds * RATE);
        float *x = calloc(*n, sizeof(float));
        unsigned s = 12345;
        for (size_t i = 0; i < *n; i++) {
                s = s * 1103515245u + 12345u;
                x[i] = 0.001f * ((float)(s >> 16 & 0x7fff) / 16384.0f - 1.0f);
        }
        double period = 60.0 / bpm * RATE;
        for (double at = 0; at < (double)*n; at += period)
                for (size_t k = 0; k < RATE / 20 && (size_t)at + k < *n; k++)
                        x[(size_t)at + k] += (float)(0.8 * exp(-(double)k / (RATE * 0.01)) *
                                                     sin(2 * M_PI * 1000.0 * k / RATE));
        return x;
}

static void test_tempo_click_tracks(void **state)
{
        (void)state;
        static const double bpms[] = {70, 90, 100, 120, 128, 140, 160};
        for (size_t i = 0; i < sizeof(bpms) / sizeof(bpms[0]); i++) {
                size_t n;
                float *x = click_track(bpms[i], 20, &n);
                struct qz_analysis_features f = {0};
                char err[256];
                assert_int_equal(qz_analysis_signal(x, n, RATE, &f, err, sizeof(err)), 0);
                double rel = fabs(f.tempo_bpm - bpms[i]) / bpms[i];
                double rel2 = fabs(f.tempo_bpm - 2 * bpms[i]) / (2 * bpms[i]);
                double relh = fabs(f.tempo_bpm - bpms[i] / 2) / (bpms[i] / 2);
                if (rel > 0.04)
                        print_message("click %.0f BPM -> %.1f\n", bpms[i], f.tempo_bpm);
                /* exact within 4 %, an octave error tolerated only outside 80-160 */
                assert_true(rel <= 0.04 ||
                            ((bpms[i] < 80 || bpms[i] > 150) && (rel2 <= 0.04 || relh <= 0.04)));
                assert_true(f.onset_rate > bpms[i] / 60.0 * 0.7 &&
                            f.onset_rate < bpms[i] / 60.0 * 1.5);
                free(x);
        }
}

static void test_loudness_sine(void **state)
{
        (void)state;
        /* A full-scale 1 kHz sine (peak 1.0) on one channel is -3.01 LUFS
         * (EBU Tech 3341); at amplitude 0.1 it is -23.01 LUFS. */
        size_t n = RATE * 10;
        float *x = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++)
                x[i] = (float)(0.1 * sin(2 * M_PI * 1000.0 * (double)i / RATE));
        double lufs, lra;
        char err[256];
        assert_int_equal(qz_analysis_loudness(x, n, 1, RATE, &lufs, &lra, err, sizeof(err)), 0);
        assert_true(fabs(lufs - (-23.01)) < 0.1);
        assert_true(lra < 0.5);
        struct qz_analysis_features f = {0};
        assert_int_equal(qz_analysis_signal(x, n, RATE, &f, err, sizeof(err)), 0);
        assert_true(fabs(f.centroid_hz - 1000.0) < 60.0);
        assert_true(f.flatness < 0.05); /* tonal */
        assert_true(fabs(f.zcr - 2000.0 / RATE) < 0.002);
        free(x);
}

static void test_silence_and_noise(void **state)
{
        (void)state;
        size_t n = RATE * 5;
        float *x = calloc(n, sizeof(float));
        struct qz_analysis_features f = {0};
        char err[256];
        assert_int_equal(qz_analysis_signal(x, n, RATE, &f, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "silent"));
        unsigned s = 7;
        for (size_t i = 0; i < n; i++) {
                s = s * 1103515245u + 12345u;
                x[i] = 0.3f * ((float)(s >> 16 & 0x7fff) / 16384.0f - 1.0f);
        }
        memset(&f, 0, sizeof(f));
        assert_int_equal(qz_analysis_signal(x, n, RATE, &f, err, sizeof(err)), 0);
        assert_true(f.flatness > 0.5); /* white noise is flat */
        assert_true(f.centroid_hz > 4000);
        free(x);
}

static void write_wav(const char *path, const float *x, size_t n, int rate, int channels)
{
        SF_INFO info = {
            .samplerate = rate, .channels = channels, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
        SNDFILE *f = sf_open(path, SFM_WRITE, &info);
        assert_non_null(f);
        assert_int_equal(sf_writef_float(f, x, (sf_count_t)(n / (size_t)channels)),
                         (sf_count_t)(n / (size_t)channels));
        sf_close(f);
}

static void test_files(void **state)
{
        (void)state;
        char dir[] = "/tmp/qz-test-analysis-XXXXXX", path[256];
        assert_non_null(mkdtemp(dir));
        struct qz_analysis_config cfg = {.max_seconds = 8};
        struct qz_analysis_features f;
        enum qz_analysis_err k;
        char err[512];

        /* 44.1 kHz stereo click track: decimated, loudness on both channels,
         * only max_seconds decoded. */
        size_t n;
        float *mono = click_track(120, 15, &n);
        float *st = malloc(sizeof(float) * n * 4);
        for (size_t i = 0; i < n * 2; i++)
                st[2 * i] = st[2 * i + 1] = mono[i / 2];
        snprintf(path, sizeof(path), "%s/click.wav", dir);
        write_wav(path, st, n * 4, 44100, 2);
        assert_int_equal(qz_analysis_file(path, &cfg, &f, &k, err, sizeof(err)), 0);
        assert_true(fabs(f.seconds - 8.0) < 0.1);
        assert_int_equal(f.sample_rate, 22050);
        assert_true(fabs(f.tempo_bpm - 120) / 120 <= 0.04);
        json_t *j = qz_analysis_features_json(&f);
        assert_non_null(j);
        assert_non_null(json_object_get(j, "mood"));
        json_decref(j);

        /* bad inputs: permanent, with a clear message */
        assert_int_equal(qz_analysis_file(NULL, &cfg, &f, &k, err, sizeof(err)), -1);
        assert_string_equal(err, "no audio");
        snprintf(path, sizeof(path), "%s/missing.wav", dir);
        assert_int_equal(qz_analysis_file(path, &cfg, &f, &k, err, sizeof(err)), -1);
        assert_int_equal(k, QZ_ANALYSIS_PERMANENT);
        snprintf(path, sizeof(path), "%s/empty.wav", dir);
        fclose(fopen(path, "w"));
        assert_int_equal(qz_analysis_file(path, &cfg, &f, &k, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "empty"));
        snprintf(path, sizeof(path), "%s/text.wav", dir);
        FILE *t = fopen(path, "w");
        fputs("this is not audio at all, just some text that goes on and on\n", t);
        fclose(t);
        assert_int_equal(qz_analysis_file(path, &cfg, &f, &k, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "cannot decode"));
        assert_int_equal(k, QZ_ANALYSIS_PERMANENT);
        /* truncated: the header of a real file without its data */
        snprintf(path, sizeof(path), "%s/click.wav", dir);
        char trunc[256];
        snprintf(trunc, sizeof(trunc), "%s/trunc.wav", dir);
        FILE *a = fopen(path, "rb"), *b = fopen(trunc, "wb");
        char head[100];
        assert_int_equal(fread(head, 1, sizeof(head), a), sizeof(head));
        fwrite(head, 1, sizeof(head), b);
        fclose(a);
        fclose(b);
        assert_int_equal(qz_analysis_file(trunc, &cfg, &f, &k, err, sizeof(err)), -1);
        /* silence */
        float *z = calloc(RATE * 4, sizeof(float));
        snprintf(path, sizeof(path), "%s/silent.wav", dir);
        write_wav(path, z, RATE * 4, RATE, 1);
        assert_int_equal(qz_analysis_file(path, &cfg, &f, &k, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "silent"));
        /* a directory is not a file */
        assert_int_equal(qz_analysis_file(dir, &cfg, &f, &k, err, sizeof(err)), -1);
        /* unreachable URL: transient */
        assert_int_equal(
            qz_analysis_file("http://127.0.0.1:1/x.wav", &cfg, &f, &k, err, sizeof(err)), -1);
        assert_int_equal(k, QZ_ANALYSIS_TRANSIENT);
        free(z);
        free(mono);
        free(st);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_backoff(void **state)
{
        (void)state;
        struct qz_analysis_config c = {.retry_base_ms = 1000, .retry_max_ms = 5000};
        assert_int_equal(qz_analysis_backoff_ms(&c, 1), 1000);
        assert_int_equal(qz_analysis_backoff_ms(&c, 2), 2000);
        assert_int_equal(qz_analysis_backoff_ms(&c, 3), 4000);
        assert_int_equal(qz_analysis_backoff_ms(&c, 4), 5000);
        assert_int_equal(qz_analysis_backoff_ms(&c, 40), 5000);
        struct qz_analysis_config d = {0};
        assert_int_equal(qz_analysis_backoff_ms(&d, 1), 10000);
}

static void test_knn_and_mood(void **state)
{
        (void)state;
        struct qz_analysis_labelled refs[6] = {
            {{0, 0, 0, 0, 0, 0, 0, 0, 0}, "ambient"},
            {{0.1, 0, 0, 0, 0, 0, 0, 0, 0}, "ambient"},
            {{0, 0.1, 0, 0, 0, 0, 0, 0, 0}, "ambient"},
            {{1, 1, 1, 1, 1, 1, 1, 1, 1}, "metal"},
            {{1, 0.9, 1, 1, 1, 1, 1, 1, 1}, "metal"},
            {{0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, "pop"},
        };
        double v[QZ_ANALYSIS_GENRE_DIMS] = {0.95, 1, 1, 1, 1, 1, 1, 0.9, 1};
        const char *g;
        double conf;
        assert_int_equal(qz_analysis_genre_knn(v, refs, 6, 3, &g, &conf), 0);
        assert_string_equal(g, "metal");
        assert_true(conf > 0.5 && conf <= 1.0);
        assert_int_equal(qz_analysis_genre_knn(v, refs, 0, 3, &g, &conf), -1);

        struct qz_analysis_features f = {.loudness_lufs = -10,
                                         .tempo_bpm = 150,
                                         .centroid_hz = 3000,
                                         .onset_rate = 5,
                                         .mode_confidence = 0.2};
        qz_analysis_derive(&f);
        assert_string_equal(f.mood, "happy");
        assert_true(f.energy > 0.75 && f.valence > 0.5);
        f = (struct qz_analysis_features){.loudness_lufs = -28,
                                          .tempo_bpm = 65,
                                          .centroid_hz = 400,
                                          .minor = true,
                                          .mode_confidence = 0.2};
        qz_analysis_derive(&f);
        assert_string_equal(f.mood, "sad");
        assert_true(f.energy < 0.2 && f.valence < 0.3);
        assert_true(f.n_mood_tags >= 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_tempo_click_tracks),
            cmocka_unit_test(test_loudness_sine),
            cmocka_unit_test(test_silence_and_noise),
            cmocka_unit_test(test_files),
            cmocka_unit_test(test_backoff),
            cmocka_unit_test(test_knn_and_mood),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
