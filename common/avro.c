/* avro.c - Avro codec: schema registry, Parsing Canonical Form, CRC-64-AVRO and
 * single-object encoding of jansson values through avro-c generic values.
 *
 * Each schema is parsed twice: by avro-c (the generic value class that does the
 * binary work) and here, from the JSON, into a small node tree that gives the
 * canonical form, the logical types avro-c drops, and a bounds-checked walker
 * that validates a body before avro-c reads it (avro-c trusts length prefixes
 * and would allocate or loop on garbage).
 *
 * Thread safety: after load nothing is written. avro-c value classes are
 * shared; their refcounts are atomic and generic values are created per call.
 * avro-c's error text is a process-wide buffer, so it is only read at load. */
#include "avro.h"

#include <avro/errors.h>
#include <avro/generic.h>
#include <avro/io.h>
#include <avro/schema.h>
#include <avro/value.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRC64_EMPTY 0xc15d213aa4d7a795ULL
#define HEADER_LEN  10
#define MAX_DEPTH   64
#define MAX_SCHEMA  (1024 * 1024)
#define PATH_SIZE   256

enum kind {
        K_NULL,
        K_BOOLEAN,
        K_INT,
        K_LONG,
        K_FLOAT,
        K_DOUBLE,
        K_BYTES,
        K_STRING,
        K_RECORD,
        K_ENUM,
        K_FIXED,
        K_ARRAY,
        K_MAP,
        K_UNION,
};

static const char *const primitive_names[] = {"null",  "boolean", "int",   "long",
                                              "float", "double",  "bytes", "string"};

/* One schema node. Named types are shared by reference, so the graph may be
 * cyclic; every node is owned by the node list of its schema. */
struct node {
        enum kind kind;
        char *name;        /* fullname of a record/enum/fixed */
        char *logical;     /* logicalType, NULL when none */
        size_t n;          /* fields, symbols or union branches */
        struct node **sub; /* field types or branches; sub[0] is items/values */
        char **names;      /* field names or enum symbols */
        json_t **defaults; /* per field; NULL when the field has none */
        size_t size;       /* fixed size */
};

struct nodes {
        struct node **v;
        size_t n, cap;
};

struct qz_avro_schema {
        char *name;
        char *canonical;
        uint64_t fingerprint;
        struct node *root;
        struct nodes nodes;
        avro_schema_t aschema;
        avro_value_iface_t *iface;
};

struct qz_avro_registry {
        struct qz_avro_schema **v;
        size_t n;
};

/* ---- small helpers ---------------------------------------------------- */

struct buf {
        char *p;
        size_t len, cap;
};

static int buf_put(struct buf *b, const char *s, size_t n)
{
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 256;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *p = realloc(b->p, cap);
                if (!p)
                        return -1;
                b->p = p;
                b->cap = cap;
        }
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = '\0';
        return 0;
}

static int buf_str(struct buf *b, const char *s)
{
        return buf_put(b, s, strlen(s));
}

/* A JSON string literal; names and symbols are validated to need no escapes. */
static int buf_quoted(struct buf *b, const char *s)
{
        return buf_put(b, "\"", 1) || buf_str(b, s) || buf_put(b, "\"", 1) ? -1 : 0;
}

uint64_t qz_avro_crc64(const void *buf, size_t len)
{
        /* Bitwise form of the spec's table-driven Rabin fingerprint: same
         * result, no table to initialise or share. */
        const unsigned char *p = buf;
        uint64_t fp = CRC64_EMPTY;
        for (size_t i = 0; i < len; i++) {
                fp ^= p[i];
                for (int k = 0; k < 8; k++)
                        fp = (fp >> 1) ^ (CRC64_EMPTY & (0 - (fp & 1)));
        }
        return fp;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const unsigned char *p, size_t n)
{
        char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t)p[i] << 16;
                if (i + 1 < n)
                        v |= (uint32_t)p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                *o++ = b64chars[(v >> 18) & 63];
                *o++ = b64chars[(v >> 12) & 63];
                *o++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
                *o++ = i + 2 < n ? b64chars[v & 63] : '=';
        }
        *o = '\0';
        return out;
}

static int b64val(char c)
{
        const char *p = c ? strchr(b64chars, c) : NULL;
        return p ? (int)(p - b64chars) : -1;
}

/* Strict standard base64 with padding; *out is malloc'd (at least 1 byte). */
static int base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len)
{
        if (n % 4)
                return -1;
        unsigned char *o = malloc(n / 4 * 3 + 1);
        size_t len = 0;
        if (!o)
                return -1;
        for (size_t i = 0; i < n; i += 4) {
                int pad = 0, v[4];
                for (int k = 0; k < 4; k++) {
                        if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                                v[k] = 0;
                                pad++;
                                continue;
                        }
                        if (pad || (v[k] = b64val(s[i + k])) < 0)
                                goto fail;
                }
                uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                             (uint32_t)v[3];
                o[len++] = x >> 16;
                if (pad < 2)
                        o[len++] = (x >> 8) & 0xff;
                if (pad < 1)
                        o[len++] = x & 0xff;
        }
        *out = o;
        *out_len = len;
        return 0;
fail:
        free(o);
        return -1;
}

static bool is_uuid(const char *s, size_t n)
{
        if (n != 36)
                return false;
        for (size_t i = 0; i < n; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
                        return false;
        }
        return true;
}

/* ---- schema parsing and Parsing Canonical Form ------------------------- */

struct parse {
        struct nodes *nodes;
        struct buf out;
        char *errstr;
        size_t errstr_size;
};

static void node_free(struct node *nd)
{
        for (size_t i = 0; i < nd->n; i++) {
                if (nd->names)
                        free(nd->names[i]);
                if (nd->defaults)
                        json_decref(nd->defaults[i]);
        }
        free(nd->name);
        free(nd->logical);
        free(nd->sub);
        free(nd->names);
        free(nd->defaults);
        free(nd);
}

