/* demo_rng.c - seeded splitmix64 streams, v4-shaped UUIDs and small samplers for the demo. */
#include "demo.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

struct qz_demo_rng qz_demo_rng_for(uint64_t seed, uint64_t stream, uint64_t index)
{
        /* mix64 is a bijection, so distinct (stream, index) under one seed
         * start from well separated states. */
        struct qz_demo_rng r = {mix64(mix64(seed ^ 0x51a7c0de) ^ (stream * 0x9e3779b97f4a7c15ULL)) +
                                index};
        r.state = mix64(r.state);
        return r;
}

uint64_t qz_demo_rng_next(struct qz_demo_rng *r)
{
        r->state += 0x9e3779b97f4a7c15ULL;
        return mix64(r->state);
}

double qz_demo_rng_unit(struct qz_demo_rng *r)
{
        return (double)(qz_demo_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint32_t qz_demo_rng_below(struct qz_demo_rng *r, uint32_t n)
{
        return (uint32_t)(((qz_demo_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

double qz_demo_rng_normal(struct qz_demo_rng *r)
{
        double u1 = qz_demo_rng_unit(r), u2 = qz_demo_rng_unit(r);
        if (u1 < 1e-300)
                u1 = 1e-300;
        return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

size_t qz_demo_pick_cum(const double *cum, size_t n, double u)
{
        double x = u * cum[n - 1];
        size_t lo = 0, hi = n - 1;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cum[mid] > x)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return lo;
}

void qz_demo_uuid(struct qz_demo_rng *r, char out[37])
{
        static const char hex[] = "0123456789abcdef";
        uint8_t b[16];
        uint64_t hi = qz_demo_rng_next(r), lo = qz_demo_rng_next(r);
        for (int i = 0; i < 8; i++) {
                b[i] = (uint8_t)(hi >> (56 - 8 * i));
                b[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
        }
        b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
        b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
        char *p = out;
        for (int i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        *p++ = '-';
                *p++ = hex[b[i] >> 4];
                *p++ = hex[b[i] & 15];
        }
        *p = '\0';
}
