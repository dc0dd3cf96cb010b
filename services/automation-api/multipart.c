/* multipart.c - multipart/form-data parsing (bounded, for POST /api/tracks uploads). */
#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADER_BYTES 4096

/* Copies [s, s+n) into out (NUL-terminated); false when it does not fit. */
static bool copy(char *out, size_t out_size, const char *s, size_t n)
{
        if (n >= out_size)
                return false;
        memcpy(out, s, n);
        out[n] = '\0';
        return true;
}

bool mp_is_form(const char *ct, char *boundary, size_t boundary_size)
{
        static const char type[] = "multipart/form-data";
        if (!ct || strncasecmp(ct, type, sizeof(type) - 1) != 0)
                return false;
        const char *p = ct + sizeof(type) - 1;
        while (*p) { /* ; param=value ... */
                while (*p == ';' || *p == ' ' || *p == '\t')
                        p++;
                const char *k = p;
                while (*p && *p != '=' && *p != ';')
                        p++;
                size_t klen = (size_t)(p - k);
                if (*p != '=')
                        continue;
                p++;
                const char *v = p;
                size_t vlen;
                if (*p == '"') {
                        v = ++p;
                        while (*p && *p != '"')
                                p++;
                        vlen = (size_t)(p - v);
                        if (*p)
                                p++;
                } else {
                        while (*p && *p != ';' && *p != ' ' && *p != '\t')
                                p++;
                        vlen = (size_t)(p - v);
                }
                if (klen == 8 && strncasecmp(k, "boundary", 8) == 0)
                        return vlen >= 1 && vlen <= 70 && copy(boundary, boundary_size, v, vlen);
        }
        return false;
}

static const unsigned char *find(const unsigned char *h, size_t hlen, const void *n, size_t nlen)
{
        return nlen <= hlen ? memmem(h, hlen, n, nlen) : NULL;
}

/* name="value" (or name=value) inside a header value of length n; false when absent. */
static bool header_param(const char *v, size_t n, const char *name, char *out, size_t out_size,
                         bool *too_long)
{
        size_t nl = strlen(name);
        for (size_t i = 0; i + nl + 1 <= n; i++) {
                /* a parameter starts after ';' or whitespace; "filename" must not match "name" */
                if ((i > 0 && v[i - 1] != ';' && v[i - 1] != ' ' && v[i - 1] != '\t') ||
                    strncasecmp(v + i, name, nl) != 0 || v[i + nl] != '=')
                        continue;
                size_t s = i + nl + 1, e;
                if (s < n && v[s] == '"') {
                        s++;
                        for (e = s; e < n && v[e] != '"'; e++)
                                ;
                } else {
                        for (e = s; e < n && v[e] != ';' && v[e] != ' '; e++)
                                ;
                }
                if (!copy(out, out_size, v + s, e - s))
                        *too_long = true;
                return true;
        }
        return false;
}

