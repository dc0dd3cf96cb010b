/* fuzz_jwt.c - libFuzzer target: bearer header parsing and HS256 verification. */
#include "auth.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        char *s = malloc(n + 1);
        memcpy(s, d, n);
        s[n] = '\0';
        struct qz_auth_claims c;
        char err[256];
        const char *tok = qz_auth_bearer(s);
        qz_auth_verify(tok ? tok : s, "fuzz-secret", 1780000000, &c, err, sizeof(err));
        free(s);
        return 0;
}
