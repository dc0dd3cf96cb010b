/* decode.c - audio in: fetch (path or http(s) URL), decode with libsndfile, mono at ~22 kHz, and
 * EBU R128 loudness on the original channels. */
#include "analysis/analysis.h"

#include <curl/curl.h>
#include <ebur128.h>
#include <sndfile.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK_FRAMES 4096

/* curl_global_init is not thread-safe and must run once per process before any
 * handle: the worker threads race to the first fetch, so it runs under this once. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct sink {
        FILE *f;
        long long written, max;
};

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *opaque)
{
        struct sink *s = opaque;
        size_t len = size * nmemb;
        if (s->written + (long long)len > s->max)
                return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
        if (fwrite(ptr, 1, len, s->f) != len)
                return 0;
        s->written += (long long)len;
        return len;
}

/* Downloads url into a fresh temp file (path_out). 4xx answers and redirect
 * loops are permanent, network trouble and 5xx transient. */
static int fetch(const char *url, const struct qz_analysis_config *cfg, char *path_out,
                 size_t path_size, enum qz_analysis_err *klass, char *errstr, size_t errstr_size)
{
        const char *dir = cfg->tmp_dir ? cfg->tmp_dir : getenv("TMPDIR");
        long max = cfg->fetch_max_bytes > 0 ? cfg->fetch_max_bytes : 200L << 20;
        struct sink s = {.max = max};
        CURL *c = NULL;
        int fd = -1;

        *klass = QZ_ANALYSIS_TRANSIENT;
        snprintf(path_out, path_size, "%s/qz-audio-XXXXXX", dir && *dir ? dir : "/tmp");
        if ((fd = mkstemp(path_out)) < 0 || !(s.f = fdopen(fd, "wb"))) {
                snprintf(errstr, errstr_size, "cannot create a temp file in %s: %s",
                         dir && *dir ? dir : "/tmp", strerror(errno));
                if (fd >= 0)
                        close(fd);
                path_out[0] = '\0';
                return -1;
        }
        pthread_once(&curl_once, curl_init_once);
        if (!(c = curl_easy_init())) {
                snprintf(errstr, errstr_size, "curl init failed");
                goto fail;
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                         cfg->fetch_timeout_ms > 0 ? cfg->fetch_timeout_ms : 20000L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) {
                long code = 0;
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
                if (rc == CURLE_HTTP_RETURNED_ERROR && code >= 400 && code < 500 && code != 408 &&
                    code != 429)
                        *klass = QZ_ANALYSIS_PERMANENT;
                if (rc == CURLE_TOO_MANY_REDIRECTS || rc == CURLE_UNSUPPORTED_PROTOCOL ||
                    rc == CURLE_URL_MALFORMAT || rc == CURLE_FILESIZE_EXCEEDED ||
                    (rc == CURLE_WRITE_ERROR && s.written >= max))
                        *klass = QZ_ANALYSIS_PERMANENT;
                if (rc == CURLE_HTTP_RETURNED_ERROR)
                        snprintf(errstr, errstr_size, "fetch %.300s: HTTP %ld", url, code);
                else if (rc == CURLE_WRITE_ERROR && s.written >= max)
                        snprintf(errstr, errstr_size, "fetch %.300s: larger than %ld bytes", url,
                                 max);
                else
                        snprintf(errstr, errstr_size, "fetch %.300s: %s", url,
                                 curl_easy_strerror(rc));
                goto fail;
        }
        curl_easy_cleanup(c);
        if (fclose(s.f) != 0) {
                s.f = NULL;
                snprintf(errstr, errstr_size, "write %s: %s", path_out, strerror(errno));
                unlink(path_out);
                path_out[0] = '\0';
                return -1;
        }
        return 0;
fail:
        if (c)
                curl_easy_cleanup(c);
        if (s.f)
                fclose(s.f);
        unlink(path_out);
        path_out[0] = '\0';
        return -1;
}

int qz_analysis_loudness(const float *frames, size_t nframes, int channels, int rate, double *lufs,
                         double *lra, char *errstr, size_t errstr_size)
{
        ebur128_state *st = ebur128_init((unsigned)channels, (unsigned long)rate,
                                         EBUR128_MODE_I | EBUR128_MODE_LRA);
        if (!st) {
                snprintf(errstr, errstr_size, "ebur128 init failed (%d ch, %d Hz)", channels, rate);
                return -1;
        }
        ebur128_add_frames_float(st, frames, nframes);
        double l = -HUGE_VAL, r = 0.0;
        ebur128_loudness_global(st, &l);
        ebur128_loudness_range(st, &r);
        ebur128_destroy(&st);
        *lufs = isfinite(l) ? l : -70.0;
        *lra = isfinite(r) && r > 0 ? r : 0.0;
        return 0;
}

/* A path for libsndfile: plain paths and file:// URLs; refuses what is not
 * a regular file (a FIFO would block the worker) or is too large. */
static int local_path(const char *src, long max, const char **path, enum qz_analysis_err *klass,
                      char *errstr, size_t errstr_size)
{
        struct stat st;
        *path = strncmp(src, "file://", 7) == 0 ? src + 7 : src;
        *klass = QZ_ANALYSIS_PERMANENT;
        if (stat(*path, &st) != 0) {
                /* A file that vanished may come back (mount, sync): that is
                 * the one local case worth retrying. */
                if (errno != ENOENT)
                        *klass = QZ_ANALYSIS_TRANSIENT;
                snprintf(errstr, errstr_size, "audio file %.300s: %s", *path, strerror(errno));
                return -1;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(errstr, errstr_size, "audio file %.300s: not a regular file", *path);
                return -1;
        }
        if (st.st_size == 0) {
                snprintf(errstr, errstr_size, "audio file %.300s: empty (0 bytes)", *path);
                return -1;
        }
        if (st.st_size > max) {
                snprintf(errstr, errstr_size, "audio file %.300s: %lld bytes, limit %ld", *path,
                         (long long)st.st_size, max);
                return -1;
        }
        return 0;
}

