/* cron.c - 5-field cron expressions: parsing and the next fire time. */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct field_spec {
        const char *name;
        int min, max;
        const char *const *names; /* names[i] is value min + i; NULL = numbers only */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const struct field_spec specs[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, dow_names},
};

/* One value: a number or (where the field has them) a three-letter name. */
static int parse_value(const struct field_spec *f, const char **p, int *out, char *errstr,
                       size_t errstr_size)
{
        const char *s = *p;
        if (isdigit((unsigned char)*s)) {
                long v = 0;
                while (isdigit((unsigned char)*s)) {
                        v = v * 10 + (*s - '0');
                        if (v > 1000)
                                break;
                        s++;
                }
                if (v < f->min || v > f->max) {
                        snprintf(errstr, errstr_size, "%s: %ld is out of range %d-%d", f->name, v,
                                 f->min, f->max);
                        return -1;
                }
                *out = (int)v;
                *p = s;
                return 0;
        }
        if (f->names && isalpha((unsigned char)s[0]) && isalpha((unsigned char)s[1]) &&
            isalpha((unsigned char)s[2]) && !isalpha((unsigned char)s[3])) {
                int n = f->max - f->min + 1 - (f->max == 7 ? 1 : 0);
                for (int i = 0; i < n; i++) {
                        if (strncasecmp(s, f->names[i], 3) == 0) {
                                *out = f->min + i;
                                *p = s + 3;
                                return 0;
                        }
                }
        }
        snprintf(errstr, errstr_size, "%s: unexpected '%.10s'", f->name, s);
        return -1;
}

/* One comma-separated item: '*', v, a-b, each optionally /step. Sets bits in *bits. */
static int parse_item(const struct field_spec *f, const char *s, uint64_t *bits, char *errstr,
                      size_t errstr_size)
{
        int lo, hi, step = 1;
        bool single = false;
        if (*s == '*') {
                lo = f->min;
                hi = f->max;
                s++;
        } else {
                if (parse_value(f, &s, &lo, errstr, errstr_size) != 0)
                        return -1;
                hi = lo;
                single = true;
                if (*s == '-') {
                        s++;
                        if (parse_value(f, &s, &hi, errstr, errstr_size) != 0)
                                return -1;
                        single = false;
                        if (hi < lo) {
                                snprintf(errstr, errstr_size, "%s: range %d-%d runs backwards",
                                         f->name, lo, hi);
                                return -1;
                        }
                }
        }
        if (*s == '/') {
                s++;
                if (!isdigit((unsigned char)*s)) {
                        snprintf(errstr, errstr_size, "%s: step must be a number", f->name);
                        return -1;
                }
                long v = strtol(s, (char **)&s, 10);
                if (v < 1 || v > f->max - f->min + 1) {
                        snprintf(errstr, errstr_size, "%s: step %ld is out of range 1-%d", f->name,
                                 v, f->max - f->min + 1);
                        return -1;
                }
                step = (int)v;
                if (single) /* "a/n" = from a to the end of the field */
                        hi = f->max;
        }
        if (*s != '\0') {
                snprintf(errstr, errstr_size, "%s: unexpected '%.10s'", f->name, s);
                return -1;
        }
        for (int v = lo; v <= hi; v += step)
                *bits |= 1ULL << v;
        return 0;
}

static int parse_field(const struct field_spec *f, const char *text, uint64_t *bits, char *errstr,
                       size_t errstr_size)
{
        char buf[128];
        if (strlen(text) >= sizeof(buf)) {
                snprintf(errstr, errstr_size, "%s: field too long", f->name);
                return -1;
        }
        snprintf(buf, sizeof(buf), "%s", text);
        *bits = 0;
        char *save = NULL;
        if (buf[0] == ',' || buf[strlen(buf) - 1] == ',' || strstr(buf, ",,")) {
                snprintf(errstr, errstr_size, "%s: empty list item", f->name);
                return -1;
        }
        for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save))
                if (parse_item(f, item, bits, errstr, errstr_size) != 0)
                        return -1;
        return 0;
}

int cron_parse(const char *expr, struct cron_expr *out, char *errstr, size_t errstr_size)
{
        char fields[5][128];
        int n = 0;
        const char *p = expr ? expr : "";
        memset(out, 0, sizeof(*out));
        while (*p) {
                while (isspace((unsigned char)*p))
                        p++;
                if (!*p)
                        break;
                size_t len = 0;
                while (p[len] && !isspace((unsigned char)p[len]))
                        len++;
                if (n == 5) {
                        snprintf(errstr, errstr_size, "expected 5 fields, got more");
                        return -1;
                }
                if (len >= sizeof(fields[0])) {
                        snprintf(errstr, errstr_size, "%s: field too long", specs[n].name);
                        return -1;
                }
                memcpy(fields[n], p, len);
                fields[n][len] = '\0';
                n++;
                p += len;
        }
        if (n != 5) {
                snprintf(errstr, errstr_size,
                         "expected 5 fields (minute hour day-of-month month "
                         "day-of-week), got %d",
                         n);
                return -1;
        }
        uint64_t bits[5];
        for (int i = 0; i < 5; i++)
                if (parse_field(&specs[i], fields[i], &bits[i], errstr, errstr_size) != 0)
                        return -1;
        out->minute = bits[0];
        out->hour = (uint32_t)bits[1];
        out->dom = (uint32_t)bits[2];
        out->month = (uint16_t)bits[3];
        /* Sunday is 0 or 7 */
        out->dow = (uint8_t)((bits[4] & 0x7f) | ((bits[4] >> 7) & 1));
        out->dom_star = fields[2][0] == '*';
        out->dow_star = fields[4][0] == '*';
        return 0;
}

static bool day_matches(const struct cron_expr *c, const struct tm *tm)
{
        bool dom = (c->dom >> tm->tm_mday) & 1;
        bool dow = (c->dow >> tm->tm_wday) & 1;
        if (c->dom_star || c->dow_star)
                return dom && dow;
        return dom || dow;
}

/* Local midnight of the day tm names plus `days`, always later than t. */
static time_t next_day_start(struct tm tm, int days, int months, time_t t)
{
        tm.tm_mon += months;
        tm.tm_mday = months ? 1 : tm.tm_mday + days;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_isdst = -1;
        time_t n = mktime(&tm);
        /* a zone whose midnight does not exist that day lands earlier: move on by the hour */
        return n > t ? n : t + 3600 - t % 3600;
}

time_t cron_next(const struct cron_expr *c, time_t after)
{
        time_t t = after - (after % 60 + 60) % 60 + 60;
        const time_t limit = after + (time_t)5 * 366 * 86400;
        struct tm tm, prev;
        while (t <= limit) {
                if (!localtime_r(&t, &tm))
                        return -1;
                if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
                        t = next_day_start(tm, 0, 1, t);
                        continue;
                }
                if (!day_matches(c, &tm)) {
                        t = next_day_start(tm, 1, 0, t);
                        continue;
                }
                if (!((c->hour >> tm.tm_hour) & 1)) {
                        t += (time_t)(60 - tm.tm_min) * 60;
                        continue;
                }
                if (!((c->minute >> tm.tm_min) & 1)) {
                        t += 60;
                        continue;
                }
                /* the second pass over a wall-clock hour repeated by a DST fall-back */
                time_t before = t - 3600;
                if (localtime_r(&before, &prev) && prev.tm_hour == tm.tm_hour &&
                    prev.tm_min == tm.tm_min && prev.tm_mday == tm.tm_mday) {
                        t += 60;
                        continue;
                }
                return t;
        }
        return -1;
}
