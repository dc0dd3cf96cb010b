/* fuzz_plays.c - libFuzzer target: POST /v1/plays body parsing and validation,
 * as JSON and as NDJSON (first byte chooses). */
#include "../../services/play-ingestor/plays.h"

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        if (n < 1)
                return 0;
        struct plays_rules rules = {.now_ms = 1780000000000LL,
                                    .max_future_ms = 300000,
                                    .horizon_ms = 365LL * 86400000,
                                    .max_items = 500};
        struct plays_batch b;
        char err[256];
        if (plays_parse((const char *)d + 1, n - 1, d[0] & 1, &rules, &b, err, sizeof(err)) == 0)
                plays_batch_free(&b);
        return 0;
}
