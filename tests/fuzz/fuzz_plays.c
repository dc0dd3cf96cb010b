/* fuzz_plays.c - libFuzzer target: POST /v1/plays body parsing and validation,
 * as JSON and as NDJSON (first byte chooses); the scanner (plays_parse) must
 * answer exactly as the jansson reference does. */
#include "../../services/play-ingestor/plays.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        if (n < 1)
                return 0;
        struct plays_rules rules = {.now_ms = 1780000000000LL,
                                    .max_future_ms = 300000,
                                    .horizon_ms = 365LL * 86400000,
                                    .max_items = 500};
        struct plays_batch a, b;
        char ea[256] = "", eb[256] = "";
        const char *body = (const char *)d + 1;
        int ra = plays_parse(body, n - 1, d[0] & 1, &rules, &a, ea, sizeof(ea));
        int rb = plays_parse_reference(body, n - 1, d[0] & 1, &rules, &b, eb, sizeof(eb));
        if (ra != rb || (ra != 0 && strcmp(ea, eb) != 0))
                abort();
        if (ra != 0)
                return 0;
        if (a.n != b.n)
                abort();
        for (size_t i = 0; i < a.n; i++) {
                struct plays_item *x = &a.items[i], *y = &b.items[i];
                if (x->ok != y->ok)
                        abort();
                if (!x->ok) {
                        if (strcmp(x->error, y->error) != 0 || strcmp(x->reason, y->reason) != 0)
                                abort();
                        continue;
                }
                if (x->play.event_id_generated != y->play.event_id_generated)
                        abort();
                if (x->play.event_id_generated)
                        memcpy(x->play.event_id, y->play.event_id, sizeof(x->play.event_id));
                if (memcmp(&x->play, &y->play, sizeof(x->play)) != 0)
                        abort();
        }
        plays_batch_free(&a);
        plays_batch_free(&b);
        return 0;
}