static void nodes_free(struct nodes *ns)
{
        for (size_t i = 0; i < ns->n; i++)
                node_free(ns->v[i]);
        free(ns->v);
        ns->v = NULL;
        ns->n = ns->cap = 0;
}

static struct node *node_new(struct parse *p, enum kind kind)
{
        struct node *nd = calloc(1, sizeof(*nd));
        if (!nd)
                return NULL;
        if (p->nodes->n == p->nodes->cap) {
                size_t cap = p->nodes->cap ? p->nodes->cap * 2 : 16;
                struct node **v = realloc(p->nodes->v, cap * sizeof(*v));
                if (!v) {
                        free(nd);
                        return NULL;
                }
                p->nodes->v = v;
                p->nodes->cap = cap;
        }
        p->nodes->v[p->nodes->n++] = nd;
        nd->kind = kind;
        return nd;
}

static int primitive_kind(const char *name)
{
        for (size_t i = 0; i < sizeof(primitive_names) / sizeof(primitive_names[0]); i++)
                if (strcmp(name, primitive_names[i]) == 0)
                        return (int)i;
        return -1;
}

/* [A-Za-z_][A-Za-z0-9_]* per dot-separated part; dots only if dotted. */
static bool valid_name(const char *s, bool dotted)
{
        bool start = true;
        if (!*s)
                return false;
        for (; *s; s++) {
                char c = *s;
                if (c == '.' && dotted && !start) {
                        start = true;
                        continue;
                }
                bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
                if (!alpha && (start || c < '0' || c > '9'))
                        return false;
                start = false;
        }
        return !start;
}

static char *fullname(const char *name, const char *ns)
{
        char *s = NULL;
        if (strchr(name, '.') || !ns || !*ns)
                return strdup(name);
        if (asprintf(&s, "%s.%s", ns, name) < 0)
                return NULL;
        return s;
}

static struct node *find_named(struct parse *p, const char *full)
{
        for (size_t i = 0; i < p->nodes->n; i++)
                if (p->nodes->v[i]->name && strcmp(p->nodes->v[i]->name, full) == 0)
                        return p->nodes->v[i];
        return NULL;
}

static int parse_node(struct parse *p, json_t *s, const char *ns, int depth, struct node **out);

static int oom(struct parse *p)
{
        snprintf(p->errstr, p->errstr_size, "out of memory");
        return -1;
}

static int parse_ref(struct parse *p, const char *name, const char *ns, struct node **out)
{
        int k = primitive_kind(name);
        if (k >= 0) {
                if (!(*out = node_new(p, (enum kind)k)) || buf_quoted(&p->out, name))
                        return oom(p);
                return 0;
        }
        if (!valid_name(name, true)) {
                snprintf(p->errstr, p->errstr_size, "invalid type name '%s'", name);
                return -1;
        }
        char *full = fullname(name, ns);
        if (!full)
                return oom(p);
        *out = find_named(p, full);
        if (!*out) {
                snprintf(p->errstr, p->errstr_size, "unknown type '%s'", full);
                free(full);
                return -1;
        }
        int rc = buf_quoted(&p->out, full) ? oom(p) : 0;
        free(full);
        return rc;
}

static int parse_fields(struct parse *p, struct node *nd, json_t *fields, const char *ns, int depth)
{
        if (!json_is_array(fields)) {
                snprintf(p->errstr, p->errstr_size, "record '%s': fields must be an array",
                         nd->name);
                return -1;
        }
        size_t n = json_array_size(fields);
        nd->sub = calloc(n + 1, sizeof(*nd->sub));
        nd->names = calloc(n + 1, sizeof(*nd->names));
        nd->defaults = calloc(n + 1, sizeof(*nd->defaults));
        if (!nd->sub || !nd->names || !nd->defaults || buf_str(&p->out, ",\"fields\":["))
                return oom(p);
        for (size_t i = 0; i < n; i++) {
                json_t *f = json_array_get(fields, i);
                const char *fname = json_string_value(json_object_get(f, "name"));
                json_t *ftype = json_object_get(f, "type");
                if (!fname || !valid_name(fname, false) || !ftype) {
                        snprintf(p->errstr, p->errstr_size,
                                 "record '%s': field %zu needs a valid name and a type", nd->name,
                                 i);
                        return -1;
                }
                for (size_t k = 0; k < nd->n; k++)
                        if (strcmp(nd->names[k], fname) == 0) {
                                snprintf(p->errstr, p->errstr_size,
                                         "record '%s': duplicate field '%s'", nd->name, fname);
                                return -1;
                        }
                if (!(nd->names[i] = strdup(fname)))
                        return oom(p);
                nd->defaults[i] = json_incref(json_object_get(f, "default"));
                nd->n = i + 1;
                if ((i && buf_put(&p->out, ",", 1)) || buf_str(&p->out, "{\"name\":") ||
                    buf_quoted(&p->out, fname) || buf_str(&p->out, ",\"type\":"))
                        return oom(p);
                if (parse_node(p, ftype, ns, depth + 1, &nd->sub[i]) < 0)
                        return -1;
                if (buf_put(&p->out, "}", 1))
                        return oom(p);
        }
        return buf_put(&p->out, "]", 1) ? oom(p) : 0;
}

