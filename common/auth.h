/* auth.h - bearer-token auth: HS256 JWT verify/sign, shared-secret comparison.
 *
 * (Named auth.h, not jwt.h, so it does not shadow libjwt's <jwt.h> under -Icommon.)
 *
 * libjwt 1.10 verifies the signature with whatever HMAC algorithm the token
 * names and never looks at `exp`, so qz_auth_verify reads the raw header
 * itself, accepts only {"alg":"HS256"}, refuses `none`, and checks `exp`
 * against the caller's clock. Required claims: sub (string), role (one of
 * user/admin/service), exp (integer seconds since the epoch).
 * Every function is thread-safe (no shared state). */
#ifndef QZ_AUTH_H
#define QZ_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum qz_auth_err {
        QZ_AUTH_OK = 0,
        QZ_AUTH_MISSING,       /* no token / empty header */
        QZ_AUTH_MALFORMED,     /* not three base64url parts of JSON */
        QZ_AUTH_WRONG_ALG,     /* alg is not HS256 (none, HS384, RS256, ...) */
        QZ_AUTH_BAD_SIGNATURE, /* HS256 signature does not match the secret */
        QZ_AUTH_EXPIRED,       /* exp <= now */
        QZ_AUTH_BAD_CLAIMS,    /* exp/sub/role missing or of the wrong type, unknown role */
};

enum qz_auth_role { QZ_AUTH_ROLE_USER, QZ_AUTH_ROLE_ADMIN, QZ_AUTH_ROLE_SERVICE };

struct qz_auth_claims {
        char sub[128];
        enum qz_auth_role role;
        int64_t exp; /* seconds since the epoch */
};

/* Verifies token against secret at time now (seconds since the epoch).
 * Returns QZ_AUTH_OK and fills *out, or an error code with a short human
 * message in errstr suitable for a 401 body ("token expired"). */
enum qz_auth_err qz_auth_verify(const char *token, const char *secret, int64_t now,
                                struct qz_auth_claims *out, char *errstr, size_t errstr_size);

/* Signs {"sub","role","exp"} with HS256. Returns a malloc'd token (caller
 * frees) or NULL with errstr. role must be "user", "admin" or "service". */
char *qz_auth_sign(const char *secret, const char *sub, const char *role, int64_t exp, char *errstr,
                   size_t errstr_size);

/* "user"/"admin"/"service" <-> enum. parse returns 0 or -1. */
const char *qz_auth_role_name(enum qz_auth_role role);
int qz_auth_role_parse(const char *s, enum qz_auth_role *out);

/* From an Authorization header value "Bearer <token>" (scheme
 * case-insensitive, surrounding spaces ignored): a pointer into header_value
 * at the token, or NULL if header_value is NULL or not a bearer credential.
 * The token runs to the end of the string (trailing spaces are not trimmed
 * away from it, they make it malformed). */
const char *qz_auth_bearer(const char *header_value);

/* Compares two NUL-terminated strings in time that depends only on their
 * lengths, not on where they first differ (for shared secrets such as
 * WORKER_SECRET). NULL never equals anything. */
bool qz_auth_secret_equal(const char *a, const char *b);

#endif
