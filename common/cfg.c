/* cfg.c - configuration from environment variables, declared as one table. */
#include "cfg.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int parse_port(const char *s, int *out)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end != '\0' || v < 1 || v > 65535)
                return -1;
        *out = (int)v;
        return 0;
}

int qz_addr_parse(const char *s, struct qz_addr *out, char *errstr, size_t errstr_size)
{
        const char *colon = strrchr(s, ':');
        if (!colon) {
                snprintf(errstr, errstr_size, "expected host:port");
                return -1;
        }
        size_t hlen = (size_t)(colon - s);
        if (hlen >= sizeof(out->host)) {
                snprintf(errstr, errstr_size, "host too long");
                return -1;
        }
        /* "[::1]:8080" → "::1" */
        if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
                memcpy(out->host, s + 1, hlen - 2);
                out->host[hlen - 2] = '\0';
        } else {
                memcpy(out->host, s, hlen);
                out->host[hlen] = '\0';
        }
        if (out->host[0] == '\0')
                snprintf(out->host, sizeof(out->host), "0.0.0.0");
        if (parse_port(colon + 1, &out->port) != 0) {
                snprintf(errstr, errstr_size, "port must be 1-65535");
                return -1;
        }
        return 0;
}

int qz_redis_url_parse(const char *s, struct qz_redis_url *out, char *errstr, size_t errstr_size)
{
        memset(out, 0, sizeof(*out));
        out->port = 6379;
        const char *p;
        if (strncmp(s, "redis://", 8) == 0) {
                p = s + 8;
        } else {
                snprintf(errstr, errstr_size, "expected redis://[:password@]host[:port][/db]");
                return -1;
        }
        const char *at = strchr(p, '@');
        const char *slash = strchr(p, '/');
        if (at && (!slash || at < slash)) {
                const char *pw = p;
                const char *colon = memchr(p, ':', (size_t)(at - p));
                if (colon)
                        pw = colon + 1; /* user part ignored: Redis < 6 has no ACL users */
                size_t n = (size_t)(at - pw);
                if (n >= sizeof(out->password)) {
                        snprintf(errstr, errstr_size, "password too long");
                        return -1;
                }
                memcpy(out->password, pw, n);
                out->password[n] = '\0';
                p = at + 1;
        }
        const char *hend = p + strcspn(p, ":/");
        size_t hlen = (size_t)(hend - p);
        if (hlen == 0 || hlen >= sizeof(out->host)) {
                snprintf(errstr, errstr_size, "missing or too long host");
                return -1;
        }
        memcpy(out->host, p, hlen);
        out->host[hlen] = '\0';
        p = hend;
        if (*p == ':') {
                char port[8];
                size_t plen = strcspn(p + 1, "/");
                if (plen == 0 || plen >= sizeof(port)) {
                        snprintf(errstr, errstr_size, "port must be 1-65535");
                        return -1;
                }
                memcpy(port, p + 1, plen);
                port[plen] = '\0';
                if (parse_port(port, &out->port) != 0) {
                        snprintf(errstr, errstr_size, "port must be 1-65535");
                        return -1;
                }
                p += 1 + plen;
        }
        if (*p == '/' && p[1] != '\0') {
                char *end;
                errno = 0;
                long db = strtol(p + 1, &end, 10);
                if (errno || *end != '\0' || db < 0 || db > 15 || !isdigit((unsigned char)p[1])) {
                        snprintf(errstr, errstr_size, "database must be 0-15");
                        return -1;
                }
                out->db = (int)db;
        } else if (*p != '\0' && strcmp(p, "/") != 0) {
                snprintf(errstr, errstr_size, "unexpected '%s'", p);
                return -1;
        }
        return 0;
}

int qz_pg_dsn_check(const char *s, char *errstr, size_t errstr_size)
{
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(s, &err);
        if (!opts) {
                size_t n = err ? strcspn(err, "\n") : 0;
                snprintf(errstr, errstr_size, "%.*s", (int)n, err ? err : "out of memory");
                PQfreemem(err);
                return -1;
        }
        PQconninfoFree(opts);
        return 0;
}

static int parse_bool(const char *s, bool *out)
{
        static const char *yes[] = {"1", "true", "yes", "on"};
        static const char *no[] = {"0", "false", "no", "off"};
        for (size_t i = 0; i < 4; i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *out = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *out = false;
                        return 0;
                }
        }
        return -1;
}

static int load_one(const struct qz_cfg_entry *e, const char *val, char *why, size_t whylen)
{
        switch (e->type) {
        case QZ_CFG_STR:
                *(const char **)e->dest = val;
                return 0;
        case QZ_CFG_INT: {
                char *end;
                errno = 0;
                long v = strtol(val, &end, 10);
                if (errno || end == val || *end != '\0') {
                        snprintf(why, whylen, "expected an integer");
                        return -1;
                }
                if (e->min <= e->max && (v < e->min || v > e->max)) {
                        snprintf(why, whylen, "must be between %ld and %ld", e->min, e->max);
                        return -1;
                }
                *(long *)e->dest = v;
                return 0;
        }
        case QZ_CFG_BOOL:
                if (parse_bool(val, (bool *)e->dest) != 0) {
                        snprintf(why, whylen, "expected true/false");
                        return -1;
                }
                return 0;
        case QZ_CFG_ADDR:
                return qz_addr_parse(val, (struct qz_addr *)e->dest, why, whylen);
        case QZ_CFG_PG_DSN:
                if (qz_pg_dsn_check(val, why, whylen) != 0)
                        return -1;
                *(const char **)e->dest = val;
                return 0;
        case QZ_CFG_REDIS:
                return qz_redis_url_parse(val, (struct qz_redis_url *)e->dest, why, whylen);
        case QZ_CFG_LOGLEVEL:
                if (qz_log_level_parse(val, (enum qz_log_level *)e->dest) != 0) {
                        snprintf(why, whylen, "expected debug, info, warn or error");
                        return -1;
                }
                return 0;
        }
        snprintf(why, whylen, "unknown setting type");
        return -1;
}

int qz_cfg_load(const struct qz_cfg_entry *table, char *errstr, size_t errstr_size)
{
        for (const struct qz_cfg_entry *e = table; e->name; e++) {
                const char *val = getenv(e->name);
                if (!val || !*val)
                        val = e->def;
                if (!val) {
                        snprintf(errstr, errstr_size, "%s: required but not set", e->name);
                        return -1;
                }
                char why[256] = "";
                if (load_one(e, val, why, sizeof(why)) != 0) {
                        snprintf(errstr, errstr_size, "%s: bad value '%.100s': %s", e->name, val,
                                 why);
                        return -1;
                }
        }
        return 0;
}

void qz_cfg_load_or_exit(const struct qz_cfg_entry *table)
{
        char err[512];
        if (qz_cfg_load(table, err, sizeof(err)) != 0) {
                fprintf(stderr, "configuration error: %s\n", err);
                exit(2);
        }
}

void qz_cfg_print_help(const struct qz_cfg_entry *table)
{
        for (const struct qz_cfg_entry *e = table; e->name; e++)
                printf("  %-32s (default: %s) %s\n", e->name, e->def ? e->def : "required",
                       e->help ? e->help : "");
}
