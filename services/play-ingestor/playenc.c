/* playenc.c - the PlayEvent Avro encoder of the hot path (single-object encoding). */
#include "playenc.h"

#include <stdbool.h>
#include <string.h>

struct out {
        unsigned char *p, *end;
        bool overflow;
};

/* Avro long: zig-zag, then base-128 varint, low group first. */
static void put_long(struct out *o, int64_t v)
{
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        do {
                if (o->p == o->end) {
                        o->overflow = true;
                        return;
                }
                unsigned char b = z & 0x7f;
                z >>= 7;
                *o->p++ = z ? (unsigned char)(b | 0x80) : b;
        } while (z);
}

static void put_bytes(struct out *o, const void *s, size_t n)
{
        if ((size_t)(o->end - o->p) < n) {
                o->overflow = true;
                return;
        }
        memcpy(o->p, s, n);
        o->p += n;
}

static void put_string(struct out *o, const char *s)
{
        size_t n = strlen(s);
        put_long(o, (int64_t)n);
        put_bytes(o, s, n);
}

size_t playenc_encode(uint64_t fingerprint, const struct play *p, unsigned char *out,
                      size_t out_size)
{
        struct out o = {out, out + out_size, false};
        unsigned char head[10] = {0xC3, 0x01};
        for (int i = 0; i < 8; i++)
                head[2 + i] = (unsigned char)(fingerprint >> (8 * i));
        put_bytes(&o, head, sizeof(head));
        /* Field order is the schema's (schemas/PlayEvent.avsc). */
        put_string(&o, p->event_id);
        put_string(&o, p->user_id);
        put_string(&o, p->track_id);
        put_long(&o, p->played_at);
        put_long(&o, p->duration_played_ms);
        unsigned char b = p->completed ? 1 : 0;
        put_bytes(&o, &b, 1);
        put_string(&o, p->source);
        put_string(&o, p->device_type);
        if (!p->source_playlist_id[0]) {
                put_long(&o, 0); /* union branch 0: null */
        } else {
                put_long(&o, 1); /* branch 1: string */
                put_string(&o, p->source_playlist_id);
        }
        return o.overflow ? 0 : (size_t)(o.p - out);
}
