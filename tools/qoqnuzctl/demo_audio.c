/* demo_audio.c - synthesizes short WAV files whose tempo, mode, loudness and brightness differ per
 * track.
 *
 * Each file is a loop of: a kick on every beat (a decaying sine sweeping
 * 150 -> 50 Hz, so onset detection finds the tempo), a bass note on the
 * chord root, a pad playing I-V-vi-IV (major) or i-VI-III-VII (minor), one
 * chord per bar, with more harmonics for brighter tracks, and off-beat hats
 * on energetic ones. The peak level follows the track's energy. */
#include "demo.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_AUDIO = 40 };

static const int major_roots[4] = {0, 7, 9, 5};
static const int major_minor3[4] = {0, 0, 1, 0}; /* vi is minor */
static const int minor_roots[4] = {0, 8, 3, 10};
static const int minor_minor3[4] = {1, 0, 0, 0}; /* i is minor */

static double midi_hz(double note)
{
        return 440.0 * pow(2.0, (note - 69.0) / 12.0);
}

/* Adds an additive tone (n_harm harmonics, amplitude 1/k^tilt) to buf. */
static void add_tone(float *buf, size_t from, size_t to, double hz, double amp, int n_harm,
                     double tilt)
{
        double w = 2.0 * M_PI * hz / QZ_DEMO_AUDIO_RATE;
        double nyquist_k = (QZ_DEMO_AUDIO_RATE / 2.0) / hz;
        size_t len = to - from;
        double wk[16];
        for (int k = 1; k <= n_harm && k < 16; k++)
                wk[k] = pow(k, -tilt);
        double attack = 0.02 * QZ_DEMO_AUDIO_RATE, release = 0.08 * QZ_DEMO_AUDIO_RATE;
        for (size_t i = 0; i < len; i++) {
                double th = w * (double)(from + i);
                double s1 = sin(th), c2 = 2.0 * cos(th), prev = 0.0, cur = s1, sum = 0.0;
                /* sin(k th) by the Chebyshev recurrence: one sin/cos per
                 * sample instead of one per harmonic. */
                for (int k = 1; k <= n_harm && k < 16 && k < nyquist_k; k++) {
                        sum += cur * wk[k];
                        double next = c2 * cur - prev;
                        prev = cur;
                        cur = next;
                }
                double env = 1.0;
                if ((double)i < attack)
                        env = (double)i / attack;
                if ((double)(len - i) < release)
                        env *= (double)(len - i) / release;
                buf[from + i] += (float)(amp * env * sum);
        }
}

static void add_kick(float *buf, size_t n, size_t at, double amp)
{
        double phase = 0.0;
        for (size_t i = 0; at + i < n && i < (size_t)(0.35 * QZ_DEMO_AUDIO_RATE); i++) {
                double t = (double)i / QZ_DEMO_AUDIO_RATE;
                double f = 50.0 + 100.0 * exp(-t / 0.03);
                phase += 2.0 * M_PI * f / QZ_DEMO_AUDIO_RATE;
                buf[at + i] += (float)(amp * exp(-t / 0.12) * sin(phase));
        }
}

static void add_hat(float *buf, size_t n, size_t at, double amp, struct qz_demo_rng *r)
{
        double last = 0.0;
        for (size_t i = 0; at + i < n && i < (size_t)(0.06 * QZ_DEMO_AUDIO_RATE); i++) {
                double t = (double)i / QZ_DEMO_AUDIO_RATE;
                double x = 2.0 * qz_demo_rng_unit(r) - 1.0;
                /* First difference of white noise: a crude high-pass. */
                buf[at + i] += (float)(amp * exp(-t / 0.015) * (x - last) * 0.5);
                last = x;
        }
}

