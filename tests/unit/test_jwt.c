/* test_jwt.c - HS256 JWT verification (auth.h): pinned alg, exp, claims; bearer; secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "auth.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "test-secret"
#define NOW    1780000000LL
#define SUB    "11111111-1111-4111-8111-111111111111"

/* Signs payload (JSON object text) with libjwt directly, any algorithm. */
static char *make_token(jwt_alg_t alg, const char *secret, const char *payload)
{
        jwt_t *jwt = NULL;
        char *tok;

        assert_int_equal(jwt_new(&jwt), 0);
        assert_int_equal(jwt_add_grants_json(jwt, payload), 0);
        assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)secret, (int)strlen(secret)),
                         0);
        tok = jwt_encode_str(jwt);
        assert_non_null(tok);
        jwt_free(jwt);
        return tok;
}

static char *b64url(const char *s)
{
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        size_t n = strlen(s), o = 0;
        char *out = malloc(n * 4 / 3 + 4);
        unsigned acc = 0;
        int bits = 0;

        for (size_t i = 0; i < n; i++) {
                acc = (acc << 8) | (unsigned char)s[i];
                bits += 8;
                while (bits >= 6) {
                        bits -= 6;
                        out[o++] = tbl[(acc >> bits) & 63];
                }
        }
        if (bits)
                out[o++] = tbl[(acc << (6 - bits)) & 63];
        out[o] = '\0';
        return out;
}

/* header.payload.sig assembled by hand (for alg none and odd headers). */
static char *hand_token(const char *header, const char *payload, const char *sig)
{
        char *h = b64url(header), *p = b64url(payload);
        char *t = malloc(strlen(h) + strlen(p) + strlen(sig) + 3);
        sprintf(t, "%s.%s.%s", h, p, sig);
        free(h);
        free(p);
        return t;
}

#define VALID_PAYLOAD "{\"sub\":\"" SUB "\",\"role\":\"admin\",\"exp\":1780000100}"

static void test_valid(void **state)
{
        (void)state;
        struct qz_auth_claims c;
        char err[128];
        char *t = make_token(JWT_ALG_HS256, SECRET, VALID_PAYLOAD);

        assert_int_equal(qz_auth_verify(t, SECRET, NOW, &c, err, sizeof(err)), QZ_AUTH_OK);
        assert_string_equal(c.sub, SUB);
        assert_int_equal(c.role, QZ_AUTH_ROLE_ADMIN);
        assert_int_equal(c.exp, 1780000100);
        free(t);
}

static void test_sign_roundtrip(void **state)
{
        (void)state;
        static const char *roles[] = {"user", "admin", "service"};
        struct qz_auth_claims c;
        char err[128];

        for (int i = 0; i < 3; i++) {
                char *t = qz_auth_sign(SECRET, SUB, roles[i], NOW + 60, err, sizeof(err));
                assert_non_null(t);
                assert_int_equal(qz_auth_verify(t, SECRET, NOW, &c, err, sizeof(err)), QZ_AUTH_OK);
                assert_string_equal(qz_auth_role_name(c.role), roles[i]);
                assert_int_equal(c.exp, NOW + 60);
                /* the same token is rejected once expired and under another secret */
                assert_int_equal(qz_auth_verify(t, SECRET, NOW + 60, &c, err, sizeof(err)),
                                 QZ_AUTH_EXPIRED);
                assert_int_equal(qz_auth_verify(t, "other", NOW, &c, err, sizeof(err)),
                                 QZ_AUTH_BAD_SIGNATURE);
                free(t);
        }
        assert_null(qz_auth_sign(SECRET, SUB, "root", NOW, err, sizeof(err)));
        assert_null(qz_auth_sign("", SUB, "user", NOW, err, sizeof(err)));
}

struct jcase {
        const char *name;
        jwt_alg_t alg;      /* JWT_ALG_NONE: use hand-made header/sig below */
        const char *secret; /* for signed cases */
        const char *payload;
        const char *header; /* hand-made only */
        const char *sig;    /* hand-made only */
        const char *raw;    /* if set, used verbatim as the token */
        enum qz_auth_err want;
        const char *msg; /* substring of errstr */
};

