/* cmd_avro.c - qoqnuzctl avro: JSON <-> single-object Avro on stdin/stdout, and the
 * canonical form and fingerprint of a schema. */
#include "avro.h"
#include "ctl.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT (64 * 1024 * 1024)

static void usage(void)
{
        fprintf(stderr, "usage: qoqnuzctl avro encode SCHEMA   < value.json > value.avro\n"
                        "       qoqnuzctl avro decode          < value.avro\n"
                        "       qoqnuzctl avro fingerprint SCHEMA\n"
                        "  schemas from $QOQNUZ_SCHEMA_DIR (default: schemas)\n");
}

/* Reads all of stdin; *out is malloc'd and NUL-terminated. */
static int read_stdin(unsigned char **out, size_t *len)
{
        size_t cap = 65536, n = 0;
        unsigned char *buf = malloc(cap + 1), *p;
        size_t got;
        if (!buf)
                return -1;
        while ((got = fread(buf + n, 1, cap - n, stdin)) > 0) {
                n += got;
                if (n == cap) {
                        if (cap >= MAX_INPUT || !(p = realloc(buf, cap * 2 + 1)))
                                goto fail;
                        buf = p;
                        cap *= 2;
                }
        }
        if (ferror(stdin))
                goto fail;
        buf[n] = '\0';
        *out = buf;
        *len = n;
        return 0;
fail:
        free(buf);
        return -1;
}

static int cmd_encode(const struct qz_avro_registry *r, const char *name)
{
        const struct qz_avro_schema *s = qz_avro_schema_get(r, name);
        unsigned char *out = NULL;
        size_t len = 0;
        json_error_t jerr;
        char err[256];
        json_t *v;

        if (!s) {
                fprintf(stderr, "qoqnuzctl avro: unknown schema '%s'\n", name);
                return 1;
        }
        if (!(v = json_loadf(stdin, 0, &jerr))) {
                fprintf(stderr, "qoqnuzctl avro: stdin: line %d: %s\n", jerr.line, jerr.text);
                return 1;
        }
        if (qz_avro_encode_json(s, v, &out, &len, err, sizeof(err)) < 0) {
                fprintf(stderr, "qoqnuzctl avro: %s: %s\n", qz_avro_schema_name(s), err);
                json_decref(v);
                return 1;
        }
        json_decref(v);
        int rc = fwrite(out, 1, len, stdout) == len && fflush(stdout) == 0 ? 0 : 1;
        if (rc)
                fprintf(stderr, "qoqnuzctl avro: cannot write stdout\n");
        free(out);
        return rc;
}

static int cmd_decode(const struct qz_avro_registry *r)
{
        const struct qz_avro_schema *s = NULL;
        unsigned char *in = NULL;
        size_t len = 0;
        json_t *v = NULL, *doc = NULL;
        char err[256], *text = NULL;
        int rc = 1;

        if (read_stdin(&in, &len) < 0) {
                fprintf(stderr, "qoqnuzctl avro: cannot read stdin (limit %d bytes)\n", MAX_INPUT);
                return 1;
        }
        if (qz_avro_decode_json(r, in, len, &s, &v, err, sizeof(err)) < 0) {
                fprintf(stderr, "qoqnuzctl avro: %s\n", err);
                goto done;
        }
        doc = json_pack("{s:s, s:O}", "schema", qz_avro_schema_name(s), "value", v);
        if (!doc || !(text = json_dumps(doc, JSON_COMPACT))) {
                fprintf(stderr, "qoqnuzctl avro: cannot format the decoded value\n");
                goto done;
        }
        rc = printf("%s\n", text) < 0 || fflush(stdout) != 0;
done:
        free(text);
        json_decref(doc);
        json_decref(v);
        free(in);
        return rc;
}

static int cmd_fingerprint(const struct qz_avro_registry *r, const char *name)
{
        const struct qz_avro_schema *s = qz_avro_schema_get(r, name);
        if (!s) {
                fprintf(stderr, "qoqnuzctl avro: unknown schema '%s'\n", name);
                return 1;
        }
        /* Hex in wire order: the 8 little-endian bytes after C3 01. */
        uint64_t fp = qz_avro_schema_fingerprint(s);
        printf("%s\n", qz_avro_schema_canonical(s));
        for (int i = 0; i < 8; i++)
                printf("%02x", (unsigned)(fp >> (8 * i)) & 0xff);
        printf("\n");
        return fflush(stdout) == 0 ? 0 : 1;
}

int ctl_avro(int argc, char **argv)
{
        const char *dir = getenv("QOQNUZ_SCHEMA_DIR");
        const char *verb = argc > 1 ? argv[1] : "";
        struct qz_avro_registry *r = NULL;
        char err[256];
        int rc;

        bool needs_schema = strcmp(verb, "encode") == 0 || strcmp(verb, "fingerprint") == 0;
        if (needs_schema ? argc != 3 : (strcmp(verb, "decode") != 0 || argc != 2)) {
                usage();
                return 2;
        }
        if (!dir || !*dir)
                dir = "schemas";
        if (qz_avro_registry_load(dir, &r, err, sizeof(err)) < 0) {
                fprintf(stderr, "qoqnuzctl avro: %s\n", err);
                return 2;
        }
        if (strcmp(verb, "encode") == 0)
                rc = cmd_encode(r, argv[2]);
        else if (strcmp(verb, "decode") == 0)
                rc = cmd_decode(r);
        else
                rc = cmd_fingerprint(r, argv[2]);
        qz_avro_registry_free(r);
        return rc;
}