static int parse_symbols(struct parse *p, struct node *nd, json_t *symbols)
{
        if (!json_is_array(symbols)) {
                snprintf(p->errstr, p->errstr_size, "enum '%s': symbols must be an array",
                         nd->name);
                return -1;
        }
        size_t n = json_array_size(symbols);
        if (!(nd->names = calloc(n + 1, sizeof(*nd->names))) || buf_str(&p->out, ",\"symbols\":["))
                return oom(p);
        for (size_t i = 0; i < n; i++) {
                const char *sym = json_string_value(json_array_get(symbols, i));
                if (!sym || !valid_name(sym, false)) {
                        snprintf(p->errstr, p->errstr_size, "enum '%s': invalid symbol %zu",
                                 nd->name, i);
                        return -1;
                }
                if (!(nd->names[i] = strdup(sym)))
                        return oom(p);
                nd->n = i + 1;
                if ((i && buf_put(&p->out, ",", 1)) || buf_quoted(&p->out, sym))
                        return oom(p);
        }
        return buf_put(&p->out, "]", 1) ? oom(p) : 0;
}

static int parse_named(struct parse *p, json_t *s, const char *type, const char *ns, int depth,
                       struct node **out)
{
        const char *name = json_string_value(json_object_get(s, "name"));
        json_t *nsj = json_object_get(s, "namespace");
        char *full = NULL, *childns = NULL;
        int rc = -1;

        if (!name || !valid_name(name, true)) {
                snprintf(p->errstr, p->errstr_size, "%s: missing or invalid name", type);
                return -1;
        }
        if (json_is_string(nsj) && !strchr(name, '.'))
                ns = json_string_value(nsj); /* explicit, possibly "" (null namespace) */
        if (!(full = fullname(name, ns)))
                return oom(p);
        if (find_named(p, full)) {
                snprintf(p->errstr, p->errstr_size, "type '%s' redefined", full);
                goto fail;
        }
        char *dot = strrchr(full, '.');
        if (!(childns = strndup(full, dot ? (size_t)(dot - full) : 0)))
                goto oom;

        enum kind kind = strcmp(type, "enum") == 0    ? K_ENUM
                         : strcmp(type, "fixed") == 0 ? K_FIXED
                                                      : K_RECORD;
        struct node *nd = node_new(p, kind);
        if (!nd)
                goto oom;
        nd->name = full; /* registered before its fields: records may recurse */
        full = NULL;
        if (buf_str(&p->out, "{\"name\":") || buf_quoted(&p->out, nd->name) ||
            buf_str(&p->out, ",\"type\":") ||
            buf_quoted(&p->out, kind == K_RECORD ? "record" : type))
                goto oom;
        if (kind == K_RECORD) {
                if (parse_fields(p, nd, json_object_get(s, "fields"), childns, depth) < 0)
                        goto fail;
        } else if (kind == K_ENUM) {
                if (parse_symbols(p, nd, json_object_get(s, "symbols")) < 0)
                        goto fail;
        } else {
                json_t *size = json_object_get(s, "size");
                char tmp[32];
                if (!json_is_integer(size) || json_integer_value(size) < 0) {
                        snprintf(p->errstr, p->errstr_size, "fixed '%s': invalid size", nd->name);
                        goto fail;
                }
                nd->size = (size_t)json_integer_value(size);
                snprintf(tmp, sizeof(tmp), ",\"size\":%zu", nd->size);
                if (buf_str(&p->out, tmp))
                        goto oom;
        }
        if (buf_put(&p->out, "}", 1))
                goto oom;
        *out = nd;
        rc = 0;
        goto fail;
oom:
        oom(p);
fail:
        free(full);
        free(childns);
        return rc;
}

static int parse_node(struct parse *p, json_t *s, const char *ns, int depth, struct node **out)
{
        if (depth > MAX_DEPTH) {
                snprintf(p->errstr, p->errstr_size, "schema nested too deeply");
                return -1;
        }
        if (json_is_string(s))
                return parse_ref(p, json_string_value(s), ns, out);
        if (json_is_array(s)) {
                size_t n = json_array_size(s);
                struct node *nd = node_new(p, K_UNION);
                if (!nd || !(nd->sub = calloc(n + 1, sizeof(*nd->sub))) || buf_put(&p->out, "[", 1))
                        return oom(p);
                for (size_t i = 0; i < n; i++) {
                        if (i && buf_put(&p->out, ",", 1))
                                return oom(p);
                        if (parse_node(p, json_array_get(s, i), ns, depth + 1, &nd->sub[i]) < 0)
                                return -1;
                        nd->n = i + 1;
                }
                *out = nd;
                return buf_put(&p->out, "]", 1) ? oom(p) : 0;
        }
        if (!json_is_object(s)) {
                snprintf(p->errstr, p->errstr_size, "schema must be a string, array or object");
                return -1;
        }
        json_t *tj = json_object_get(s, "type");
        if (json_is_object(tj) || json_is_array(tj))
                return parse_node(p, tj, ns, depth + 1, out);
        const char *type = json_string_value(tj);
        if (!type) {
                snprintf(p->errstr, p->errstr_size, "schema object without a type");
                return -1;
        }
        if (primitive_kind(type) >= 0) {
                /* [PRIMITIVES]: {"type":"long","logicalType":...} -> "long" */
                if (parse_ref(p, type, ns, out) < 0)
                        return -1;
                const char *lt = json_string_value(json_object_get(s, "logicalType"));
                if (lt && !((*out)->logical = strdup(lt)))
                        return oom(p);
                return 0;
        }
        if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0 ||
            strcmp(type, "enum") == 0 || strcmp(type, "fixed") == 0)
                return parse_named(p, s, type, ns, depth, out);
        if (strcmp(type, "array") == 0 || strcmp(type, "map") == 0) {
                bool arr = type[0] == 'a';
                json_t *inner = json_object_get(s, arr ? "items" : "values");
                struct node *nd = node_new(p, arr ? K_ARRAY : K_MAP);
                if (!inner) {
                        snprintf(p->errstr, p->errstr_size, "%s without %s", type,
                                 arr ? "items" : "values");
                        return -1;
                }
                if (!nd || !(nd->sub = calloc(1, sizeof(*nd->sub))) ||
                    buf_str(&p->out, arr ? "{\"type\":\"array\",\"items\":"
                                         : "{\"type\":\"map\",\"values\":"))
                        return oom(p);
                if (parse_node(p, inner, ns, depth + 1, &nd->sub[0]) < 0)
                        return -1;
                *out = nd;
                return buf_put(&p->out, "}", 1) ? oom(p) : 0;
        }
        return parse_ref(p, type, ns, out); /* {"type":"SomeName"} */
}