static const struct jcase cases[] = {
    {"expired", JWT_ALG_HS256, SECRET, "{\"sub\":\"" SUB "\",\"role\":\"user\",\"exp\":1779999999}",
     NULL, NULL, NULL, QZ_AUTH_EXPIRED, "expired"},
    {"expires exactly now", JWT_ALG_HS256, SECRET,
     "{\"sub\":\"" SUB "\",\"role\":\"user\",\"exp\":1780000000}", NULL, NULL, NULL,
     QZ_AUTH_EXPIRED, "expired"},
    {"missing exp", JWT_ALG_HS256, SECRET, "{\"sub\":\"" SUB "\",\"role\":\"user\"}", NULL, NULL,
     NULL, QZ_AUTH_BAD_CLAIMS, "exp"},
    {"string exp", JWT_ALG_HS256, SECRET,
     "{\"sub\":\"" SUB "\",\"role\":\"user\",\"exp\":\"1780000100\"}", NULL, NULL, NULL,
     QZ_AUTH_BAD_CLAIMS, "exp"},
    {"bad signature", JWT_ALG_HS256, "another-secret", VALID_PAYLOAD, NULL, NULL, NULL,
     QZ_AUTH_BAD_SIGNATURE, "signature"},
    {"HS512 under same secret", JWT_ALG_HS512, SECRET, VALID_PAYLOAD, NULL, NULL, NULL,
     QZ_AUTH_WRONG_ALG, "HS256"},
    {"HS384 under same secret", JWT_ALG_HS384, SECRET, VALID_PAYLOAD, NULL, NULL, NULL,
     QZ_AUTH_WRONG_ALG, "HS256"},
    {"missing role", JWT_ALG_HS256, SECRET, "{\"sub\":\"" SUB "\",\"exp\":1780000100}", NULL, NULL,
     NULL, QZ_AUTH_BAD_CLAIMS, "role"},
    {"unknown role", JWT_ALG_HS256, SECRET,
     "{\"sub\":\"" SUB "\",\"role\":\"root\",\"exp\":1780000100}", NULL, NULL, NULL,
     QZ_AUTH_BAD_CLAIMS, "role"},
    {"missing sub", JWT_ALG_HS256, SECRET, "{\"role\":\"user\",\"exp\":1780000100}", NULL, NULL,
     NULL, QZ_AUTH_BAD_CLAIMS, "sub"},
    {"alg none, no signature", JWT_ALG_NONE, NULL, VALID_PAYLOAD,
     "{\"alg\":\"none\",\"typ\":\"JWT\"}", "", NULL, QZ_AUTH_WRONG_ALG, "none"},
    {"alg None with a signature", JWT_ALG_NONE, NULL, VALID_PAYLOAD,
     "{\"alg\":\"None\",\"typ\":\"JWT\"}", "AAAA", NULL, QZ_AUTH_WRONG_ALG, "HS256"},
    {"no alg", JWT_ALG_NONE, NULL, VALID_PAYLOAD, "{\"typ\":\"JWT\"}", "AAAA", NULL,
     QZ_AUTH_WRONG_ALG, "missing"},
    {"HS256 header, forged signature", JWT_ALG_NONE, NULL, VALID_PAYLOAD,
     "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "c2lnbmF0dXJl", NULL, QZ_AUTH_BAD_SIGNATURE,
     "signature"},
    {"HS256 header, empty signature", JWT_ALG_NONE, NULL, VALID_PAYLOAD,
     "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "", NULL, QZ_AUTH_BAD_SIGNATURE, "signature"},
    {"garbage", 0, NULL, NULL, NULL, NULL, "not-a-token", QZ_AUTH_MALFORMED, "malformed"},
    {"two parts", 0, NULL, NULL, NULL, NULL, "eyJhbGciOiJIUzI1NiJ9.e30", QZ_AUTH_MALFORMED,
     "malformed"},
    {"four parts", 0, NULL, NULL, NULL, NULL, "a.b.c.d", QZ_AUTH_MALFORMED, "malformed"},
    {"bad base64", 0, NULL, NULL, NULL, NULL, "e$$.e30.sig", QZ_AUTH_MALFORMED, "malformed"},
    {"payload not an object", JWT_ALG_NONE, NULL, "[1,2]", "{\"alg\":\"HS256\"}", "AAAA", NULL,
     QZ_AUTH_MALFORMED, "malformed"},
    {"empty", 0, NULL, NULL, NULL, NULL, "", QZ_AUTH_MISSING, "missing"},
};

static void test_rejections(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct jcase *k = &cases[i];
                struct qz_auth_claims c;
                char err[128] = "";
                char *t;

                if (k->raw)
                        t = strdup(k->raw);
                else if (k->header)
                        t = hand_token(k->header, k->payload, k->sig);
                else
                        t = make_token(k->alg, k->secret, k->payload);
                enum qz_auth_err got = qz_auth_verify(t, SECRET, NOW, &c, err, sizeof(err));
                if (got != k->want || !strstr(err, k->msg))
                        fail_msg("case '%s': got %d (%s), want %d (%s)", k->name, got, err, k->want,
                                 k->msg);
                free(t);
        }
        struct qz_auth_claims c;
        char err[128];
        assert_int_equal(qz_auth_verify(NULL, SECRET, NOW, &c, err, sizeof(err)), QZ_AUTH_MISSING);
        /* an empty secret must never mean "skip the signature check" */
        char *t = make_token(JWT_ALG_HS256, SECRET, VALID_PAYLOAD);
        assert_int_not_equal(qz_auth_verify(t, "", NOW, &c, err, sizeof(err)), QZ_AUTH_OK);
        free(t);
}

