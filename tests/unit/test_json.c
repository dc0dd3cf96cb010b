/* test_json.c - json.h: typed getters with field-naming errors, RFC 3339 times, UUIDs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "json.h"

#include <string.h>

static void test_times(void **state)
{
        (void)state;
        static const struct {
                const char *in;
                int ok;
                long long ms;
        } t[] = {
            {"1970-01-01T00:00:00Z", 1, 0},
            {"2024-02-29T12:34:56.789Z", 1, 1709210096789LL},
            {"2024-02-29t12:34:56.7z", 1, 1709210096700LL},
            {"2024-02-29 12:34:56.789123Z", 1, 1709210096789LL},
            {"2024-03-01T00:00:00+02:00", 1, 1709244000000LL},
            {"2024-02-29T22:00:00-02:00", 1, 1709251200000LL},
            {"1969-12-31T23:59:59.999Z", 1, -1},
            {"2016-12-31T23:59:60Z", 1, 1483228800000LL},
            {"2023-02-29T00:00:00Z", 0, 0},
            {"2024-13-01T00:00:00Z", 0, 0},
            {"2024-01-01T24:00:00Z", 0, 0},
            {"2024-01-01T00:00:00", 0, 0},
            {"2024-01-01T00:00:00.Z", 0, 0},
            {"2024-01-01T00:00:00Zjunk", 0, 0},
            {"2024-1-01T00:00:00Z", 0, 0},
            {"yesterday", 0, 0},
            {"", 0, 0},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                int64_t ms = 12345;
                char err[128] = "";
                int rc = qz_time_parse(t[i].in, &ms, err, sizeof(err));
                if (t[i].ok) {
                        if (rc != 0 || ms != t[i].ms)
                                fail_msg("'%s': rc %d ms %lld, want %lld", t[i].in, rc,
                                         (long long)ms, t[i].ms);
                } else if (rc != -1 || !strstr(err, "RFC 3339")) {
                        fail_msg("'%s' was accepted", t[i].in);
                }
        }
}

static void test_time_format(void **state)
{
        (void)state;
        char buf[32];
        int64_t back;
        char err[128];
        static const long long ms[] = {0, 1709210096789LL, -1, 253402300799999LL, 951782400000LL};
        static const char *want[] = {"1970-01-01T00:00:00.000Z", "2024-02-29T12:34:56.789Z",
                                     "1969-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z",
                                     "2000-02-29T00:00:00.000Z"};
        for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
                assert_int_equal(qz_time_format(ms[i], buf, sizeof(buf)), 0);
                assert_string_equal(buf, want[i]);
                assert_int_equal(qz_time_parse(buf, &back, err, sizeof(err)), 0);
                assert_int_equal(back, ms[i]);
        }
        assert_int_equal(qz_time_format(253402300800000LL, buf, sizeof(buf)), -1); /* year 10000 */
        assert_true(qz_time_now_ms() > 1700000000000LL);
}

static void test_uuid(void **state)
{
        (void)state;
        char u[QZ_UUID_STR_LEN + 1], v[QZ_UUID_STR_LEN + 1];

        assert_true(qz_uuid_valid("11111111-1111-4111-8111-111111111111"));
        assert_true(qz_uuid_valid("ABCDEF01-2345-6789-abcd-ef0123456789"));
        assert_false(qz_uuid_valid("11111111-1111-4111-8111-11111111111"));
        assert_false(qz_uuid_valid("11111111-1111-4111-8111-1111111111111"));
        assert_false(qz_uuid_valid("11111111x1111-4111-8111-111111111111"));
        assert_false(qz_uuid_valid("g1111111-1111-4111-8111-111111111111"));
        assert_false(qz_uuid_valid(""));
        assert_false(qz_uuid_valid(NULL));
        qz_uuid_generate(u);
        qz_uuid_generate(v);
        assert_true(qz_uuid_valid(u));
        assert_int_equal(u[14], '4'); /* version 4 */
        assert_string_not_equal(u, v);
}