/* Parses schema JSON into nodes (appended to *nodes) and the canonical form. */
static int parse_schema(json_t *s, struct nodes *nodes, struct node **root, char **canonical,
                        char *errstr, size_t errstr_size)
{
        struct parse p = {.nodes = nodes, .errstr = errstr, .errstr_size = errstr_size};
        if (parse_node(&p, s, "", 0, root) < 0 || (!p.out.p && oom(&p) < 0)) {
                free(p.out.p);
                return -1;
        }
        *canonical = p.out.p;
        return 0;
}

char *qz_avro_canonical_form(const char *schema_json, char *errstr, size_t errstr_size)
{
        json_error_t jerr;
        struct nodes nodes = {0};
        struct node *root = NULL;
        char *canonical = NULL;
        json_t *j = json_loads(schema_json, JSON_DECODE_ANY, &jerr);
        if (!j) {
                snprintf(errstr, errstr_size, "schema JSON: %s (line %d)", jerr.text, jerr.line);
                return NULL;
        }
        if (parse_schema(j, &nodes, &root, &canonical, errstr, errstr_size) < 0)
                canonical = NULL;
        nodes_free(&nodes);
        json_decref(j);
        return canonical;
}

/* ---- registry ---------------------------------------------------------- */

static void schema_free(struct qz_avro_schema *s)
{
        if (!s)
                return;
        if (s->iface)
                avro_value_iface_decref(s->iface);
        if (s->aschema)
                avro_schema_decref(s->aschema);
        nodes_free(&s->nodes);
        free(s->canonical);
        free(s->name);
        free(s);
}

void qz_avro_registry_free(struct qz_avro_registry *r)
{
        if (!r)
                return;
        for (size_t i = 0; i < r->n; i++)
                schema_free(r->v[i]);
        free(r->v);
        free(r);
}

static char *read_file(const char *path, size_t *len, char *errstr, size_t errstr_size)
{
        FILE *f = fopen(path, "rb");
        char *text = NULL;
        if (!f) {
                snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
                return NULL;
        }
        if (!(text = malloc(MAX_SCHEMA + 1))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto done;
        }
        *len = fread(text, 1, MAX_SCHEMA + 1, f);
        if (ferror(f) || *len > MAX_SCHEMA) {
                snprintf(errstr, errstr_size, "%s: unreadable or larger than %d bytes", path,
                         MAX_SCHEMA);
                free(text);
                text = NULL;
                goto done;
        }
        text[*len] = '\0';
done:
        fclose(f);
        return text;
}

static struct qz_avro_schema *schema_load(const char *path, char *errstr, size_t errstr_size)
{
        struct qz_avro_schema *s = calloc(1, sizeof(*s));
        char *text = NULL, err[200];
        size_t len = 0;
        json_t *j = NULL;
        json_error_t jerr;

        if (!s) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        if (!(text = read_file(path, &len, errstr, errstr_size)))
                goto fail;
        if (!(j = json_loadb(text, len, JSON_DECODE_ANY, &jerr))) {
                snprintf(errstr, errstr_size, "%s: line %d: %s", path, jerr.line, jerr.text);
                goto fail;
        }
        if (parse_schema(j, &s->nodes, &s->root, &s->canonical, err, sizeof(err)) < 0) {
                snprintf(errstr, errstr_size, "%s: %s", path, err);
                goto fail;
        }
        if (s->root->kind != K_RECORD) {
                snprintf(errstr, errstr_size, "%s: top-level schema must be a record", path);
                goto fail;
        }
        if (!(s->name = strdup(s->root->name))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        s->fingerprint = qz_avro_crc64(s->canonical, strlen(s->canonical));
        if (avro_schema_from_json_length(text, len, &s->aschema) != 0) {
                snprintf(errstr, errstr_size, "%s: avro-c: %s", path, avro_strerror());
                s->aschema = NULL;
                goto fail;
        }
        if (!(s->iface = avro_generic_class_from_schema(s->aschema))) {
                snprintf(errstr, errstr_size, "%s: avro-c: %s", path, avro_strerror());
                goto fail;
        }
        json_decref(j);
        free(text);
        return s;
fail:
        json_decref(j);
        free(text);
        schema_free(s);
        return NULL;
}

static int cmp_str_cb(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int qz_avro_registry_load(const char *dir, struct qz_avro_registry **out, char *errstr,
                          size_t errstr_size)
{
        struct qz_avro_registry *r = calloc(1, sizeof(*r));
        char **files = NULL;
        size_t nfiles = 0;
        DIR *d = NULL;
        struct dirent *de;

        *out = NULL;
        if (!r)
                goto oom;
        if (!(d = opendir(dir))) {
                snprintf(errstr, errstr_size, "schema dir %s: %s", dir, strerror(errno));
                goto fail;
        }
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n <= 5 || strcmp(de->d_name + n - 5, ".avsc") != 0)
                        continue;
                char **v = realloc(files, (nfiles + 1) * sizeof(*files));
                if (!v)
                        goto oom;
                files = v;
                if (asprintf(&files[nfiles], "%s/%s", dir, de->d_name) < 0)
                        goto oom;
                nfiles++;
        }
        if (nfiles == 0) {
                snprintf(errstr, errstr_size, "schema dir %s: no *.avsc files", dir);
                goto fail;
        }
        qsort(files, nfiles, sizeof(*files), cmp_str_cb); /* stable load order */
        if (!(r->v = calloc(nfiles, sizeof(*r->v))))
                goto oom;
        for (size_t i = 0; i < nfiles; i++) {
                struct qz_avro_schema *s = schema_load(files[i], errstr, errstr_size);
                if (!s)
                        goto fail;
                r->v[r->n++] = s;
                for (size_t k = 0; k + 1 < r->n; k++) {
                        if (strcmp(r->v[k]->name, s->name) == 0 ||
                            r->v[k]->fingerprint == s->fingerprint) {
                                snprintf(errstr, errstr_size,
                                         "%s: schema %s clashes with %s (same name or "
                                         "fingerprint)",
                                         files[i], s->name, r->v[k]->name);
                                goto fail;
                        }
                }
        }
        for (size_t i = 0; i < nfiles; i++)
                free(files[i]);
        free(files);
        closedir(d);
        *out = r;
        return 0;
oom:
        snprintf(errstr, errstr_size, "out of memory");
fail:
        for (size_t i = 0; i < nfiles; i++)
                free(files[i]);
        free(files);
        if (d)
                closedir(d);
        qz_avro_registry_free(r);
        return -1;
}

