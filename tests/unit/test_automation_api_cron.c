/* test_automation_api_cron.c - the scheduler's cron parser and next-fire computation, table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/automation-api/cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "YYYY-MM-DD HH:MM" in UTC -> epoch seconds */
static time_t utc(const char *s)
{
        struct tm tm = {0};
        if (sscanf(s, "%d-%d-%d %d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min) != 5)
                fail_msg("bad test time %s", s);
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        return timegm(&tm);
}

static void use_tz(const char *tz)
{
        setenv("TZ", tz, 1);
        tzset();
}

static void test_parse_errors(void **state)
{
        (void)state;
        static const struct {
                const char *expr;
                const char *err; /* substring of the message */
        } t[] = {
            {"", "expected 5 fields"},
            {"* * * *", "got 4"},
            {"* * * * * *", "got more"},
            {"60 * * * *", "minute: 60 is out of range 0-59"},
            {"* 24 * * *", "hour: 24 is out of range"},
            {"* * 0 * *", "day-of-month: 0 is out of range 1-31"},
            {"* * 32 * *", "day-of-month: 32"},
            {"* * * 0 *", "month: 0 is out of range 1-12"},
            {"* * * 13 *", "month: 13"},
            {"* * * * 8", "day-of-week: 8 is out of range 0-7"},
            {"*/0 * * * *", "minute: step 0"},
            {"*/61 * * * *", "minute: step 61"},
            {"5-1 * * * *", "runs backwards"},
            {"1,,2 * * * *", "empty list item"},
            {",1 * * * *", "empty list item"},
            {"1, * * * *", "empty list item"},
            {"a * * * *", "minute: unexpected 'a'"},
            {"* * * foo *", "month: unexpected 'foo'"},
            {"* * * * sunday", "day-of-week: unexpected"},
            {"* * * jan- *", "month: unexpected"},
            {"1-2-3 * * * *", "minute: unexpected '-3'"},
            {"*/ * * * *", "step must be a number"},
            {"*/5x * * * *", "unexpected 'x'"},
            {"** * * * *", "unexpected '*'"},
            {"99999999999 * * * *", "out of range"},
            {"-1 * * * *", "unexpected '-1'"},
            {"* * * * mon-sun", "runs backwards"}, /* sun is 0 */
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                struct cron_expr c;
                char err[256] = "";
                int rc = cron_parse(t[i].expr, &c, err, sizeof(err));
                if (rc != -1 || !strstr(err, t[i].err))
                        fail_msg("'%s': rc %d, error '%s', wanted '%s'", t[i].expr, rc, err,
                                 t[i].err);
        }
        struct cron_expr c;
        char err[64];
        assert_int_equal(cron_parse(NULL, &c, err, sizeof(err)), -1);
}

static void test_parse_fields(void **state)
{
        (void)state;
        struct cron_expr c;
        char err[256];
        assert_int_equal(cron_parse("0,15,30,45 */6 1-7 jan,JUL-sep 7", &c, err, sizeof(err)), 0);
        assert_int_equal(c.minute, (1ULL << 0) | (1ULL << 15) | (1ULL << 30) | (1ULL << 45));
        assert_int_equal(c.hour, (1u << 0) | (1u << 6) | (1u << 12) | (1u << 18));
        assert_int_equal(c.dom, 0xfeu); /* 1..7 */
        assert_int_equal(c.month, (1u << 1) | (1u << 7) | (1u << 8) | (1u << 9));
        assert_int_equal(c.dow, 1u); /* 7 = Sunday = 0 */
        assert_false(c.dom_star);
        assert_false(c.dow_star);

        assert_int_equal(cron_parse("  * * * * *  ", &c, err, sizeof(err)), 0);
        assert_int_equal(c.minute, (1ULL << 60) - 1);
        assert_int_equal(c.hour, (1u << 24) - 1);
        assert_int_equal(c.dom, 0xfffffffeu);
        assert_int_equal(c.month, 0x1ffeu);
        assert_int_equal(c.dow, 0x7fu);
        assert_true(c.dom_star && c.dow_star);

        assert_int_equal(cron_parse("10/20 1-10/3 */10 * fri-7", &c, err, sizeof(err)), 0);
        assert_int_equal(c.minute, (1ULL << 10) | (1ULL << 30) | (1ULL << 50));
        assert_int_equal(c.hour, (1u << 1) | (1u << 4) | (1u << 7) | (1u << 10));
        assert_int_equal(c.dom, (1u << 1) | (1u << 11) | (1u << 21) | (1u << 31));
        assert_int_equal(c.dow, (1u << 5) | (1u << 6) | 1u);
        assert_true(c.dom_star);
        assert_false(c.dow_star);

        assert_int_equal(cron_parse("0 0 * * SUN,Mon,tue,wed,thu,fri,SAT", &c, err, sizeof(err)),
                         0);
        assert_int_equal(c.dow, 0x7fu);
        assert_int_equal(cron_parse("0 0 * 1,2,3,4,5,6,7,8,9,10,11,12 0", &c, err, sizeof(err)), 0);
        assert_int_equal(c.month, 0x1ffeu);
}

static void test_next_utc(void **state)
{
        (void)state;
        use_tz("UTC");
        static const struct {
                const char *expr, *after, *next;
        } t[] = {
            /* the guide's five jobs plus the two of DESIGN.md */
            {"0 2 * * *", "2025-01-18 01:59", "2025-01-18 02:00"},
            {"0 2 * * *", "2025-01-18 02:00", "2025-01-19 02:00"},
            {"0 3 * * *", "2025-01-18 10:30", "2025-01-19 03:00"},
            {"0 */6 * * *", "2025-01-18 00:00", "2025-01-18 06:00"},
            {"0 */6 * * *", "2025-01-18 17:59", "2025-01-18 18:00"},
            {"0 */6 * * *", "2025-01-18 18:00", "2025-01-19 00:00"},
            {"0 4 * * 0", "2025-01-18 10:00", "2025-01-19 04:00"}, /* 2025-01-19 is a Sunday */
            {"0 4 * * 7", "2025-01-19 04:00", "2025-01-26 04:00"},
            {"0 4 * * sun", "2025-01-13 00:00", "2025-01-19 04:00"},
            {"0 5 * * *", "2025-12-31 05:00", "2026-01-01 05:00"},
            {"30 1 * * *", "2025-01-18 01:29", "2025-01-18 01:30"},
            {"*/5 * * * *", "2025-01-18 10:04", "2025-01-18 10:05"},
            {"*/5 * * * *", "2025-01-18 10:05", "2025-01-18 10:10"},
            {"*/5 * * * *", "2025-01-18 23:59", "2025-01-19 00:00"},
            /* every minute, crossing a year */
            {"* * * * *", "2024-12-31 23:59", "2025-01-01 00:00"},
            /* lists, ranges, steps */
            {"15,45 9-17/4 * * *", "2025-03-03 09:46", "2025-03-03 13:15"},
            {"15,45 9-17/4 * * *", "2025-03-03 17:45", "2025-03-04 09:15"},
            {"0 12 1-7 * mon", "2025-03-03 12:00", "2025-03-04 12:00"}, /* dom OR dow */
            {"0 12 15 * *", "2025-03-15 12:00", "2025-04-15 12:00"},
            {"0 0 * * 1-5", "2025-03-07 00:00", "2025-03-10 00:00"}, /* Fri -> Mon */
            {"0 0 * * 1-5", "2025-03-09 12:00", "2025-03-10 00:00"},
            {"0 0 */2 * *", "2025-01-31 00:00", "2025-02-01 00:00"}, /* 31 then 1 */
            /* leap day, month names, Feb 30 never */
            {"0 0 29 2 *", "2025-01-01 00:00", "2028-02-29 00:00"},
            {"0 0 29 feb *", "2024-02-28 23:00", "2024-02-29 00:00"},
            {"0 0 31 * *", "2025-04-01 00:00", "2025-05-31 00:00"},
            {"0 0 1 jan *", "2025-06-01 00:00", "2026-01-01 00:00"},
            {"59 23 31 12 *", "2025-12-31 23:58", "2025-12-31 23:59"},
            {"0 0 1 1 1", "2025-01-02 00:00", "2025-01-06 00:00"}, /* Jan 1st OR Mondays */
            {"0 0 * 1 1", "2025-01-02 00:00", "2025-01-06 00:00"}, /* Mondays in Jan */
            {"0 0 * 1 1", "2025-01-27 00:00", "2026-01-05 00:00"},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                struct cron_expr c;
                char err[256];
                if (cron_parse(t[i].expr, &c, err, sizeof(err)) != 0)
                        fail_msg("'%s': %s", t[i].expr, err);
                time_t got = cron_next(&c, utc(t[i].after));
                if (got != utc(t[i].next)) {
                        struct tm tm;
                        char buf[64] = "none";
                        if (got > 0) {
                                gmtime_r(&got, &tm);
                                strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm);
                        }
                        fail_msg("'%s' after %s: got %s, wanted %s", t[i].expr, t[i].after, buf,
                                 t[i].next);
                }
        }
        /* seconds inside a minute: next is the following whole minute */
        struct cron_expr c;
        char err[64];
        assert_int_equal(cron_parse("* * * * *", &c, err, sizeof(err)), 0);
        assert_int_equal(cron_next(&c, utc("2025-01-01 00:00") + 59), utc("2025-01-01 00:01"));
        /* never */
        assert_int_equal(cron_parse("0 0 30 2 *", &c, err, sizeof(err)), 0);
        assert_int_equal(cron_next(&c, utc("2025-01-01 00:00")), -1);
}

static void test_next_time_zone(void **state)
{
        (void)state;
        struct cron_expr c;
        char err[64];
        use_tz("America/New_York");
        /* 02:00 local is 07:00 UTC in winter */
        assert_int_equal(cron_parse("0 2 * * *", &c, err, sizeof(err)), 0);
        assert_int_equal(cron_next(&c, utc("2025-01-18 00:00")), utc("2025-01-18 07:00"));
        /* 2025-03-09: 02:00-03:00 local does not exist: no run that day */
        assert_int_equal(cron_next(&c, utc("2025-03-09 06:00")), utc("2025-03-10 06:00"));
        /* 2025-11-02: 01:30 local happens twice: fires once, at the first */
        assert_int_equal(cron_parse("30 1 * * *", &c, err, sizeof(err)), 0);
        time_t first = cron_next(&c, utc("2025-11-02 04:00"));
        assert_int_equal(first, utc("2025-11-02 05:30"));                /* 01:30 EDT */
        assert_int_equal(cron_next(&c, first), utc("2025-11-03 06:30")); /* next day, EST */
        /* hourly over the fall-back: 01:00 EDT, 01:00 EST is skipped, 02:00 EST */
        assert_int_equal(cron_parse("0 * * * *", &c, err, sizeof(err)), 0);
        assert_int_equal(cron_next(&c, utc("2025-11-02 05:00")), utc("2025-11-02 07:00"));
        use_tz("Asia/Kolkata"); /* +05:30 */
        assert_int_equal(cron_parse("0 */6 * * *", &c, err, sizeof(err)), 0);
        assert_int_equal(cron_next(&c, utc("2025-01-18 00:00")), utc("2025-01-18 00:30"));
        use_tz("UTC");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_parse_errors),
            cmocka_unit_test(test_parse_fields),
            cmocka_unit_test(test_next_utc),
            cmocka_unit_test(test_next_time_zone),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
