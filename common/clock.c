/* clock.c - the monotonic clock, for deadlines, backoff and latency metrics. */
#include "clock.h"

#include <time.h>

int64_t qz_clock_mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t qz_clock_mono_ms(void)
{
        return qz_clock_mono_ns() / 1000000;
}

double qz_clock_mono_s(void)
{
        return (double)qz_clock_mono_ns() / 1e9;
}