const struct qz_avro_schema *qz_avro_schema_get(const struct qz_avro_registry *r, const char *name)
{
        for (size_t i = 0; r && name && i < r->n; i++) {
                const char *full = r->v[i]->name, *dot = strrchr(full, '.');
                if (strcmp(full, name) == 0 || (dot && strcmp(dot + 1, name) == 0))
                        return r->v[i];
        }
        return NULL;
}

const char *qz_avro_schema_name(const struct qz_avro_schema *s)
{
        return s->name;
}

const char *qz_avro_schema_canonical(const struct qz_avro_schema *s)
{
        return s->canonical;
}

uint64_t qz_avro_schema_fingerprint(const struct qz_avro_schema *s)
{
        return s->fingerprint;
}

/* ---- JSON -> avro value ------------------------------------------------ */

struct ctx {
        char path[PATH_SIZE];
        char *errstr;
        size_t errstr_size;
};

static int verr(struct ctx *c, const char *fmt, const char *arg)
{
        char msg[160];
        snprintf(msg, sizeof(msg), fmt, arg);
        if (c->path[0])
                snprintf(c->errstr, c->errstr_size, "field '%s': %s", c->path, msg);
        else
                snprintf(c->errstr, c->errstr_size, "value: %s", msg);
        return -1;
}

/* Appends ".name" or "[i]" to the path; returns the old length to restore. */
static size_t path_push(struct ctx *c, const char *name, size_t index)
{
        size_t old = strlen(c->path);
        if (name)
                snprintf(c->path + old, sizeof(c->path) - old, "%s%s", old ? "." : "", name);
        else
                snprintf(c->path + old, sizeof(c->path) - old, "[%zu]", index);
        return old;
}

static const char *kind_word(enum kind k)
{
        switch (k) {
        case K_NULL:
                return "null";
        case K_BOOLEAN:
                return "boolean";
        case K_INT:
                return "integer in int32 range";
        case K_LONG:
                return "integer";
        case K_FLOAT:
        case K_DOUBLE:
                return "number";
        case K_BYTES:
        case K_FIXED:
                return "base64 string";
        case K_STRING:
                return "string";
        case K_ENUM:
                return "enum symbol";
        case K_RECORD:
        case K_MAP:
                return "object";
        case K_ARRAY:
                return "array";
        case K_UNION:
                break;
        }
        return "union";
}

static bool fits(const struct node *nd, json_t *j)
{
        switch (nd->kind) {
        case K_NULL:
                return json_is_null(j);
        case K_BOOLEAN:
                return json_is_boolean(j);
        case K_INT:
                return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
                       json_integer_value(j) <= INT32_MAX;
        case K_LONG:
                return json_is_integer(j);
        case K_FLOAT:
        case K_DOUBLE:
                return json_is_number(j);
        case K_BYTES:
        case K_FIXED:
        case K_STRING:
                return json_is_string(j);
        case K_ENUM:
                for (size_t i = 0; json_is_string(j) && i < nd->n; i++)
                        if (strcmp(nd->names[i], json_string_value(j)) == 0)
                                return true;
                return false;
        case K_RECORD:
        case K_MAP:
                return json_is_object(j);
        case K_ARRAY:
                return json_is_array(j);
        case K_UNION:
                break;
        }
        return false;
}

static int set_value(struct ctx *c, const struct node *nd, avro_value_t *v, json_t *j,
                     bool is_default, int depth);

static int set_record(struct ctx *c, const struct node *nd, avro_value_t *v, json_t *j, int depth)
{
        const char *key;
        json_t *m;
        json_object_foreach(j, key, m)
        {
                size_t i = 0;
                while (i < nd->n && strcmp(nd->names[i], key) != 0)
                        i++;
                if (i == nd->n) {
                        size_t old = path_push(c, key, 0);
                        verr(c, "%s", "unknown member");
                        c->path[old] = '\0';
                        return -1;
                }
        }
        for (size_t i = 0; i < nd->n; i++) {
                avro_value_t fv;
                bool dflt = false;
                size_t old = path_push(c, nd->names[i], 0);
                m = json_object_get(j, nd->names[i]);
                if (!m && nd->defaults[i]) {
                        m = nd->defaults[i];
                        dflt = true;
                }
                if (!m)
                        return verr(c, "%s", "missing");
                if (avro_value_get_by_index(v, i, &fv, NULL) != 0)
                        return verr(c, "%s", "avro-c has no such field");
                if (set_value(c, nd->sub[i], &fv, m, dflt, depth + 1) < 0)
                        return -1;
                c->path[old] = '\0';
        }
        return 0;
}

