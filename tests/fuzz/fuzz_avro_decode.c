/* fuzz_avro_decode.c - libFuzzer target: single-object Avro decode of every schema.
 * The first input byte picks the schema, the rest is the body behind a valid
 * header, so the fuzzer reaches the body decoder instead of the magic check.
 * A value that decodes must encode again. */
#include "avro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"PlayEvent",         "RejectedEvent",    "TrackEvent",
                                    "AnalysisTask",      "TrackFeatures",    "PlaylistRequest",
                                    "PlaylistGenerated", "AutomationCommand"};

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        static struct qz_avro_registry *r; /* loaded once per fuzzing process */
        char err[256];
        json_t *out = NULL;
        if (!r) {
                const char *dir = getenv("QOQNUZ_SCHEMA_DIR");
                if (qz_avro_registry_load(dir ? dir : "schemas", &r, err, sizeof(err)) != 0) {
                        fprintf(stderr, "schemas: %s\n", err);
                        abort();
                }
        }
        if (n < 1)
                return 0;
        const struct qz_avro_schema *s = qz_avro_schema_get(r, names[d[0] % 8]);
        unsigned char *b = malloc(n + 9);
        uint64_t fp = qz_avro_schema_fingerprint(s);
        b[0] = 0xc3;
        b[1] = 0x01;
        for (int i = 0; i < 8; i++)
                b[2 + i] = (unsigned char)(fp >> (8 * i));
        memcpy(b + 10, d + 1, n - 1);
        if (qz_avro_decode_json(r, b, n + 9, NULL, &out, err, sizeof(err)) == 0) {
                unsigned char *e;
                size_t el;
                if (qz_avro_encode_json(s, out, &e, &el, err, sizeof(err)) != 0) {
                        fprintf(stderr, "decoded value does not encode again: %s\n", err);
                        abort();
                }
                free(e);
                json_decref(out);
        }
        free(b);
        return 0;
}