/* Parses one part's header block [h, h+n): CRLF-separated "Name: value" lines. */
static int part_headers(const char *h, size_t n, struct mp_part *p, char *errstr,
                        size_t errstr_size)
{
        bool have_disposition = false, too_long = false;
        size_t i = 0;
        while (i < n) {
                const char *line = h + i;
                const char *eol = memmem(line, n - i, "\r\n", 2);
                size_t ll = eol ? (size_t)(eol - line) : n - i;
                i += ll + 2;
                const char *colon = memchr(line, ':', ll);
                if (!colon)
                        continue;
                size_t kl = (size_t)(colon - line), vs = kl + 1;
                while (vs < ll && (line[vs] == ' ' || line[vs] == '\t'))
                        vs++;
                const char *v = line + vs;
                size_t vl = ll - vs;
                if (kl == 19 && strncasecmp(line, "Content-Disposition", 19) == 0) {
                        if (vl < 9 || strncasecmp(v, "form-data", 9) != 0) {
                                snprintf(errstr, errstr_size, "a part is not form-data");
                                return -1;
                        }
                        have_disposition =
                            header_param(v, vl, "name", p->name, sizeof(p->name), &too_long);
                        header_param(v, vl, "filename", p->filename, sizeof(p->filename),
                                     &too_long);
                } else if (kl == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
                        size_t tl = 0;
                        while (tl < vl && v[tl] != ';' && v[tl] != ' ')
                                tl++;
                        if (!copy(p->ctype, sizeof(p->ctype), v, tl))
                                too_long = true;
                        for (char *c = p->ctype; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                }
        }
        if (too_long) {
                snprintf(errstr, errstr_size, "a part's name, filename or type is too long");
                return -1;
        }
        if (!have_disposition || !p->name[0]) {
                snprintf(errstr, errstr_size, "a part has no Content-Disposition name");
                return -1;
        }
        return 0;
}

int mp_parse(const void *body, size_t len, const char *boundary, struct mp_part *parts,
             size_t *nparts, char *errstr, size_t errstr_size)
{
        const unsigned char *b = body, *end = b + len;
        char delim[80]; /* "\r\n--" + boundary */
        int dl = snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
        if (dl < 5 || (size_t)dl >= sizeof(delim)) {
                snprintf(errstr, errstr_size, "bad multipart boundary");
                return -1;
        }
        *nparts = 0;
        /* The first delimiter may open the body (no CRLF before it) or follow a preamble. */
        const unsigned char *p;
        if (len >= (size_t)dl - 2 && memcmp(b, delim + 2, (size_t)dl - 2) == 0)
                p = b + dl - 2;
        else if ((p = find(b, len, delim, (size_t)dl)))
                p += dl;
        else
                goto malformed;
        for (;;) {
                /* after a delimiter: "--" ends the body, else CRLF and a part follows */
                if (end - p >= 2 && p[0] == '-' && p[1] == '-')
                        return *nparts ? 0 : (snprintf(errstr, errstr_size, "no parts"), -1);
                while (p < end && (*p == ' ' || *p == '\t')) /* transport padding */
                        p++;
                if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
                        goto malformed;
                p += 2;
                if (*nparts == MP_MAX_PARTS) {
                        snprintf(errstr, errstr_size, "more than %d parts", MP_MAX_PARTS);
                        return -1;
                }
                struct mp_part *part = &parts[*nparts];
                memset(part, 0, sizeof(*part));
                const unsigned char *hend;
                size_t hlen;
                if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') { /* no headers at all */
                        hend = p;
                        hlen = 0;
                } else {
                        size_t window = (size_t)(end - p) < MAX_HEADER_BYTES + 4
                                            ? (size_t)(end - p)
                                            : MAX_HEADER_BYTES + 4;
                        if (!(hend = find(p, window, "\r\n\r\n", 4))) {
                                snprintf(errstr, errstr_size,
                                         "a part's headers are malformed or over %d bytes",
                                         MAX_HEADER_BYTES);
                                return -1;
                        }
                        hlen = (size_t)(hend - p);
                        hend += 2; /* points at the blank line's CRLF */
                }
                if (part_headers((const char *)p, hlen, part, errstr, errstr_size) != 0)
                        return -1;
                const unsigned char *data = hend + 2;
                const unsigned char *next = find(data, (size_t)(end - data), delim, (size_t)dl);
                if (!next)
                        goto malformed;
                part->data = data;
                part->len = (size_t)(next - data);
                (*nparts)++;
                p = next + dl;
        }
malformed:
        snprintf(errstr, errstr_size, "malformed multipart body");
        return -1;
}

const char *mp_sniff_audio(const unsigned char *d, size_t n)
{
        if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WAVE", 4) == 0)
                return "wav";
        if (n >= 4 && memcmp(d, "fLaC", 4) == 0)
                return "flac";
        if (n >= 4 && memcmp(d, "OggS", 4) == 0)
                return "ogg";
        if (n >= 10 && memcmp(d, "ID3", 3) == 0)
                return "mp3";
        /* an MPEG audio frame sync: 11 set bits, layer not 00, bitrate index not 1111 */
        if (n >= 4 && d[0] == 0xFF && (d[1] & 0xE0) == 0xE0 && (d[1] & 0x06) != 0 &&
            (d[2] & 0xF0) != 0xF0)
                return "mp3";
        return NULL;
}
