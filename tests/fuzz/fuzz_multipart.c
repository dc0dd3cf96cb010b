/* fuzz_multipart.c - libFuzzer target: the automation-api's multipart/form-data parser
 * (POST /api/tracks uploads). The first line of the input is the Content-Type. */
#include "../../services/automation-api/multipart.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
        const unsigned char *nl = memchr(d, '\n', n);
        if (!nl || nl - d > 200)
                return 0;
        char ctype[256], boundary[80], err[256];
        memcpy(ctype, d, (size_t)(nl - d));
        ctype[nl - d] = '\0';
        if (!mp_is_form(ctype, boundary, sizeof(boundary)))
                return 0;
        struct mp_part parts[MP_MAX_PARTS];
        size_t nparts = 0;
        const unsigned char *body = nl + 1;
        size_t len = n - (size_t)(body - d);
        if (mp_parse(body, len, boundary, parts, &nparts, err, sizeof(err)) == 0) {
                for (size_t i = 0; i < nparts; i++) {
                        /* parts must lie inside the body */
                        if (parts[i].data < body || parts[i].data + parts[i].len > body + len)
                                __builtin_trap();
                        mp_sniff_audio(parts[i].data, parts[i].len);
                }
        }
        return 0;
}
