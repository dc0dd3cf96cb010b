/* json.h - jansson helpers: typed member access, RFC 3339 times, UUIDs.
 *
 * Getters write errors that name the field, ready for a 400 message:
 * "field 'track_id' must be a string". Returned strings point into the json
 * object (owned by it, valid while it lives); nothing here takes a reference.
 * All functions are pure and thread-safe. */
#ifndef QZ_JSON_H
#define QZ_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QZ_UUID_STR_LEN 36 /* without the NUL */

/* Parses a JSON document of any type. Returns a new reference or NULL with
 * errstr like "invalid JSON at line 1 column 5: ...". */
json_t *qz_json_parse(const char *buf, size_t len, char *errstr, size_t errstr_size);
/* Same, and the document must be an object. */
json_t *qz_json_parse_object(const char *buf, size_t len, char *errstr, size_t errstr_size);

/* Member getters. required=false: a missing or null member returns 1 and
 * leaves *out untouched; required=true: missing/null is an error.
 * Return 0 when found and of the right type, 1 when absent and optional, -1 on error. */
int qz_json_get_string(const json_t *obj, const char *key, bool required, const char **out,
                       char *errstr, size_t errstr_size);
/* Integer (a JSON integer, not a real). */
int qz_json_get_int(const json_t *obj, const char *key, bool required, int64_t *out, char *errstr,
                    size_t errstr_size);
/* Any JSON number. */
int qz_json_get_number(const json_t *obj, const char *key, bool required, double *out, char *errstr,
                       size_t errstr_size);
int qz_json_get_bool(const json_t *obj, const char *key, bool required, bool *out, char *errstr,
                     size_t errstr_size);
/* A string that is a canonical UUID (see qz_uuid_valid). */
int qz_json_get_uuid(const json_t *obj, const char *key, bool required, const char **out,
                     char *errstr, size_t errstr_size);
/* An RFC 3339 string, converted to epoch milliseconds. */
int qz_json_get_time(const json_t *obj, const char *key, bool required, int64_t *out_ms,
                     char *errstr, size_t errstr_size);

/* Every member of obj must be one of known[0..nknown): a typo in a request must not be
 * silently dropped. -1 with errstr "unknown field 'x' (known: a, b)" for the first other
 * member; 0 otherwise (also when obj is not an object: the getters report that). */
int qz_json_check_keys(const json_t *obj, const char *const *known, size_t nknown, char *errstr,
                       size_t errstr_size);

/* Epoch millis -> "2024-05-01T12:34:56.789Z" (UTC, always milliseconds).
 * out must hold at least 32 bytes. Returns 0 or -1 (year outside 0..9999). */
int qz_time_format(int64_t ms, char *out, size_t out_size);
/* RFC 3339 date-time ("T" or "t" or " " separator, optional fraction (kept
 * to milliseconds, extra digits truncated), "Z" or ±hh:mm) -> epoch millis. */
int qz_time_parse(const char *s, int64_t *out_ms, char *errstr, size_t errstr_size);
/* Wall clock, epoch milliseconds. */
int64_t qz_time_now_ms(void);

/* 8-4-4-4-12 hex digits, either case. Any version/variant is accepted. */
bool qz_uuid_valid(const char *s);
/* Random (v4) UUID in lowercase; out must hold QZ_UUID_STR_LEN + 1 bytes. */
void qz_uuid_generate(char *out);

#endif
