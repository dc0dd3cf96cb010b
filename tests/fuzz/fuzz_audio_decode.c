/* fuzz_audio_decode.c - libFuzzer target: lib/analysis decoding and features of
 * arbitrary bytes as an uploaded audio file (libsndfile, EBU R128, aubio, FFTW).
 * The input lives in a memfd, so nothing touches the disk. */
#include "analysis/analysis.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        int fd = memfd_create("fuzz-audio", 0);
        if (fd < 0 || write(fd, d, n) != (ssize_t)n) {
                if (fd >= 0)
                        close(fd);
                return 0;
        }
        char path[64], err[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        struct qz_analysis_config cfg = {.max_seconds = 5};
        struct qz_analysis_features f = {0};
        enum qz_analysis_err klass;
        float *mono = NULL;
        size_t len = 0;
        int rate = 0;
        if (qz_analysis_decode(path, &cfg, &mono, &len, &rate, &f, &klass, err, sizeof(err)) == 0)
                qz_analysis_signal(mono, len, rate, &f, err, sizeof(err));
        free(mono);
        close(fd);
        return 0;
}