static int set_bytes(struct ctx *c, const struct node *nd, avro_value_t *v, json_t *j)
{
        unsigned char *p = NULL;
        size_t n = 0;
        int rc;
        if (!json_is_string(j) ||
            base64_decode(json_string_value(j), json_string_length(j), &p, &n) < 0)
                return verr(c, "expected %s", "base64 string");
        if (nd->kind == K_FIXED && n != nd->size) {
                free(p);
                return verr(c, "%s", "base64 string decodes to the wrong fixed size");
        }
        rc = nd->kind == K_FIXED ? avro_value_set_fixed(v, p, n) : avro_value_set_bytes(v, p, n);
        free(p);
        return rc ? verr(c, "%s", "avro-c refused the value") : 0;
}

static int set_value(struct ctx *c, const struct node *nd, avro_value_t *v, json_t *j,
                     bool is_default, int depth)
{
        int rc = 0;
        if (depth > MAX_DEPTH)
                return verr(c, "%s", "nested too deeply");
        if (nd->kind != K_UNION && !fits(nd, j))
                return verr(c, "expected %s", kind_word(nd->kind));
        switch (nd->kind) {
        case K_NULL:
                rc = avro_value_set_null(v);
                break;
        case K_BOOLEAN:
                rc = avro_value_set_boolean(v, json_is_true(j));
                break;
        case K_INT:
                rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
                break;
        case K_LONG:
                rc = avro_value_set_long(v, (int64_t)json_integer_value(j));
                break;
        case K_FLOAT:
                rc = avro_value_set_float(v, (float)json_number_value(j));
                break;
        case K_DOUBLE:
                rc = avro_value_set_double(v, json_number_value(j));
                break;
        case K_STRING:
                if (nd->logical && strcmp(nd->logical, "uuid") == 0 &&
                    !is_uuid(json_string_value(j), json_string_length(j)))
                        return verr(c, "expected %s", "uuid string");
                rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
                break;
        case K_BYTES:
        case K_FIXED:
                return set_bytes(c, nd, v, j);
        case K_ENUM:
                for (size_t i = 0; i < nd->n; i++)
                        if (strcmp(nd->names[i], json_string_value(j)) == 0)
                                rc = avro_value_set_enum(v, (int)i);
                break;
        case K_RECORD:
                return set_record(c, nd, v, j, depth);
        case K_ARRAY:
                for (size_t i = 0; i < json_array_size(j); i++) {
                        avro_value_t e;
                        size_t old = path_push(c, NULL, i);
                        if (avro_value_append(v, &e, NULL) != 0)
                                return verr(c, "%s", "avro-c append failed");
                        if (set_value(c, nd->sub[0], &e, json_array_get(j, i), false, depth + 1) <
                            0)
                                return -1;
                        c->path[old] = '\0';
                }
                break;
        case K_MAP: {
                const char *key;
                json_t *m;
                json_object_foreach(j, key, m)
                {
                        avro_value_t e;
                        size_t old = path_push(c, key, 0);
                        if (avro_value_add(v, key, &e, NULL, NULL) != 0)
                                return verr(c, "%s", "avro-c map add failed");
                        if (set_value(c, nd->sub[0], &e, m, false, depth + 1) < 0)
                                return -1;
                        c->path[old] = '\0';
                }
                break;
        }
        case K_UNION: {
                /* A default belongs to the first branch (Avro spec). */
                size_t i = 0;
                while (!is_default && i < nd->n && !fits(nd->sub[i], j))
                        i++;
                if (i >= nd->n) {
                        char want[160] = "";
                        for (size_t k = 0; k < nd->n; k++)
                                snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s",
                                         k ? " or " : "", kind_word(nd->sub[k]->kind));
                        return verr(c, "expected %s", want);
                }
                avro_value_t b;
                if (avro_value_set_branch(v, (int)i, &b) != 0)
                        return verr(c, "%s", "avro-c refused the union branch");
                return set_value(c, nd->sub[i], &b, j, is_default, depth + 1);
        }
        }
        return rc ? verr(c, "%s", "avro-c refused the value") : 0;
}

int qz_avro_encode_json(const struct qz_avro_schema *s, json_t *value, unsigned char **out,
                        size_t *out_len, char *errstr, size_t errstr_size)
{
        struct ctx c = {.errstr = errstr, .errstr_size = errstr_size};
        avro_value_t v = {0};
        avro_writer_t w = NULL;
        unsigned char *buf = NULL;
        size_t size = 0;
        int rc = -1;

        *out = NULL;
        *out_len = 0;
        if (avro_generic_value_new(s->iface, &v) != 0) {
                snprintf(errstr, errstr_size, "%s: cannot allocate avro value", s->name);
                return -1;
        }
        if (set_value(&c, s->root, &v, value, false, 0) < 0)
                goto fail;
        if (avro_value_sizeof(&v, &size) != 0 || !(buf = malloc(HEADER_LEN + size + 1))) {
                snprintf(errstr, errstr_size, "%s: cannot size the encoded value", s->name);
                goto fail;
        }
        buf[0] = 0xc3;
        buf[1] = 0x01;
        for (int i = 0; i < 8; i++)
                buf[2 + i] = (unsigned char)(s->fingerprint >> (8 * i));
        if (!(w = avro_writer_memory((const char *)buf + HEADER_LEN, (int64_t)size)) ||
            avro_value_write(w, &v) != 0) {
                snprintf(errstr, errstr_size, "%s: avro-c write failed", s->name);
                goto fail;
        }
        *out = buf;
        *out_len = HEADER_LEN + size;
        buf = NULL;
        rc = 0;
fail:
        if (w)
                avro_writer_free(w);
        free(buf);
        avro_value_decref(&v);
        return rc;
}

/* ---- body validation (before avro-c sees the bytes) ----------------------- */