int qz_analysis_decode(const char *src, const struct qz_analysis_config *cfg, float **mono,
                       size_t *n, int *rate, struct qz_analysis_features *f,
                       enum qz_analysis_err *klass, char *errstr, size_t errstr_size)
{
        char tmp[4096] = "";
        const char *path = NULL;
        SNDFILE *snd = NULL;
        SF_INFO info = {0};
        ebur128_state *st = NULL;
        float *chunk = NULL, *out = NULL;
        long max_bytes = cfg->fetch_max_bytes > 0 ? cfg->fetch_max_bytes : 200L << 20;
        int max_seconds = cfg->max_seconds > 0 ? cfg->max_seconds : 60;

        *mono = NULL;
        *klass = QZ_ANALYSIS_PERMANENT;
        if (!src || !*src) {
                snprintf(errstr, errstr_size, "no audio");
                return -1;
        }
        if (strncmp(src, "http://", 7) == 0 || strncmp(src, "https://", 8) == 0) {
                if (fetch(src, cfg, tmp, sizeof(tmp), klass, errstr, errstr_size) != 0)
                        return -1;
                path = tmp;
        } else if (local_path(src, max_bytes, &path, klass, errstr, errstr_size) != 0) {
                return -1;
        }
        *klass = QZ_ANALYSIS_PERMANENT;
        if (!(snd = sf_open(path, SFM_READ, &info))) {
                snprintf(errstr, errstr_size, "cannot decode %.300s: %s", src, sf_strerror(NULL));
                goto fail;
        }
        if (info.channels < 1 || info.channels > 16 || info.samplerate < 4000 ||
            info.samplerate > 384000) {
                snprintf(errstr, errstr_size, "cannot decode %.300s: %d channels at %d Hz", src,
                         info.channels, info.samplerate);
                goto fail;
        }
        /* Decimate 44.1/48/96 kHz by an integer factor to ~22 kHz: the
         * features need nothing above 11 kHz, and it halves the FFT work. */
        int dec = info.samplerate >= 32000 ? (int)lrint(info.samplerate / 22050.0) : 1;
        if (dec < 1)
                dec = 1;
        size_t max_frames = (size_t)max_seconds * (size_t)info.samplerate;
        size_t cap = max_frames / (size_t)dec + 1;
        chunk = malloc(sizeof(float) * CHUNK_FRAMES * (size_t)info.channels);
        out = malloc(sizeof(float) * cap);
        st = ebur128_init((unsigned)info.channels, (unsigned long)info.samplerate,
                          EBUR128_MODE_I | EBUR128_MODE_LRA);
        if (!chunk || !out || !st) {
                snprintf(errstr, errstr_size, "out of memory decoding %.300s", src);
                *klass = QZ_ANALYSIS_TRANSIENT;
                goto fail;
        }
        size_t frames = 0, m = 0;
        double acc = 0.0;
        int acc_n = 0;
        while (frames < max_frames) {
                sf_count_t want =
                    (sf_count_t)(max_frames - frames < CHUNK_FRAMES ? max_frames - frames
                                                                    : CHUNK_FRAMES);
                sf_count_t got = sf_readf_float(snd, chunk, want);
                if (got <= 0)
                        break;
                ebur128_add_frames_float(st, chunk, (size_t)got);
                for (sf_count_t i = 0; i < got; i++) {
                        double s = 0.0;
                        for (int c = 0; c < info.channels; c++)
                                s += chunk[i * info.channels + c];
                        s /= info.channels;
                        if (!isfinite(s))
                                s = 0.0;
                        acc += s;
                        if (++acc_n == dec) {
                                if (m < cap)
                                        out[m++] = (float)(acc / dec);
                                acc = 0.0;
                                acc_n = 0;
                        }
                }
                frames += (size_t)got;
        }
        if (sf_error(snd) != SF_ERR_NO_ERROR && frames == 0) {
                snprintf(errstr, errstr_size, "cannot decode %.300s: %s", src, sf_strerror(snd));
                goto fail;
        }
        if (m < 2048) {
                snprintf(errstr, errstr_size, "cannot decode %.300s: too short (%zu samples)", src,
                         frames);
                goto fail;
        }
        double l = -HUGE_VAL, r = 0.0;
        ebur128_loudness_global(st, &l);
        ebur128_loudness_range(st, &r);
        f->loudness_lufs = isfinite(l) ? l : -70.0;
        f->loudness_range = isfinite(r) && r > 0 ? r : 0.0;
        f->file_seconds = info.frames > 0 ? (double)info.frames / info.samplerate : 0.0;
        *rate = (int)lrint((double)info.samplerate / dec);
        f->seconds = (double)m / *rate;
        *mono = out;
        *n = m;
        out = NULL;
        ebur128_destroy(&st);
        sf_close(snd);
        free(chunk);
        if (tmp[0])
                unlink(tmp);
        return 0;
fail:
        if (st)
                ebur128_destroy(&st);
        if (snd)
                sf_close(snd);
        free(chunk);
        free(out);
        if (tmp[0])
                unlink(tmp);
        return -1;
}
