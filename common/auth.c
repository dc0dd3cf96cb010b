/* auth.c - bearer-token auth: HS256 JWT verify/sign, shared-secret comparison.
 *
 * The header and payload are decoded here with jansson before libjwt sees
 * the token: the algorithm is judged on the raw header (libjwt would happily
 * verify HS384/HS512 under the same secret), and claims are read with their
 * JSON types (jwt_get_grant_int cannot tell 0 from missing). libjwt then
 * checks the signature. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *role_names[] = {"user", "admin", "service"};

const char *qz_auth_role_name(enum qz_auth_role role)
{
        if ((unsigned)role >= sizeof(role_names) / sizeof(role_names[0]))
                return "unknown";
        return role_names[role];
}

int qz_auth_role_parse(const char *s, enum qz_auth_role *out)
{
        for (size_t i = 0; s && i < sizeof(role_names) / sizeof(role_names[0]); i++) {
                if (strcmp(s, role_names[i]) == 0) {
                        *out = (enum qz_auth_role)i;
                        return 0;
                }
        }
        return -1;
}

static int b64url_value(int c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '-')
                return 62;
        if (c == '_')
                return 63;
        return -1;
}

/* Decodes unpadded base64url of length n into a malloc'd NUL-terminated
 * buffer; NULL on bad input. */
static char *b64url_decode(const char *s, size_t n, size_t *out_len)
{
        char *out = NULL;
        size_t o = 0;
        unsigned acc = 0;
        int bits = 0;

        if (n % 4 == 1)
                return NULL;
        out = malloc(n * 3 / 4 + 2);
        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                int v = b64url_value((unsigned char)s[i]);
                if (v < 0)
                        goto fail;
                acc = (acc << 6) | (unsigned)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (char)((acc >> bits) & 0xff);
                }
        }
        out[o] = '\0';
        *out_len = o;
        return out;
fail:
        free(out);
        return NULL;
}

static json_t *decode_part(const char *s, size_t n)
{
        size_t len = 0;
        char *raw = b64url_decode(s, n, &len);
        json_t *v = NULL;

        if (!raw)
                return NULL;
        v = json_loadb(raw, len, 0, NULL);
        free(raw);
        if (v && !json_is_object(v)) {
                json_decref(v);
                return NULL;
        }
        return v;
}

enum qz_auth_err qz_auth_verify(const char *token, const char *secret, int64_t now,
                                struct qz_auth_claims *out, char *errstr, size_t errstr_size)
{
        enum qz_auth_err rc = QZ_AUTH_MALFORMED;
        json_t *header = NULL, *payload = NULL;
        jwt_t *jwt = NULL;
        const char *dot1, *dot2, *alg;
        json_t *exp, *sub, *role;
        enum qz_auth_role r;

        if (!token || !*token) {
                snprintf(errstr, errstr_size, "missing token");
                return QZ_AUTH_MISSING;
        }
        dot1 = strchr(token, '.');
        dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
        if (!dot2 || strchr(dot2 + 1, '.')) {
                snprintf(errstr, errstr_size, "malformed token");
                goto fail;
        }
        header = decode_part(token, (size_t)(dot1 - token));
        payload = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
        if (!header || !payload) {
                snprintf(errstr, errstr_size, "malformed token");
                goto fail;
        }
        alg = json_string_value(json_object_get(header, "alg"));
        if (!alg || strcmp(alg, "HS256") != 0) {
                rc = QZ_AUTH_WRONG_ALG;
                snprintf(errstr, errstr_size, "token algorithm must be HS256, not %.16s",
                         alg ? alg : "(missing)");
                goto fail;
        }
        if (!secret || !*secret) {
                /* An empty key would make libjwt skip the signature check. */
                rc = QZ_AUTH_BAD_SIGNATURE;
                snprintf(errstr, errstr_size, "no secret configured");
                goto fail;
        }
        if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 ||
            jwt_get_alg(jwt) != JWT_ALG_HS256) {
                rc = QZ_AUTH_BAD_SIGNATURE;
                snprintf(errstr, errstr_size, "bad token signature");
                goto fail;
        }
        rc = QZ_AUTH_BAD_CLAIMS;
        exp = json_object_get(payload, "exp");
        sub = json_object_get(payload, "sub");
        role = json_object_get(payload, "role");
        if (!json_is_integer(exp)) {
                snprintf(errstr, errstr_size, "token has no integer exp claim");
                goto fail;
        }
        if (!json_is_string(sub) || json_string_length(sub) == 0 ||
            json_string_length(sub) >= sizeof(out->sub)) {
                snprintf(errstr, errstr_size, "token has no valid sub claim");
                goto fail;
        }
        if (!json_is_string(role) || qz_auth_role_parse(json_string_value(role), &r) != 0) {
                snprintf(errstr, errstr_size, "token role must be user, admin or service");
                goto fail;
        }
        if ((int64_t)json_integer_value(exp) <= now) {
                rc = QZ_AUTH_EXPIRED;
                snprintf(errstr, errstr_size, "token expired");
                goto fail;
        }
        memcpy(out->sub, json_string_value(sub), json_string_length(sub) + 1);
        out->role = r;
        out->exp = (int64_t)json_integer_value(exp);
        rc = QZ_AUTH_OK;
fail:
        if (jwt)
                jwt_free(jwt);
        json_decref(header);
        json_decref(payload);
        return rc;
}

char *qz_auth_sign(const char *secret, const char *sub, const char *role, int64_t exp, char *errstr,
                   size_t errstr_size)
{
        jwt_t *jwt = NULL;
        char *enc = NULL, *token = NULL;
        enum qz_auth_role r;

        if (!secret || !*secret || !sub || !*sub) {
                snprintf(errstr, errstr_size, "secret and sub must be non-empty");
                return NULL;
        }
        if (qz_auth_role_parse(role, &r) != 0) {
                snprintf(errstr, errstr_size, "role must be user, admin or service");
                return NULL;
        }
        if (jwt_new(&jwt) != 0 || jwt_add_grant(jwt, "sub", sub) != 0 ||
            jwt_add_grant(jwt, "role", role) != 0 ||
            jwt_add_grant_int(jwt, "exp", (long)exp) != 0 ||
            jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) !=
                0) {
                snprintf(errstr, errstr_size, "jwt: cannot build token");
                goto fail;
        }
        enc = jwt_encode_str(jwt);
        if (!enc) {
                snprintf(errstr, errstr_size, "jwt: cannot encode token: %s", strerror(errno));
                goto fail;
        }
        token = enc;
        enc = NULL; /* now owned by the caller */
fail:
        if (enc)
                free(enc); /* libjwt 1.10 allocates with malloc and has no jwt_free_str */
        if (jwt)
                jwt_free(jwt);
        return token;
}

const char *qz_auth_bearer(const char *v)
{
        if (!v)
                return NULL;
        while (*v == ' ' || *v == '\t')
                v++;
        if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
                return NULL;
        v += 6;
        while (*v == ' ' || *v == '\t')
                v++;
        return *v ? v : NULL;
}

bool qz_auth_secret_equal(const char *a, const char *b)
{
        size_t la, lb;
        unsigned char diff;

        if (!a || !b)
                return false;
        la = strlen(a);
        lb = strlen(b);
        /* Walk b's full length whatever a holds so the time depends on the
         * lengths only; a length mismatch still fails at the end. */
        diff = la != lb;
        for (size_t i = 0; i < lb; i++)
                diff |= (unsigned char)(i < la ? a[i] : 0) ^ (unsigned char)b[i];
        return diff == 0;
}
