/* dlq.c - the dead-letter helper: a rejected message as a RejectedEvent on a DLQ topic. */
#include "dlq.h"
#include "avro.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Standard base64 with padding: the Avro codec's JSON form of `bytes`. */
static json_t *base64_string(const void *buf, size_t len)
{
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *in = buf;
        size_t olen = 4 * ((len + 2) / 3);
        char *out = malloc(olen + 1);
        json_t *s;
        size_t o = 0;
        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16;
                if (i + 1 < len)
                        v |= (uint32_t)in[i + 1] << 8;
                if (i + 2 < len)
                        v |= in[i + 2];
                out[o++] = tbl[(v >> 18) & 63];
                out[o++] = tbl[(v >> 12) & 63];
                out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
                out[o++] = i + 2 < len ? tbl[v & 63] : '=';
        }
        out[o] = '\0';
        s = json_stringn(out, o);
        free(out);
        return s;
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* json_object_set_new that reports a NULL value (allocation failure). */
static int put(json_t *obj, const char *k, json_t *v)
{
        return v ? json_object_set_new(obj, k, v) : -1;
}

int qz_dlq_encode(const struct qz_avro_registry *reg, const struct qz_dlq_event *ev,
                  unsigned char **out, size_t *out_len, char *errstr, size_t errstr_size)
{
        const struct qz_avro_schema *schema = qz_avro_schema_get(reg, "RejectedEvent");
        json_t *v = NULL, *errors = NULL;
        int rc = -1;

        if (!schema) {
                snprintf(errstr, errstr_size, "DLQ: schema RejectedEvent not loaded");
                return -1;
        }
        if (!ev->original_topic || !ev->reason || !ev->service) {
                snprintf(errstr, errstr_size,
                         "DLQ: original_topic, reason and service are required");
                return -1;
        }
        v = json_object();
        if (!v)
                goto oom;
        if (ev->errors) {
                errors = json_array();
                if (!errors)
                        goto oom;
                for (size_t i = 0; i < ev->nerrors; i++)
                        if (json_array_append_new(
                                errors, json_string(ev->errors[i] ? ev->errors[i] : "")) != 0)
                                goto oom;
        } else {
                errors = json_null();
        }
        rc = put(v, "errors", errors);
        errors = NULL; /* json_object_set_new took it, even on failure */
        if (rc != 0)
                goto oom;
        rc = -1;
        if (put(v, "original_topic", json_string(ev->original_topic)) != 0 ||
            put(v, "original_partition", json_integer(ev->original_partition)) != 0 ||
            put(v, "original_offset", json_integer(ev->original_offset)) != 0 ||
            put(v, "original_key",
                ev->original_key ? base64_string(ev->original_key, ev->original_key_len)
                                 : json_null()) != 0 ||
            put(v, "original_value",
                base64_string(ev->original_value ? ev->original_value : "",
                              ev->original_value_len)) != 0 ||
            put(v, "reason", json_string(ev->reason)) != 0 ||
            put(v, "service", json_string(ev->service)) != 0 ||
            put(v, "rejected_at",
                json_integer(ev->rejected_at_ms ? ev->rejected_at_ms : now_ms())) != 0)
                goto oom;
        rc = qz_avro_encode_json(schema, v, out, out_len, errstr, errstr_size);
        json_decref(v);
        return rc;
oom:
        snprintf(errstr, errstr_size,
                 "DLQ: cannot build RejectedEvent (out of memory or bad UTF-8)");
        json_decref(errors);
        json_decref(v);
        return -1;
}

int qz_dlq_send(struct qz_kafka_producer *p, const struct qz_avro_registry *reg,
                const char *dlq_topic, const struct qz_dlq_event *evs, size_t n, int timeout_ms,
                char *errstr, size_t errstr_size)
{
        struct qz_kafka_record *recs = NULL;
        unsigned char **vals = NULL;
        int rc = -1;

        if (n == 0)
                return 0;
        recs = calloc(n, sizeof(*recs));
        vals = calloc(n, sizeof(*vals));
        if (!recs || !vals) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        for (size_t i = 0; i < n; i++) {
                size_t len;
                if (qz_dlq_encode(reg, &evs[i], &vals[i], &len, errstr, errstr_size) != 0)
                        goto fail;
                recs[i].topic = dlq_topic;
                recs[i].partition = QZ_KAFKA_PARTITION_ANY;
                recs[i].key = evs[i].original_key;
                recs[i].key_len = evs[i].original_key_len;
                recs[i].value = vals[i];
                recs[i].value_len = len;
        }
        if (qz_kafka_produce_wait(p, recs, n, timeout_ms, errstr, errstr_size) != QZ_KAFKA_OK)
                goto fail;
        rc = 0;
fail:
        for (size_t i = 0; vals && i < n; i++)
                free(vals[i]);
        free(vals);
        free(recs);
        return rc;
}
