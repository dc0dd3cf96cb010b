/* json.c - jansson helpers: typed member access, RFC 3339 times, UUIDs. */
#include "json.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

json_t *qz_json_parse(const char *buf, size_t len, char *errstr, size_t errstr_size)
{
        json_error_t jerr;
        json_t *v = json_loadb(buf ? buf : "", buf ? len : 0, JSON_DECODE_ANY, &jerr);

        if (!v)
                snprintf(errstr, errstr_size, "invalid JSON at line %d column %d: %s", jerr.line,
                         jerr.column, jerr.text);
        return v;
}

json_t *qz_json_parse_object(const char *buf, size_t len, char *errstr, size_t errstr_size)
{
        json_t *v = qz_json_parse(buf, len, errstr, errstr_size);

        if (v && !json_is_object(v)) {
                snprintf(errstr, errstr_size, "expected a JSON object");
                json_decref(v);
                return NULL;
        }
        return v;
}

/* Common front of every getter: 0 with *member set, 1 absent+optional, -1 error. */
static int member(const json_t *obj, const char *key, bool required, json_t **out, char *errstr,
                  size_t errstr_size)
{
        json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

        if (!v || json_is_null(v)) {
                if (!required)
                        return 1;
                snprintf(errstr, errstr_size, "field '%s' is required", key);
                return -1;
        }
        *out = v;
        return 0;
}

int qz_json_get_string(const json_t *obj, const char *key, bool required, const char **out,
                       char *errstr, size_t errstr_size)
{
        json_t *v = NULL;
        int rc = member(obj, key, required, &v, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (!json_is_string(v)) {
                snprintf(errstr, errstr_size, "field '%s' must be a string", key);
                return -1;
        }
        *out = json_string_value(v);
        return 0;
}

int qz_json_get_int(const json_t *obj, const char *key, bool required, int64_t *out, char *errstr,
                    size_t errstr_size)
{
        json_t *v = NULL;
        int rc = member(obj, key, required, &v, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (!json_is_integer(v)) {
                snprintf(errstr, errstr_size, "field '%s' must be an integer", key);
                return -1;
        }
        *out = (int64_t)json_integer_value(v);
        return 0;
}

int qz_json_get_number(const json_t *obj, const char *key, bool required, double *out, char *errstr,
                       size_t errstr_size)
{
        json_t *v = NULL;
        int rc = member(obj, key, required, &v, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (!json_is_number(v)) {
                snprintf(errstr, errstr_size, "field '%s' must be a number", key);
                return -1;
        }
        *out = json_number_value(v);
        return 0;
}

int qz_json_get_bool(const json_t *obj, const char *key, bool required, bool *out, char *errstr,
                     size_t errstr_size)
{
        json_t *v = NULL;
        int rc = member(obj, key, required, &v, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (!json_is_boolean(v)) {
                snprintf(errstr, errstr_size, "field '%s' must be a boolean", key);
                return -1;
        }
        *out = json_is_true(v);
        return 0;
}

int qz_json_check_keys(const json_t *obj, const char *const *known, size_t nknown, char *errstr,
                       size_t errstr_size)
{
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)obj, k, v)
        {
                size_t i = 0;
                while (i < nknown && strcmp(known[i], k) != 0)
                        i++;
                if (i < nknown)
                        continue;
                /* the key is user input: cut it, and list what is accepted */
                size_t o =
                    (size_t)snprintf(errstr, errstr_size, "unknown field '%.64s' (known:", k);
                for (i = 0; i < nknown && o < errstr_size; i++)
                        o += (size_t)snprintf(errstr + o, errstr_size - o, "%s %s", i ? "," : "",
                                              known[i]);
                if (o < errstr_size)
                        snprintf(errstr + o, errstr_size - o, ")");
                return -1;
        }
        return 0;
}

int qz_json_get_uuid(const json_t *obj, const char *key, bool required, const char **out,
                     char *errstr, size_t errstr_size)
{
        const char *s = NULL;
        int rc = qz_json_get_string(obj, key, required, &s, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (!qz_uuid_valid(s)) {
                snprintf(errstr, errstr_size, "field '%s' must be a UUID", key);
                return -1;
        }
        *out = s;
        return 0;
}

int qz_json_get_time(const json_t *obj, const char *key, bool required, int64_t *out_ms,
                     char *errstr, size_t errstr_size)
{
        const char *s = NULL;
        char why[128];
        int rc = qz_json_get_string(obj, key, required, &s, errstr, errstr_size);

        if (rc != 0)
                return rc;
        if (qz_time_parse(s, out_ms, why, sizeof(why)) != 0) {
                snprintf(errstr, errstr_size, "field '%s' must be an RFC 3339 time: %s", key, why);
                return -1;
        }
        return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm);
 * avoids timegm() and the process time zone. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        *d = (int)(doy - (153 * mp + 2) / 5 + 1);
        *m = (int)(mp < 10 ? mp + 3 : mp - 9);
        *y = yoe + era * 400 + (*m <= 2);
}

int qz_time_format(int64_t ms, char *out, size_t out_size)
{
        int64_t days = ms / 86400000, rem = ms % 86400000, y;
        int m, d;

        if (rem < 0) {
                rem += 86400000;
                days--;
        }
        civil_from_days(days, &y, &m, &d);
        if (y < 0 || y > 9999)
                return -1;
        int n = snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)y, m, d,
                         (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60),
                         (int)(rem % 1000));
        return n > 0 && (size_t)n < out_size ? 0 : -1;
}