struct rd {
        const unsigned char *p;
        size_t len, pos;
};

static int rd_varint(struct ctx *c, struct rd *r, int maxbytes, int64_t *out)
{
        uint64_t u = 0;
        *out = 0;
        for (int i = 0;; i++) {
                if (i == maxbytes)
                        return verr(c, "%s", "varint too long");
                if (r->pos >= r->len)
                        return verr(c, "%s", "truncated");
                unsigned char b = r->p[r->pos++];
                u |= (uint64_t)(b & 0x7f) << (7 * i);
                if (!(b & 0x80))
                        break;
        }
        *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
        return 0;
}

static int rd_skip(struct ctx *c, struct rd *r, size_t n)
{
        if (n > r->len - r->pos)
                return verr(c, "%s", "truncated");
        r->pos += n;
        return 0;
}

static int rd_len(struct ctx *c, struct rd *r)
{
        int64_t n;
        if (rd_varint(c, r, 10, &n) < 0)
                return -1;
        if (n < 0)
                return verr(c, "%s", "negative length");
        return rd_skip(c, r, (uint64_t)n);
}

static int check_body(struct ctx *c, const struct node *nd, struct rd *r, int depth);

static int check_blocks(struct ctx *c, const struct node *nd, struct rd *r, int depth)
{
        size_t total = 0, budget = r->len - r->pos;
        for (;;) {
                int64_t count, bsize;
                if (rd_varint(c, r, 10, &count) < 0)
                        return -1;
                if (count == 0)
                        return 0;
                if (count < 0) {
                        if (count == INT64_MIN)
                                return verr(c, "%s", "invalid block count");
                        count = -count;
                        if (rd_varint(c, r, 10, &bsize) < 0)
                                return -1;
                }
                /* Each item takes a byte for all our element types; a count
                 * beyond what is left is garbage, not a reason to loop. */
                if ((uint64_t)count > budget - total)
                        return verr(c, "%s", "block count larger than the remaining bytes");
                total += (size_t)count;
                for (int64_t i = 0; i < count; i++) {
                        size_t old = path_push(c, NULL, total - (size_t)count + (size_t)i);
                        if ((nd->kind == K_MAP && rd_len(c, r) < 0) ||
                            check_body(c, nd->sub[0], r, depth + 1) < 0)
                                return -1;
                        c->path[old] = '\0';
                }
        }
}

static int check_body(struct ctx *c, const struct node *nd, struct rd *r, int depth)
{
        int64_t x;
        if (depth > MAX_DEPTH)
                return verr(c, "%s", "nested too deeply");
        switch (nd->kind) {
        case K_NULL:
                return 0;
        case K_BOOLEAN:
                if (rd_skip(c, r, 1) < 0)
                        return -1;
                return r->p[r->pos - 1] > 1 ? verr(c, "%s", "invalid boolean byte") : 0;
        case K_INT:
                if (rd_varint(c, r, 5, &x) < 0)
                        return -1;
                return x < INT32_MIN || x > INT32_MAX ? verr(c, "%s", "int out of range") : 0;
        case K_LONG:
                return rd_varint(c, r, 10, &x);
        case K_FLOAT:
                return rd_skip(c, r, 4);
        case K_DOUBLE:
                return rd_skip(c, r, 8);
        case K_BYTES:
        case K_STRING:
                return rd_len(c, r);
        case K_FIXED:
                return rd_skip(c, r, nd->size);
        case K_ENUM:
        case K_UNION:
                if (rd_varint(c, r, 10, &x) < 0)
                        return -1;
                if (x < 0 || (uint64_t)x >= nd->n)
                        return verr(c, "%s", "index out of range");
                return nd->kind == K_ENUM ? 0 : check_body(c, nd->sub[x], r, depth + 1);
        case K_RECORD:
                for (size_t i = 0; i < nd->n; i++) {
                        size_t old = path_push(c, nd->names[i], 0);
                        if (check_body(c, nd->sub[i], r, depth + 1) < 0)
                                return -1;
                        c->path[old] = '\0';
                }
                return 0;
        case K_ARRAY:
        case K_MAP:
                return check_blocks(c, nd, r, depth);
        }
        return verr(c, "%s", "unknown schema node");
}

/* ---- avro value -> JSON ------------------------------------------------ */

static json_t *to_json(struct ctx *c, const struct node *nd, avro_value_t *v, int depth);

static json_t *jerr(struct ctx *c, const char *msg)
{
        verr(c, "%s", msg);
        return NULL;
}

static json_t *to_json_container(struct ctx *c, const struct node *nd, avro_value_t *v, int depth)
{
        json_t *out = nd->kind == K_ARRAY ? json_array() : json_object();
        size_t n = 0;
        if (!out || avro_value_get_size(v, &n) != 0)
                goto fail;
        for (size_t i = 0; i < n; i++) {
                avro_value_t e;
                const char *key = NULL;
                json_t *ej;
                if (avro_value_get_by_index(v, i, &e, nd->kind == K_MAP ? &key : NULL) != 0)
                        goto fail;
                size_t old = path_push(c, nd->kind == K_MAP ? key : NULL, i);
                if (!(ej = to_json(c, nd->sub[0], &e, depth + 1)))
                        goto fail_quiet;
                if (nd->kind == K_MAP ? json_object_set_new(out, key, ej)
                                      : json_array_append_new(out, ej))
                        goto fail;
                c->path[old] = '\0';
        }
        return out;
fail:
        verr(c, "%s", "cannot read avro container");
fail_quiet:
        json_decref(out);
        return NULL;
}