static void test_bearer(void **state)
{
        (void)state;
        static const struct {
                const char *in, *want;
        } b[] = {
            {"Bearer abc.def.ghi", "abc.def.ghi"},
            {"bearer   tok", "tok"},
            {"  BEARER\ttok", "tok"},
            {"Bearer", NULL},
            {"Bearer ", NULL},
            {"Basic dXNlcjpwYXNz", NULL},
            {"Bearertok", NULL},
            {"", NULL},
            {NULL, NULL},
        };
        for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
                const char *got = qz_auth_bearer(b[i].in);
                if (b[i].want)
                        assert_string_equal(got, b[i].want);
                else
                        assert_null(got);
        }
}

static void test_secret_equal(void **state)
{
        (void)state;
        assert_true(qz_auth_secret_equal("dev-worker-secret", "dev-worker-secret"));
        assert_false(qz_auth_secret_equal("dev-worker-secret", "dev-worker-secreT"));
        assert_false(qz_auth_secret_equal("dev-worker-secret", "dev-worker-secret2"));
        assert_false(qz_auth_secret_equal("dev-worker-secret2", "dev-worker-secret"));
        assert_false(qz_auth_secret_equal("", "x"));
        assert_true(qz_auth_secret_equal("", ""));
        assert_false(qz_auth_secret_equal(NULL, "x"));
        assert_false(qz_auth_secret_equal(NULL, NULL));
}

static void test_roles(void **state)
{
        (void)state;
        enum qz_auth_role r;
        assert_int_equal(qz_auth_role_parse("service", &r), 0);
        assert_int_equal(r, QZ_AUTH_ROLE_SERVICE);
        assert_int_equal(qz_auth_role_parse("Admin", &r), -1);
        assert_int_equal(qz_auth_role_parse(NULL, &r), -1);
        assert_string_equal(qz_auth_role_name(QZ_AUTH_ROLE_USER), "user");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_valid),        cmocka_unit_test(test_sign_roundtrip),
            cmocka_unit_test(test_rejections),   cmocka_unit_test(test_bearer),
            cmocka_unit_test(test_secret_equal), cmocka_unit_test(test_roles),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