/* Reads exactly n digits. */
static int digits(const char **p, int n, int *out)
{
        int v = 0;

        for (int i = 0; i < n; i++) {
                if (!isdigit((unsigned char)(*p)[i]))
                        return -1;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *out = v;
        return 0;
}

static int days_in_month(int y, int m)
{
        static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return m == 2 && leap ? 29 : dm[m - 1];
}

int qz_time_parse(const char *s, int64_t *out_ms, char *errstr, size_t errstr_size)
{
        const char *p = s;
        int y, mo, d, h, mi, sec, ms = 0, oh = 0, om = 0, sign = 0;

        if (!s)
                goto fail;
        if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
            digits(&p, 2, &d))
                goto fail;
        if (*p != 'T' && *p != 't' && *p != ' ')
                goto fail;
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
            digits(&p, 2, &sec))
                goto fail;
        if (*p == '.') {
                int n = 0;
                p++;
                if (!isdigit((unsigned char)*p))
                        goto fail;
                for (; isdigit((unsigned char)*p); p++, n++)
                        if (n < 3)
                                ms = ms * 10 + (*p - '0');
                for (; n < 3; n++)
                        ms *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                sign = *p++ == '-' ? -1 : 1;
                if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
                        goto fail;
        } else {
                goto fail;
        }
        if (*p != '\0')
                goto fail;
        /* sec 60 is a leap second: accepted and folded into the next minute */
        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
                goto fail;
        int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
        t -= (int64_t)sign * (oh * 3600 + om * 60);
        *out_ms = t * 1000 + ms;
        return 0;
fail:
        snprintf(errstr, errstr_size,
                 "bad time '%.64s': expected RFC 3339 like 2024-05-01T12:00:00Z", s ? s : "(null)");
        return -1;
}

int64_t qz_time_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool qz_uuid_valid(const char *s)
{
        if (!s)
                return false;
        for (int i = 0; i < QZ_UUID_STR_LEN; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                } else if (!isxdigit((unsigned char)s[i])) {
                        return false;
                }
        }
        return s[QZ_UUID_STR_LEN] == '\0';
}

void qz_uuid_generate(char *out)
{
        uuid_t u;

        uuid_generate_random(u);
        uuid_unparse_lower(u, out);
}
