/* plays.h - parse and validate a POST /v1/plays body into PlayEvent values.
 *
 * A body is one JSON object, a JSON array of objects, or NDJSON (one object
 * per line). Each item is checked on its own, so the valid items of a mixed
 * batch are kept and each invalid one gets a precise error. Whole-body
 * problems (not JSON at all, empty, more items than allowed) fail the parse.
 *
 * Two paths give the same answer: a strict scanner for the common case (well
 * formed, every play valid, no escapes), which validates each play straight
 * into a struct play without allocating, and the jansson path (the reference)
 * for everything else, including every error text. The scanner gives up on
 * anything it does not handle exactly, and the body is then parsed again by
 * the reference; tests/fuzz/fuzz_plays.c checks the two agree.
 *
 * Ownership: plays_parse fills *out; plays_batch_free releases the items. */
#ifndef PLAYS_H
#define PLAYS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLAYS_UUID_LEN  36
#define PLAYS_TOKEN_MAX 32

struct plays_rules {
        int64_t now_ms;
        int64_t max_future_ms; /* played_at may be at most this far ahead */
        int64_t horizon_ms;    /* and at most this far in the past */
        size_t max_items;
};

/* A validated PlayEvent; UUIDs lowercase, every string NUL-terminated. */
struct play {
        char event_id[PLAYS_UUID_LEN + 1];
        char user_id[PLAYS_UUID_LEN + 1];
        char track_id[PLAYS_UUID_LEN + 1];
        char source_playlist_id[PLAYS_UUID_LEN + 1]; /* "" = null */
        char source[PLAYS_TOKEN_MAX + 1];
        char device_type[PLAYS_TOKEN_MAX + 1];
        int64_t played_at; /* ms since the epoch */
        int64_t duration_played_ms;
        bool completed;
        bool event_id_generated; /* the request carried none */
};

struct plays_item {
        bool ok; /* play is valid; else reason and error say why not */
        struct play play;
        const char *reason; /* when rejected: a metric label such as "user_id" (static) */
        char error[256];    /* why it was rejected */
};

struct plays_batch {
        struct plays_item *items;
        size_t n;
};

/* 0, -1 for a malformed body, -2 for more than max_items plays. */
int plays_parse(const char *body, size_t len, bool ndjson, const struct plays_rules *rules,
                struct plays_batch *out, char *errstr, size_t errstr_size);
/* The same through jansson alone (the reference the scanner must agree with). */
int plays_parse_reference(const char *body, size_t len, bool ndjson,
                          const struct plays_rules *rules, struct plays_batch *out, char *errstr,
                          size_t errstr_size);
void plays_batch_free(struct plays_batch *b);

/* Validates one decoded item into *out: 0, or -1 with *reason (a static metric
 * label: "not_object", "unknown_field", a field name, "played_at_future",
 * "played_at_too_old") and errstr. */
int plays_check(const json_t *item, const struct plays_rules *rules, struct play *out,
                const char **reason, char *errstr, size_t errstr_size);

/* The PlayEvent value (Avro JSON mapping) of a play; NULL when out of memory. */
json_t *plays_to_json(const struct play *p);

/* Validates one decoded item into a PlayEvent value; NULL + errstr when invalid. */
json_t *plays_validate(const json_t *item, const struct plays_rules *rules, char *errstr,
                       size_t errstr_size);
/* The same, also naming the rejection reason (see plays_check). */
json_t *plays_validate_reason(const json_t *item, const struct plays_rules *rules,
                              const char **reason, char *errstr, size_t errstr_size);

#endif
