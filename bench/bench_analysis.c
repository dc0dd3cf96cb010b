/* bench_analysis.c - accuracy and speed of lib/analysis on a labelled set (qoqnuzctl demo's
 * labels.tsv: track_id, path, tempo_bpm, mode, energy, brightness, genre).
 *
 * Usage: bench_analysis [labels.tsv] (default $QZ_ANALYSIS_LABELS; without
 * either it synthesizes its own set: click and kick patterns at 60-180 BPM
 * and 1 kHz sines at known levels, and checks tempo and loudness). Prints
 * tempo Accuracy1 (within 4 %) and Accuracy2 (also at 1/3, 1/2, 2, 3 times:
 * octave errors), mode agreement, energy and brightness correlation and
 * high/low agreement, genre leave-one-out kNN accuracy, and speed as seconds
 * of audio analysed per second of one core. */
#include "analysis/analysis.h"

#include <math.h>
#include <sndfile.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct row {
        char path[1024], mode[16], genre[64];
        double tempo, energy, brightness;
        struct qz_analysis_features f;
        double v[QZ_ANALYSIS_GENRE_DIMS];
        bool ok;
};

static double cpu_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double pearson(const double *x, const double *y, size_t n)
{
        double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
        for (size_t i = 0; i < n; i++) {
                mx += x[i] / (double)n;
                my += y[i] / (double)n;
        }
        for (size_t i = 0; i < n; i++) {
                sxy += (x[i] - mx) * (y[i] - my);
                sxx += (x[i] - mx) * (x[i] - mx);
                syy += (y[i] - my) * (y[i] - my);
        }
        return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : 0;
}

/* The self-contained set: 25 tempos x 2 timbres (1 kHz click, 60 Hz kick)
 * as 20 s WAVs, labels.tsv beside them; and sines at known loudness checked
 * in memory against EBU Tech 3341's -3.01 LUFS for a full-scale 1 kHz sine. */