static void test_getters(void **state)
{
        (void)state;
        char err[128];
        const char *s = NULL;
        int64_t i = 0;
        double d = 0;
        bool b = false;
        const char *doc = "{\"name\":\"x\",\"n\":42,\"r\":1.5,\"flag\":true,\"nul\":null,"
                          "\"id\":\"11111111-1111-4111-8111-111111111111\",\"bad_id\":\"nope\","
                          "\"at\":\"2024-02-29T12:34:56.789Z\"}";
        json_t *o = qz_json_parse_object(doc, strlen(doc), err, sizeof(err));
        assert_non_null(o);

        assert_int_equal(qz_json_get_string(o, "name", true, &s, err, sizeof(err)), 0);
        assert_string_equal(s, "x");
        assert_int_equal(qz_json_get_string(o, "n", true, &s, err, sizeof(err)), -1);
        assert_string_equal(err, "field 'n' must be a string");
        assert_int_equal(qz_json_get_string(o, "missing", true, &s, err, sizeof(err)), -1);
        assert_string_equal(err, "field 'missing' is required");
        assert_int_equal(qz_json_get_string(o, "nul", false, &s, err, sizeof(err)), 1);
        assert_int_equal(qz_json_get_int(o, "n", true, &i, err, sizeof(err)), 0);
        assert_int_equal(i, 42);
        assert_int_equal(qz_json_get_int(o, "r", true, &i, err, sizeof(err)), -1);
        assert_string_equal(err, "field 'r' must be an integer");
        assert_int_equal(qz_json_get_number(o, "r", true, &d, err, sizeof(err)), 0);
        assert_true(d == 1.5);
        assert_int_equal(qz_json_get_number(o, "n", true, &d, err, sizeof(err)), 0);
        assert_true(d == 42.0);
        assert_int_equal(qz_json_get_bool(o, "flag", true, &b, err, sizeof(err)), 0);
        assert_true(b);
        assert_int_equal(qz_json_get_bool(o, "n", false, &b, err, sizeof(err)), -1);
        assert_int_equal(qz_json_get_uuid(o, "id", true, &s, err, sizeof(err)), 0);
        assert_int_equal(qz_json_get_uuid(o, "bad_id", true, &s, err, sizeof(err)), -1);
        assert_string_equal(err, "field 'bad_id' must be a UUID");
        assert_int_equal(qz_json_get_time(o, "at", true, &i, err, sizeof(err)), 0);
        assert_int_equal(i, 1709210096789LL);
        assert_int_equal(qz_json_get_time(o, "name", true, &i, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "field 'name' must be an RFC 3339 time"));

        static const char *const known[] = {"name", "n", "r", "flag", "nul", "id", "bad_id", "at"};
        assert_int_equal(qz_json_check_keys(o, known, 8, err, sizeof(err)), 0);
        assert_int_equal(qz_json_check_keys(o, known, 7, err, sizeof(err)), -1);
        assert_string_equal(err, "unknown field 'at' (known: name, n, r, flag, nul, id, bad_id)");
        char small[24]; /* a short buffer cuts the message, never overruns */
        assert_int_equal(qz_json_check_keys(o, known, 1, small, sizeof(small)), -1);
        assert_string_equal(small, "unknown field 'n' (know");
        json_decref(o);

        assert_null(qz_json_parse_object("[1]", 3, err, sizeof(err)));
        assert_string_equal(err, "expected a JSON object");
        assert_null(qz_json_parse_object("{\"a\":", 5, err, sizeof(err)));
        assert_non_null(strstr(err, "invalid JSON"));
        json_t *any = qz_json_parse("[1]", 3, err, sizeof(err));
        assert_true(json_is_array(any));
        json_decref(any);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_times),
            cmocka_unit_test(test_time_format),
            cmocka_unit_test(test_uuid),
            cmocka_unit_test(test_getters),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
