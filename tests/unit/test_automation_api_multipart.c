/* test_automation_api_multipart.c - the upload's multipart parser: cases, then random and mutated
 * bodies (run under ASan to check no read leaves the body). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/automation-api/multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_boundary(void **state)
{
        (void)state;
        char b[80];
        assert_true(mp_is_form("multipart/form-data; boundary=abc123", b, sizeof(b)));
        assert_string_equal(b, "abc123");
        assert_true(mp_is_form("Multipart/Form-Data;charset=x; boundary=\"q u\"", b, sizeof(b)));
        assert_string_equal(b, "q u");
        assert_false(mp_is_form("application/json", b, sizeof(b)));
        assert_false(mp_is_form(NULL, b, sizeof(b)));
        assert_false(mp_is_form("multipart/form-data", b, sizeof(b)));
        assert_false(mp_is_form("multipart/form-data; boundary=", b, sizeof(b)));
        char longb[200] = "multipart/form-data; boundary=";
        memset(longb + strlen(longb), 'x', 80);
        assert_false(mp_is_form(longb, b, sizeof(b))); /* over 70 */
}

static const char good[] = "preamble\r\n"
                           "--XyZ\r\n"
                           "Content-Disposition: form-data; name=\"metadata\"\r\n"
                           "Content-Type: application/json\r\n\r\n"
                           "{\"title\":\"t\"}\r\n"
                           "--XyZ\r\n"
                           "content-disposition: form-data; name=\"file\"; filename=\"a b.wav\"\r\n"
                           "Content-Type: Audio/WAV; x=y\r\n\r\n"
                           "RIFF\0\0\0\0WAVE--XyZ-not-a-delimiter\r\n"
                           "--XyZ--\r\nepilogue";

static void test_parse(void **state)
{
        (void)state;
        struct mp_part p[MP_MAX_PARTS];
        size_t n = 0;
        char err[256];
        assert_int_equal(mp_parse(good, sizeof(good) - 1, "XyZ", p, &n, err, sizeof(err)), 0);
        assert_int_equal(n, 2);
        assert_string_equal(p[0].name, "metadata");
        assert_string_equal(p[0].filename, "");
        assert_string_equal(p[0].ctype, "application/json");
        assert_int_equal(p[0].len, 13);
        assert_memory_equal(p[0].data, "{\"title\":\"t\"}", 13);
        assert_string_equal(p[1].name, "file");
        assert_string_equal(p[1].filename, "a b.wav");
        assert_string_equal(p[1].ctype, "audio/wav");
        assert_int_equal(p[1].len, 12 + 21);
        assert_string_equal(mp_sniff_audio(p[1].data, p[1].len), "wav");
        /* no preamble, a part without headers at all is refused (no name) */
        static const char bare[] = "--b\r\n\r\ndata\r\n--b--";
        assert_int_equal(mp_parse(bare, sizeof(bare) - 1, "b", p, &n, err, sizeof(err)), -1);
        static const char bad[][96] = {
            "",
            "--b",
            "--b--",
            "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end",
            "--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nd\r\n--b--",
            "--b\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nd\r\n--b--",
            "--bX\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nd\r\n--b--",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                err[0] = '\0';
                if (mp_parse(bad[i], strlen(bad[i]), "b", p, &n, err, sizeof(err)) != -1)
                        fail_msg("case %zu accepted", i);
                assert_true(err[0] != '\0');
        }
        /* too many parts */
        char many[4096] = "";
        for (int i = 0; i < MP_MAX_PARTS + 1; i++)
                strcat(many, "--b\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nv\r\n");
        strcat(many, "--b--");
        assert_int_equal(mp_parse(many, strlen(many), "b", p, &n, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "parts"));
        /* a name that does not fit is refused, not truncated */
        char longname[512] = "--b\r\nContent-Disposition: form-data; name=\"";
        memset(longname + strlen(longname), 'n', 100);
        strcat(longname, "\"\r\n\r\nv\r\n--b--");
        assert_int_equal(mp_parse(longname, strlen(longname), "b", p, &n, err, sizeof(err)), -1);
}

static void test_sniff(void **state)
{
        (void)state;
        static const unsigned char mp3[] = {0xFF, 0xFB, 0x90, 0x64};
        static const unsigned char notmp3[] = {0xFF, 0xFF, 0xF0, 0x00};
        assert_string_equal(mp_sniff_audio(mp3, sizeof(mp3)), "mp3");
        assert_null(mp_sniff_audio(notmp3, sizeof(notmp3)));
        assert_string_equal(mp_sniff_audio((const unsigned char *)"ID3\3\0\0\0\0\0\0", 10), "mp3");
        assert_string_equal(mp_sniff_audio((const unsigned char *)"fLaC", 4), "flac");
        assert_string_equal(mp_sniff_audio((const unsigned char *)"OggS", 4), "ogg");
        assert_null(mp_sniff_audio((const unsigned char *)"RIFF", 4));
        assert_null(mp_sniff_audio((const unsigned char *)"hello world", 11));
        assert_null(mp_sniff_audio(NULL, 0));
}

/* Random bytes and single-byte mutations of a good body, each in an exact-size heap copy:
 * a read past the end is an ASan error. */
static void test_fuzz(void **state)
{
        (void)state;
        struct mp_part p[MP_MAX_PARTS];
        size_t n;
        char err[256];
        unsigned seed = 12345;
        static const char alphabet[] = "-\r\nXyZ\"=;: abcform-dataname";
        for (int i = 0; i < 200000; i++) {
                size_t len;
                unsigned char *buf;
                seed = seed * 1103515245u + 12345u;
                if (i % 2) {
                        len = sizeof(good) - 1;
                        buf = malloc(len);
                        memcpy(buf, good, len);
                        for (int k = 0; k < 1 + (int)(seed % 4); k++) {
                                seed = seed * 1103515245u + 12345u;
                                buf[(seed >> 8) % len] = (unsigned char)(seed >> 16);
                        }
                        len = (seed >> 4) % 3 == 0 ? (seed >> 12) % (len + 1) : len; /* cut */
                } else {
                        len = (seed >> 8) % 200;
                        buf = malloc(len ? len : 1);
                        for (size_t k = 0; k < len; k++) {
                                seed = seed * 1103515245u + 12345u;
                                buf[k] =
                                    (unsigned char)alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
                        }
                }
                if (mp_parse(buf, len, "XyZ", p, &n, err, sizeof(err)) == 0) {
                        assert_true(n >= 1 && n <= MP_MAX_PARTS);
                        for (size_t k = 0; k < n; k++) {
                                assert_true(p[k].data >= buf && p[k].data + p[k].len <= buf + len);
                                mp_sniff_audio(p[k].data, p[k].len);
                        }
                }
                free(buf);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_boundary), cmocka_unit_test(test_parse),
            cmocka_unit_test(test_sniff), cmocka_unit_test(test_fuzz)};
        return cmocka_run_group_tests(tests, NULL, NULL);
}