static int synth_set(char *dir, size_t dir_size, char *labels, size_t labels_size)
{
        snprintf(dir, dir_size, "/tmp/qz-bench-analysis-XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        snprintf(labels, labels_size, "%s/labels.tsv", dir);
        FILE *l = fopen(labels, "w");
        if (!l)
                return -1;
        fprintf(l, "track_id\tpath\ttempo_bpm\tmode\tenergy\tbrightness\tgenre\n");
        const int rate = 22050;
        size_t n = (size_t)rate * 20;
        float *x = malloc(sizeof(float) * n);
        for (int bpm = 60; bpm <= 180; bpm += 5)
                for (int timbre = 0; timbre < 2; timbre++) {
                        double hz = timbre ? 60.0 : 1000.0, tau = timbre ? 0.08 : 0.01;
                        for (size_t i = 0; i < n; i++)
                                x[i] = (float)(0.02 * sin(2 * M_PI * 220.0 * (double)i / rate));
                        double period = 60.0 / bpm * rate;
                        for (double at = 0; at < (double)n; at += period)
                                for (size_t k = 0; k < (size_t)(rate * 0.3) && (size_t)at + k < n;
                                     k++)
                                        x[(size_t)at + k] +=
                                            (float)(0.8 * exp(-(double)k / (rate * tau)) *
                                                    sin(2 * M_PI * hz * k / rate));
                        char path[512];
                        snprintf(path, sizeof(path), "%s/%s%d.wav", dir, timbre ? "kick" : "click",
                                 bpm);
                        SF_INFO info = {.samplerate = rate,
                                        .channels = 1,
                                        .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
                        SNDFILE *f = sf_open(path, SFM_WRITE, &info);
                        if (!f)
                                return -1;
                        sf_writef_float(f, x, (sf_count_t)n);
                        sf_close(f);
                        fprintf(l, "x\t%s\t%d\tmajor\t0.5\t0.5\t%s\n", path, bpm,
                                timbre ? "kick" : "click");
                }
        fclose(l);
        double worst = 0;
        for (int db = -40; db <= 0; db += 5) {
                double a = pow(10.0, db / 20.0), lufs, lra;
                char err[256];
                for (size_t i = 0; i < n; i++)
                        x[i] = (float)(a * sin(2 * M_PI * 997.0 * (double)i / rate));
                qz_analysis_loudness(x, n, 1, rate, &lufs, &lra, err, sizeof(err));
                double e = fabs(lufs - (db - 3.01));
                worst = e > worst ? e : worst;
        }
        printf("  loudness: 997 Hz sines at -40..0 dBFS, worst error vs EBU Tech 3341 "
               "(-3.01 LUFS at full scale): %.3f LU (target <= 0.1)\n",
               worst);
        free(x);
        return 0;
}

int main(int argc, char **argv)
{
        const char *labels = argc > 1 ? argv[1] : getenv("QZ_ANALYSIS_LABELS");
        char synth_dir[256] = "", synth_labels[300];
        if (!labels) {
                printf("bench_analysis: no labels.tsv given: synthesized click/kick set "
                       "(bench/analysis.sh runs the demo set)\n");
                if (synth_set(synth_dir, sizeof(synth_dir), synth_labels, sizeof(synth_labels)) !=
                    0) {
                        fprintf(stderr, "cannot write the synthesized set\n");
                        return 1;
                }
                labels = synth_labels;
        }
        FILE *in = fopen(labels, "r");
        if (!in) {
                perror(labels);
                return 1;
        }
        size_t cap = 1024, n = 0;
        struct row *rows = calloc(cap, sizeof(*rows));
        char line[2048];
        if (!fgets(line, sizeof(line), in)) { /* header */
                fclose(in);
                return 1;
        }
        while (n < cap && fgets(line, sizeof(line), in)) {
                struct row *r = &rows[n];
                char id[64];
                if (sscanf(line, "%63s %1023s %lf %15s %lf %lf %63s", id, r->path, &r->tempo,
                           r->mode, &r->energy, &r->brightness, r->genre) == 7)
                        n++;
        }
        fclose(in);

        struct qz_analysis_config cfg = {0};
        double audio_s = 0, t0 = cpu_s();
        size_t ok = 0;
        for (size_t i = 0; i < n; i++) {
                char err[512];
                enum qz_analysis_err k;
                if (qz_analysis_file(rows[i].path, &cfg, &rows[i].f, &k, err, sizeof(err)) != 0) {
                        fprintf(stderr, "%s: %s\n", rows[i].path, err);
                        continue;
                }
                json_t *j = qz_analysis_features_json(&rows[i].f);
                rows[i].ok = qz_analysis_genre_vector(j, rows[i].v) == 0;
                json_decref(j);
                audio_s += rows[i].f.seconds;
                ok++;
        }
        double cpu = cpu_s() - t0;

        size_t acc1 = 0, acc2 = 0, mode_ok = 0, e_hilo = 0, m = 0, genre_ok = 0, gn = 0;
        double *ex = calloc(n + 1, sizeof(double)), *ey = calloc(n + 1, sizeof(double));
        double *bx = calloc(n + 1, sizeof(double)), *by = calloc(n + 1, sizeof(double));
        struct qz_analysis_labelled *refs = calloc(n + 1, sizeof(*refs));
        for (size_t i = 0; i < n; i++) {
                struct row *r = &rows[i];
                if (!r->ok)
                        continue;
                double est = r->f.tempo_bpm, rel = fabs(est - r->tempo) / r->tempo;
                if (rel <= 0.04)
                        acc1++;
                static const double mult[] = {1.0, 2.0, 0.5, 3.0, 1.0 / 3.0};
                for (size_t k = 0; k < 5; k++)
                        if (fabs(est - r->tempo * mult[k]) / (r->tempo * mult[k]) <= 0.04) {
                                acc2++;
                                break;
                        }
                if ((strcmp(r->mode, "minor") == 0) == r->f.minor)
                        mode_ok++;
                if ((r->energy >= 0.5) == (r->f.energy >= 0.5))
                        e_hilo++;
                ex[m] = r->f.energy;
                ey[m] = r->energy;
                bx[m] = r->f.centroid_hz;
                by[m] = r->brightness;
                memcpy(refs[m].v, r->v, sizeof(r->v));
                refs[m].genre = r->genre;
                m++;
        }
        /* Leave-one-out: each track against all the others. */
        for (size_t i = 0; i < m; i++) {
                struct qz_analysis_labelled me = refs[i];
                refs[i] = refs[m - 1];
                const char *g = NULL;
                double conf = 0;
                if (qz_analysis_genre_knn(me.v, refs, m - 1, 7, &g, &conf) == 0) {
                        gn++;
                        genre_ok += strcmp(g, me.genre) == 0;
                }
                refs[i] = me;
        }
        printf("analysis accuracy on %s: %zu files, %zu analysed\n", labels, n, ok);
        if (m == 0)
                return 1;
        printf("  tempo Accuracy1 (within 4%%):            %5.1f %% (%zu/%zu)\n", 100.0 * acc1 / m,
               acc1, m);
        printf("  tempo Accuracy2 (octave errors allowed): %5.1f %% (octave errors %zu)\n",
               100.0 * acc2 / m, acc2 - acc1);
        if (!synth_dir[0]) { /* the synthesized set has no mode/energy/genre labels */
                printf("  mode (major/minor) agreement:            %5.1f %%\n",
                       100.0 * mode_ok / m);
                printf("  energy high/low (0.5) agreement:         %5.1f %%, Pearson r %.2f\n",
                       100.0 * e_hilo / m, pearson(ex, ey, m));
                printf("  brightness vs spectral centroid:         Pearson r %.2f\n",
                       pearson(bx, by, m));
                printf("  genre leave-one-out 7-NN accuracy:       %5.1f %% (%zu/%zu; chance ~%.0f "
                       "%%)\n",
                       gn ? 100.0 * genre_ok / gn : 0.0, genre_ok, gn, 100.0 / 20);
        }
        printf("  speed: %.1f s of audio in %.2f s CPU = %.0fx real time per core "
               "(ratio to the 200x target: %.2f)\n",
               audio_s, cpu, cpu > 0 ? audio_s / cpu : 0, cpu > 0 ? audio_s / cpu / 200.0 : 0);
        if (getenv("QZ_ANALYSIS_VERBOSE"))
                for (size_t i = 0; i < n; i++)
                        printf("%6.1f %6.1f %s/%s e %.2f/%.2f c %.0f lufs %.1f %s\n", rows[i].tempo,
                               rows[i].f.tempo_bpm, rows[i].mode,
                               rows[i].f.minor ? "minor" : "major", rows[i].energy,
                               rows[i].f.energy, rows[i].f.centroid_hz, rows[i].f.loudness_lufs,
                               rows[i].genre);
        free(ex);
        free(ey);
        free(bx);
        free(by);
        free(refs);
        free(rows);
        if (synth_dir[0]) {
                char cmd[300];
                snprintf(cmd, sizeof(cmd), "rm -rf %s", synth_dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", synth_dir);
        }
        return 0;
}
