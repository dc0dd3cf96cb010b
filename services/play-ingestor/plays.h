/* plays.h - parse and validate a POST /v1/plays body into PlayEvent values.
 *
 * A body is one JSON object, a JSON array of objects, or NDJSON (one object
 * per line). Each item is checked on its own, so the valid items of a mixed
 * batch are kept and each invalid one gets a precise error. Whole-body
 * problems (not JSON at all, empty, more items than allowed) fail the parse.
 *
 * Ownership: plays_parse fills *out; plays_batch_free releases the items and
 * their json values. */
#ifndef PLAYS_H
#define PLAYS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct plays_rules {
        int64_t now_ms;
        int64_t max_future_ms; /* played_at may be at most this far ahead */
        int64_t horizon_ms;    /* and at most this far in the past */
        size_t max_items;
};

struct plays_item {
        json_t *event;      /* PlayEvent value (Avro JSON mapping), NULL when rejected */
        const char *reason; /* when rejected: a metric label such as "user_id" (static) */
        char error[256];    /* why it was rejected, when event is NULL */
};

struct plays_batch {
        struct plays_item *items;
        size_t n;
};

/* 0, -1 for a malformed body, -2 for more than max_items plays. */
int plays_parse(const char *body, size_t len, bool ndjson, const struct plays_rules *rules,
                struct plays_batch *out, char *errstr, size_t errstr_size);
void plays_batch_free(struct plays_batch *b);

/* Validates one decoded item into a PlayEvent value; NULL + errstr when invalid. */
json_t *plays_validate(const json_t *item, const struct plays_rules *rules, char *errstr,
                       size_t errstr_size);
/* The same, also naming the rejection reason (a static metric label: "not_object",
 * "unknown_field", a field name, "played_at_future", "played_at_too_old"). */
json_t *plays_validate_reason(const json_t *item, const struct plays_rules *rules,
                              const char **reason, char *errstr, size_t errstr_size);

#endif
