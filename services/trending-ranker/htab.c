/* htab.c - open-addressing hash table of 128-bit keys (linear probing, backward-shift delete). */
#include "htab.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_BYTES (2u << 20) /* transparent huge page size on x86-64 */

static uint64_t mix(uint64_t k0, uint64_t k1)
{
        /* splitmix64 finaliser over both halves: keys like (track index, user index) are not
         * random, UUIDs are; both must spread. */
        uint64_t x = k0 ^ (k1 * 0x9E3779B97F4A7C15ULL);
        x ^= x >> 30;
        x *= 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 27;
        x *= 0x94D049BB133111EBULL;
        x ^= x >> 31;
        return x;
}

/* The home slot: the hash scaled to [0, cap) (multiply-shift), so cap need not be a power of
 * two and a table sized for n entries is n / 0.7 slots, not up to twice that. */
static size_t home_of(uint64_t k0, uint64_t k1, size_t cap)
{
        return (size_t)(((unsigned __int128)mix(k0, k1) * cap) >> 64);
}

static size_t next_of(size_t i, size_t cap)
{
        return i + 1 == cap ? 0 : i + 1;
}

struct htab_slot *htab_find(const struct htab *h, uint64_t k0, uint64_t k1)
{
        if (!h->cap)
                return NULL;
        for (size_t i = home_of(k0, k1, h->cap);; i = next_of(i, h->cap)) {
                struct htab_slot *s = &h->slots[i];
                if (!s->full)
                        return NULL;
                if (s->k0 == k0 && s->k1 == k1)
                        return s;
        }
}

void htab_prefetch(const struct htab *h, uint64_t k0, uint64_t k1)
{
        if (h->cap)
                __builtin_prefetch(&h->slots[home_of(k0, k1, h->cap)]);
}

static struct htab_slot *place(struct htab_slot *slots, size_t cap, uint64_t k0, uint64_t k1,
                               int32_t val)
{
        size_t i = home_of(k0, k1, cap);
        while (slots[i].full)
                i = next_of(i, cap);
        slots[i] = (struct htab_slot){k0, k1, val, 1};
        return &slots[i];
}

/* Zeroed slots. A big table is probed at random, so with 4 KiB pages nearly every probe is a
 * TLB miss and every page costs a fault (two when the first touch is the probe's read of the
 * zero page): big tables are aligned to and backed by huge pages where the kernel allows. */
static struct htab_slot *slots_alloc(size_t cap)
{
        size_t bytes = cap * sizeof(struct htab_slot);
        if (bytes < 2 * HUGE_BYTES)
                return calloc(cap, sizeof(struct htab_slot));
        void *m;
        if (posix_memalign(&m, HUGE_BYTES, bytes) != 0)
                return NULL;
        madvise(m, bytes, MADV_HUGEPAGE); /* a hint: without THP the table still works */
        memset(m, 0, bytes);
        return m;
}

static int resize(struct htab *h, size_t cap)
{
        struct htab_slot *ns = slots_alloc(cap);
        if (!ns)
                return -1;
        for (size_t i = 0; i < h->cap; i++)
                if (h->slots[i].full)
                        place(ns, cap, h->slots[i].k0, h->slots[i].k1, h->slots[i].val);
        free(h->slots);
        h->slots = ns;
        h->cap = cap;
        return 0;
}

struct htab_slot *htab_insert(struct htab *h, uint64_t k0, uint64_t k1, int32_t val)
{
        /* load factor at most 0.7 keeps probes short */
        if ((h->n + 1) * 10 > h->cap * 7 && resize(h, h->cap ? h->cap * 2 : 64) != 0)
                return NULL;
        h->n++;
        return place(h->slots, h->cap, k0, k1, val);
}

int htab_reserve(struct htab *h, size_t n)
{
        size_t cap = n * 10 / 7 + 1;
        return cap <= h->cap ? 0 : resize(h, cap < 64 ? 64 : cap);
}

void htab_delete(struct htab *h, struct htab_slot *s)
{
        size_t i = (size_t)(s - h->slots), j = i;
        h->n--;
        for (;;) {
                h->slots[i].full = 0;
                for (;;) {
                        j = next_of(j, h->cap);
                        if (!h->slots[j].full)
                                return;
                        size_t home = home_of(h->slots[j].k0, h->slots[j].k1, h->cap);
                        /* j may move into the hole i unless its home lies cyclically in (i, j] */
                        if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                                break;
                }
                h->slots[i] = h->slots[j];
                i = j;
        }
}

int htab_filter(struct htab *h, bool (*keep)(int32_t val, int64_t arg), int64_t arg)
{
        struct htab old = *h;
        size_t n = 0;
        for (size_t i = 0; i < old.cap; i++)
                n += old.slots[i].full && keep(old.slots[i].val, arg);
        if (n == old.n)
                return 0;
        /* a quarter of headroom: the window refills what expired, hour after hour */
        size_t cap = n * 10 / 7 * 5 / 4 + 1;
        if (cap < 64)
                cap = 64;
        struct htab_slot *ns = slots_alloc(cap);
        if (!ns)
                return -1;
        for (size_t i = 0; i < old.cap; i++)
                if (old.slots[i].full && keep(old.slots[i].val, arg))
                        place(ns, cap, old.slots[i].k0, old.slots[i].k1, old.slots[i].val);
        free(old.slots);
        h->slots = ns;
        h->cap = cap;
        h->n = n;
        return 0;
}

void htab_clear(struct htab *h)
{
        free(h->slots);
        memset(h, 0, sizeof(*h));
}

size_t htab_bytes(const struct htab *h)
{
        return h->cap * sizeof(struct htab_slot);
}
