/* htab.c - open-addressing hash table of 128-bit keys (linear probing, backward-shift delete). */
#include "htab.h"

#include <stdlib.h>
#include <string.h>

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

struct htab_slot *htab_find(const struct htab *h, uint64_t k0, uint64_t k1)
{
        if (!h->cap)
                return NULL;
        size_t mask = h->cap - 1;
        for (size_t i = mix(k0, k1) & mask;; i = (i + 1) & mask) {
                struct htab_slot *s = &h->slots[i];
                if (!s->full)
                        return NULL;
                if (s->k0 == k0 && s->k1 == k1)
                        return s;
        }
}

static struct htab_slot *place(struct htab_slot *slots, size_t cap, uint64_t k0, uint64_t k1,
                               int32_t val)
{
        size_t mask = cap - 1;
        size_t i = mix(k0, k1) & mask;
        while (slots[i].full)
                i = (i + 1) & mask;
        slots[i] = (struct htab_slot){k0, k1, val, 1};
        return &slots[i];
}

static int resize(struct htab *h, size_t cap)
{
        struct htab_slot *ns = calloc(cap, sizeof(*ns));
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

void htab_delete(struct htab *h, struct htab_slot *s)
{
        size_t mask = h->cap - 1;
        size_t i = (size_t)(s - h->slots), j = i;
        h->n--;
        for (;;) {
                h->slots[i].full = 0;
                for (;;) {
                        j = (j + 1) & mask;
                        if (!h->slots[j].full)
                                return;
                        size_t home = mix(h->slots[j].k0, h->slots[j].k1) & mask;
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
        size_t cap = 64;
        while (n * 10 > cap * 7)
                cap *= 2;
        struct htab_slot *ns = calloc(cap, sizeof(*ns));
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
