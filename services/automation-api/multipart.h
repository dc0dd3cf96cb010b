/* multipart.h - a bounded multipart/form-data parser over a buffered request body.
 *
 * RFC 7578 as browsers and curl send it: a boundary from the Content-Type,
 * parts with Content-Disposition (form-data; name; filename) and an optional
 * Content-Type. Only what an upload needs; everything is bounded (parts,
 * header bytes, names) and every read stays inside [body, body+len), so any
 * byte string is safe to feed it. Parts point into the body (borrowed). */
#ifndef API_MULTIPART_H
#define API_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#define MP_MAX_PARTS 8

struct mp_part {
        char name[64];      /* the form field name */
        char filename[256]; /* "" when the part is not a file */
        char ctype[128];    /* the part's Content-Type, lowercased, no parameters; "" if none */
        const unsigned char *data;
        size_t len;
};

/* True when the request Content-Type is multipart/form-data; copies its boundary
 * (1-70 bytes, quotes removed). False for another type or a missing/bad boundary. */
bool mp_is_form(const char *content_type, char *boundary, size_t boundary_size);

/* Splits body into at most MP_MAX_PARTS parts. 0, or -1 with errstr (malformed, too
 * many parts, a part header over 4 KiB, a name that does not fit). */
int mp_parse(const void *body, size_t len, const char *boundary, struct mp_part *parts,
             size_t *nparts, char *errstr, size_t errstr_size);

/* The audio format of the first bytes: "mp3", "wav", "flac", "ogg" or NULL. */
const char *mp_sniff_audio(const unsigned char *data, size_t len);

#endif