static void put_le(uint8_t *p, uint32_t v, int bytes)
{
        for (int i = 0; i < bytes; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static int write_wav(const char *path, const float *buf, size_t n, char *errstr, size_t errstr_size)
{
        char tmp[4096];
        FILE *f = NULL;
        int16_t *pcm = NULL;
        uint8_t h[44];
        uint32_t data_bytes = (uint32_t)(n * 2);

        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
                snprintf(errstr, errstr_size, "audio path too long: %.300s", path);
                return -1;
        }
        memcpy(h, "RIFF", 4);
        put_le(h + 4, 36 + data_bytes, 4);
        memcpy(h + 8, "WAVEfmt ", 8);
        put_le(h + 16, 16, 4);                     /* fmt chunk size */
        put_le(h + 20, 1, 2);                      /* PCM */
        put_le(h + 22, 1, 2);                      /* mono */
        put_le(h + 24, QZ_DEMO_AUDIO_RATE, 4);     /* sample rate */
        put_le(h + 28, QZ_DEMO_AUDIO_RATE * 2, 4); /* byte rate */
        put_le(h + 32, 2, 2);                      /* block align */
        put_le(h + 34, 16, 2);                     /* bits per sample */
        memcpy(h + 36, "data", 4);
        put_le(h + 40, data_bytes, 4);

        pcm = malloc(n * sizeof(*pcm) + 1);
        if (!pcm) {
                snprintf(errstr, errstr_size, "out of memory writing %s", path);
                goto fail;
        }
        for (size_t i = 0; i < n; i++) {
                double v = buf[i] * 32767.0;
                v = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
                int16_t s = (int16_t)lrint(v);
                uint8_t *p = (uint8_t *)&pcm[i];
                p[0] = (uint8_t)((uint16_t)s & 0xff); /* little-endian on any host */
                p[1] = (uint8_t)((uint16_t)s >> 8);
        }
        f = fopen(tmp, "wb");
        if (!f || fwrite(h, 1, sizeof(h), f) != sizeof(h) || fwrite(pcm, sizeof(*pcm), n, f) != n) {
                snprintf(errstr, errstr_size, "cannot write %.300s: %s", tmp, strerror(errno));
                goto fail;
        }
        if (fclose(f) != 0) {
                f = NULL;
                snprintf(errstr, errstr_size, "cannot write %.300s: %s", tmp, strerror(errno));
                goto fail;
        }
        f = NULL;
        if (rename(tmp, path) != 0) {
                snprintf(errstr, errstr_size, "cannot rename %.300s: %s", tmp, strerror(errno));
                goto fail;
        }
        free(pcm);
        return 0;
fail:
        if (f)
                fclose(f);
        remove(tmp);
        free(pcm);
        return -1;
}

int qz_demo_audio_write(const struct qz_demo_track *t, uint64_t seed, size_t index,
                        const char *path, char *errstr, size_t errstr_size)
{
        struct qz_demo_rng r = qz_demo_rng_for(seed, S_AUDIO, index);
        double seconds = 8.0 + 7.0 * qz_demo_rng_unit(&r);
        size_t n = (size_t)(seconds * QZ_DEMO_AUDIO_RATE);
        double beat = 60.0 / t->tempo_bpm;
        int key = 45 + (int)qz_demo_rng_below(&r, 12); /* A2..G#3 */
        int n_harm = 1 + (int)lrint(t->brightness * 9.0);
        double tilt = 2.2 - 1.4 * t->brightness;
        double e = t->energy;
        float *buf = calloc(n, sizeof(*buf));
        if (!buf) {
                snprintf(errstr, errstr_size, "out of memory synthesizing %s", path);
                return -1;
        }
        const int *roots = t->minor ? minor_roots : major_roots;
        const int *minor3 = t->minor ? minor_minor3 : major_minor3;
        size_t bar = (size_t)(4.0 * beat * QZ_DEMO_AUDIO_RATE);
        for (size_t b = 0, from = 0; from < n; b++, from += bar) {
                size_t to = from + bar < n ? from + bar : n;
                int root = key + roots[b % 4];
                int third = root + (minor3[b % 4] ? 3 : 4);
                int chord[3] = {root + 12, third + 12, root + 19};
                for (int v = 0; v < 3; v++)
                        add_tone(buf, from, to, midi_hz(chord[v]), 0.12, n_harm, tilt);
                /* Bass: a note per beat, so energy also shows in the low end. */
                for (int q = 0; q < 4; q++) {
                        size_t s = from + (size_t)(q * beat * QZ_DEMO_AUDIO_RATE);
                        size_t len = (size_t)(beat * 0.8 * QZ_DEMO_AUDIO_RATE);
                        if (s >= to)
                                break;
                        add_tone(buf, s, s + len < to ? s + len : to, midi_hz(root - 12),
                                 0.10 + 0.15 * e, 3, 1.5);
                }
        }
        double kick_amp = 0.35 + 0.65 * e;
        for (size_t k = 0;; k++) {
                size_t at = (size_t)((double)k * beat * QZ_DEMO_AUDIO_RATE);
                if (at >= n)
                        break;
                add_kick(buf, n, at, kick_amp);
                if (e > 0.45)
                        add_hat(buf, n, at + (size_t)(beat * 0.5 * QZ_DEMO_AUDIO_RATE),
                                0.25 * e * (0.5 + t->brightness), &r);
        }
        /* Fade the ends and set the peak: quiet tracks peak near -11 dBFS,
         * loud ones near -0.5 dBFS. */
        float peak = 1e-9f;
        size_t fade = QZ_DEMO_AUDIO_RATE / 20;
        for (size_t i = 0; i < n; i++) {
                if (i < fade)
                        buf[i] *= (float)i / (float)fade;
                if (n - i < fade)
                        buf[i] *= (float)(n - i) / (float)fade;
                if (fabsf(buf[i]) > peak)
                        peak = fabsf(buf[i]);
        }
        float gain = (float)((0.28 + 0.66 * e) / peak);
        for (size_t i = 0; i < n; i++)
                buf[i] *= gain;
        int rc = write_wav(path, buf, n, errstr, errstr_size);
        free(buf);
        return rc;
}
