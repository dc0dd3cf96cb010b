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

static bool put_string(struct out *o, const json_t *event, const char *key)
{
        const json_t *v = json_object_get(event, key);
        if (!json_is_string(v))
                return false;
        size_t n = json_string_length(v);
        put_long(o, (int64_t)n);
        put_bytes(o, json_string_value(v), n);
        return true;
}

static bool put_int(struct out *o, const json_t *event, const char *key)
{
        const json_t *v = json_object_get(event, key);
        if (!json_is_integer(v))
                return false;
        put_long(o, (int64_t)json_integer_value(v));
        return true;
}

size_t playenc_encode(uint64_t fingerprint, const json_t *event, unsigned char *out,
                      size_t out_size)
{
        struct out o = {out, out + out_size, false};
        unsigned char head[10] = {0xC3, 0x01};
        for (int i = 0; i < 8; i++)
                head[2 + i] = (unsigned char)(fingerprint >> (8 * i));
        put_bytes(&o, head, sizeof(head));

        const json_t *completed = json_object_get(event, "completed");
        const json_t *playlist = json_object_get(event, "source_playlist_id");
        /* Field order is the schema's (schemas/PlayEvent.avsc). */
        if (!put_string(&o, event, "event_id") || !put_string(&o, event, "user_id") ||
            !put_string(&o, event, "track_id") || !put_int(&o, event, "played_at") ||
            !put_int(&o, event, "duration_played_ms") || !json_is_boolean(completed))
                return 0;
        unsigned char b = json_is_true(completed) ? 1 : 0;
        put_bytes(&o, &b, 1);
        if (!put_string(&o, event, "source") || !put_string(&o, event, "device_type"))
                return 0;
        if (!playlist || json_is_null(playlist)) {
                put_long(&o, 0); /* union branch 0: null */
        } else {
                put_long(&o, 1); /* branch 1: string */
                if (!put_string(&o, event, "source_playlist_id"))
                        return 0;
        }
        return o.overflow ? 0 : (size_t)(o.p - out);
}