static json_t *to_json(struct ctx *c, const struct node *nd, avro_value_t *v, int depth)
{
        int32_t i32;
        int64_t i64;
        float f;
        double d;
        const void *p;
        const char *str;
        size_t size;
        int e;

        if (depth > MAX_DEPTH)
                return jerr(c, "nested too deeply");
        switch (nd->kind) {
        case K_NULL:
                return json_null();
        case K_BOOLEAN:
                return avro_value_get_boolean(v, &e) ? jerr(c, "bad boolean") : json_boolean(e);
        case K_INT:
                return avro_value_get_int(v, &i32) ? jerr(c, "bad int") : json_integer(i32);
        case K_LONG:
                return avro_value_get_long(v, &i64) ? jerr(c, "bad long") : json_integer(i64);
        case K_FLOAT:
                if (avro_value_get_float(v, &f) || !isfinite(f))
                        return jerr(c, "float is not a finite number");
                return json_real(f);
        case K_DOUBLE:
                if (avro_value_get_double(v, &d) || !isfinite(d))
                        return jerr(c, "double is not a finite number");
                return json_real(d);
        case K_STRING: {
                if (avro_value_get_string(v, &str, &size))
                        return jerr(c, "bad string");
                size_t n = size ? size - 1 : 0;
                /* Consumers store ids in uuid columns: reject here, with the field. */
                if (nd->logical && strcmp(nd->logical, "uuid") == 0 && !is_uuid(str, n))
                        return jerr(c, "not a uuid string");
                json_t *j = json_stringn(str, n);
                return j ? j : jerr(c, "string is not valid UTF-8");
        }
        case K_BYTES:
        case K_FIXED: {
                if (nd->kind == K_FIXED ? avro_value_get_fixed(v, &p, &size)
                                        : avro_value_get_bytes(v, &p, &size))
                        return jerr(c, "bad bytes");
                char *b64 = base64_encode(p, size);
                json_t *j = b64 ? json_string(b64) : NULL;
                free(b64);
                return j ? j : jerr(c, "out of memory");
        }
        case K_ENUM:
                if (avro_value_get_enum(v, &e) || e < 0 || (size_t)e >= nd->n)
                        return jerr(c, "bad enum");
                return json_string(nd->names[e]);
        case K_UNION: {
                avro_value_t b;
                if (avro_value_get_discriminant(v, &e) || e < 0 || (size_t)e >= nd->n ||
                    avro_value_get_current_branch(v, &b))
                        return jerr(c, "bad union");
                return to_json(c, nd->sub[e], &b, depth + 1);
        }
        case K_RECORD: {
                json_t *out = json_object();
                if (!out)
                        return jerr(c, "out of memory");
                for (size_t i = 0; i < nd->n; i++) {
                        avro_value_t fv;
                        json_t *fj;
                        size_t old = path_push(c, nd->names[i], 0);
                        if (avro_value_get_by_index(v, i, &fv, NULL)) {
                                jerr(c, "missing in avro value");
                                json_decref(out);
                                return NULL;
                        }
                        if (!(fj = to_json(c, nd->sub[i], &fv, depth + 1)) ||
                            json_object_set_new(out, nd->names[i], fj)) {
                                json_decref(out);
                                return NULL;
                        }
                        c->path[old] = '\0';
                }
                return out;
        }
        case K_ARRAY:
        case K_MAP:
                return to_json_container(c, nd, v, depth);
        }
        return jerr(c, "unknown schema node");
}

int qz_avro_decode_json(const struct qz_avro_registry *r, const void *buf, size_t len,
                        const struct qz_avro_schema **schema_out, json_t **out, char *errstr,
                        size_t errstr_size)
{
        const unsigned char *p = buf;
        const struct qz_avro_schema *s = NULL;
        char msg[200] = "";
        struct ctx c = {.errstr = msg, .errstr_size = sizeof(msg)};
        avro_value_t v = {0};
        avro_reader_t rdr = NULL;
        uint64_t fp = 0;
        int rc = -1;

        *out = NULL;
        if (schema_out)
                *schema_out = NULL;
        if (len < 2 || p[0] != 0xc3 || p[1] != 0x01) {
                snprintf(errstr, errstr_size, "not Avro single-object encoding (bad magic)");
                return -1;
        }
        if (len < HEADER_LEN) {
                snprintf(errstr, errstr_size, "truncated header (%zu bytes)", len);
                return -1;
        }
        for (int i = 0; i < 8; i++)
                fp |= (uint64_t)p[2 + i] << (8 * i);
        for (size_t i = 0; r && i < r->n && !s; i++)
                if (r->v[i]->fingerprint == fp)
                        s = r->v[i];
        if (!s) {
                snprintf(errstr, errstr_size, "unknown schema fingerprint %016" PRIx64, fp);
                return -1;
        }

        /* Validate first: avro-c must only ever see well-formed bodies. */
        struct rd body = {.p = p + HEADER_LEN, .len = len - HEADER_LEN};
        if (check_body(&c, s->root, &body, 0) < 0)
                goto fail;
        if (body.pos != body.len) {
                snprintf(msg, sizeof(msg), "%zu trailing bytes after the value",
                         body.len - body.pos);
                goto fail;
        }
        if (avro_generic_value_new(s->iface, &v) != 0) {
                snprintf(msg, sizeof(msg), "cannot allocate avro value");
                goto fail;
        }
        if (!(rdr = avro_reader_memory((const char *)body.p, (int64_t)body.len)) ||
            avro_value_read(rdr, &v) != 0) {
                snprintf(msg, sizeof(msg), "avro-c read failed");
                goto fail;
        }
        if (!(*out = to_json(&c, s->root, &v, 0)))
                goto fail;
        if (schema_out)
                *schema_out = s;
        rc = 0;
fail:
        if (rc < 0)
                snprintf(errstr, errstr_size, "%s: %s", s->name, msg);
        if (rdr)
                avro_reader_free(rdr);
        if (v.iface)
                avro_value_decref(&v);
        return rc;
}
