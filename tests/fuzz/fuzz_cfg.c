/* fuzz_cfg.c - libFuzzer target: the setting parsers (address, Redis URL, DSN). */
#include "cfg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        char *s = malloc(n + 1);
        memcpy(s, d, n);
        s[n] = '\0';
        char err[256];
        struct qz_addr a;
        struct qz_redis_url u;
        qz_addr_parse(s, &a, err, sizeof(err));
        qz_redis_url_parse(s, &u, err, sizeof(err));
        qz_pg_dsn_check(s, err, sizeof(err));
        free(s);
        return 0;
}
