/* clock.h - the monotonic clock, for deadlines, backoff and latency metrics.
 * Never goes backwards with wall-clock changes; thread-safe. */
#ifndef QZ_CLOCK_H
#define QZ_CLOCK_H

#include <stdint.h>

int64_t qz_clock_mono_ns(void);
int64_t qz_clock_mono_ms(void);
/* Seconds since an arbitrary start, for durations printed to people. */
double qz_clock_mono_s(void);

#endif
