/* playenc.h - the PlayEvent Avro encoder of the hot path (single-object encoding).
 *
 * common/avro.c encodes any schema through avro-c's generic values; for the one
 * record the ingestor writes hundreds of thousands of times a second that is
 * most of the CPU, so this writes the same bytes directly from a validated
 * struct play: C3 01, the schema's fingerprint (taken from the registry, so a
 * schema change cannot drift), then the fields in schema order.
 * tests/unit/test_plays.c checks it byte for byte against qz_avro_encode_json.
 *
 * Pure and thread-safe; the caller owns the output buffer. */
#ifndef PLAYENC_H
#define PLAYENC_H

#include "plays.h"

#include <stddef.h>
#include <stdint.h>

/* Upper bound of one encoded play whose strings total str_bytes. */
#define PLAYENC_MAX(str_bytes) (10 + 6 * 10 + 1 + (str_bytes))

/* Encodes a play into out[0..out_size). Returns the length, or 0 when it does
 * not fit. */
size_t playenc_encode(uint64_t fingerprint, const struct play *p, unsigned char *out,
                      size_t out_size);

#endif
