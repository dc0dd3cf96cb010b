/* htab.h - open-addressing hash table of 128-bit keys to 32-bit values (linear probing,
 * backward-shift deletion: no tombstones, so a table that churns does not degrade).
 *
 * The window's building block for interned ids, (track, user) pairs and event-id dedup.
 * Not thread-safe. A slot pointer is valid until the next insert or delete. */
#ifndef TRENDING_HTAB_H
#define TRENDING_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct htab_slot {
        uint64_t k0, k1;
        int32_t val;
        uint32_t full;
};

struct htab {
        struct htab_slot *slots;
        size_t cap; /* slots (any size), or 0 */
        size_t n;
};

/* NULL when absent. */
struct htab_slot *htab_find(const struct htab *h, uint64_t k0, uint64_t k1);
/* Starts loading the key's home slot into the cache (a later find or insert of it then does
 * not stall on memory). */
void htab_prefetch(const struct htab *h, uint64_t k0, uint64_t k1);
/* Inserts (the key must be absent); returns the slot, NULL when out of memory. */
struct htab_slot *htab_insert(struct htab *h, uint64_t k0, uint64_t k1, int32_t val);
/* Grows the table to hold n entries without a resize (a hint: inserts beyond n still work);
 * -1 when out of memory (the table is unchanged). */
int htab_reserve(struct htab *h, size_t n);
/* Deletes the slot (from htab_find). */
void htab_delete(struct htab *h, struct htab_slot *s);
/* Keeps only the entries for which keep(val, arg) is true (rebuilds in place). */
int htab_filter(struct htab *h, bool (*keep)(int32_t val, int64_t arg), int64_t arg);
void htab_clear(struct htab *h);
size_t htab_bytes(const struct htab *h);

#endif
