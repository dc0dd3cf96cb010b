/* avro.h - Avro codec: schemas from the .avsc files in schemas/, single-object encoding.
 *
 * Wire format of every topic value (Avro spec, "Single object encoding"):
 * C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint of the schema's
 * Parsing Canonical Form, then the binary body. avro-c has no canonical form
 * or fingerprint function, so both are computed here and checked against the
 * spec's published vectors (tests/unit/test_avro.c).
 *
 * Values cross this API as jansson objects, mapped like Avro's JSON encoding
 * except: a union is written as the bare value or null (no {"type": v}
 * wrapper; the first branch whose type fits is chosen), and `bytes`/`fixed`
 * are base64 strings. Unknown object members and missing non-default fields
 * are errors naming the field.
 *
 * A registry is immutable after load and safe to share across threads;
 * encode/decode allocate per call. Ownership: *out buffers and json_t results
 * belong to the caller (free() / json_decref()). */
#ifndef QZ_AVRO_H
#define QZ_AVRO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct qz_avro_registry;
struct qz_avro_schema;

/* Loads every *.avsc in dir. */
int qz_avro_registry_load(const char *dir, struct qz_avro_registry **out, char *errstr,
                          size_t errstr_size);
void qz_avro_registry_free(struct qz_avro_registry *r);
/* name: "PlayEvent" or "qoqnuz.PlayEvent"; NULL when unknown. */
const struct qz_avro_schema *qz_avro_schema_get(const struct qz_avro_registry *r, const char *name);
const char *qz_avro_schema_name(const struct qz_avro_schema *s); /* full name */
const char *qz_avro_schema_canonical(const struct qz_avro_schema *s);
uint64_t qz_avro_schema_fingerprint(const struct qz_avro_schema *s);

/* Pure helpers (spec-checked). canonical: malloc'd, caller frees. */
char *qz_avro_canonical_form(const char *schema_json, char *errstr, size_t errstr_size);
uint64_t qz_avro_crc64(const void *buf, size_t len);

/* value (json object) -> single-object bytes. */
int qz_avro_encode_json(const struct qz_avro_schema *s, json_t *value, unsigned char **out,
                        size_t *out_len, char *errstr, size_t errstr_size);
/* single-object bytes -> json object; *schema_out (may be NULL) tells which
 * schema the fingerprint named. Bad magic, unknown fingerprint, truncated or
 * trailing bytes are errors. */
int qz_avro_decode_json(const struct qz_avro_registry *r, const void *buf, size_t len,
                        const struct qz_avro_schema **schema_out, json_t **out, char *errstr,
                        size_t errstr_size);

#endif
