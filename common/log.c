/* log.c - JSON-lines logging to stderr with levels. */
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set once by qz_log_init() before threads start, read-only afterwards. */
static struct {
        char service[64];
        enum qz_log_level threshold;
} log_state = {"qoqnuz", QZ_LOG_INFO};

static const char *level_names[] = {"debug", "info", "warn", "error"};

void qz_log_init(const char *service, enum qz_log_level threshold)
{
        snprintf(log_state.service, sizeof(log_state.service), "%s", service);
        log_state.threshold = threshold;
}

int qz_log_level_parse(const char *s, enum qz_log_level *out)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
                if (strcmp(s, level_names[i]) == 0) {
                        *out = (enum qz_log_level)i;
                        return 0;
                }
        }
        return -1;
}

int qz_log_enabled(enum qz_log_level level)
{
        return level >= log_state.threshold;
}

static void emit(enum qz_log_level level, const char *msg, const json_t *extra, va_list kv)
{
        char ts[40];
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);

        json_t *o = json_object();
        json_object_set_new(o, "ts", json_string(ts));
        json_object_set_new(o, "level", json_string(level_names[level]));
        json_object_set_new(o, "service", json_string(log_state.service));
        /* json_stringn_nocheck would keep invalid UTF-8; escape it instead. */
        json_t *m = json_string(msg);
        json_object_set_new(o, "msg", m ? m : json_string("(invalid utf-8 message)"));
        if (extra)
                json_object_update(o, (json_t *)extra);
        const char *k;
        while ((k = va_arg(kv, const char *)) != NULL) {
                const char *v = va_arg(kv, const char *);
                json_t *jv = v ? json_string(v) : json_null();
                json_object_set_new(o, k, jv ? jv : json_string("(invalid utf-8)"));
        }
        char *line = json_dumps(o, JSON_COMPACT);
        if (line) {
                size_t len = strlen(line);
                line[len] = '\0';
                flockfile(stderr);
                fputs(line, stderr);
                fputc('\n', stderr);
                funlockfile(stderr);
                free(line);
        }
        json_decref(o);
}

static void emit_kv(enum qz_log_level level, const char *msg, const json_t *extra, ...)
{
        va_list ap;
        va_start(ap, extra);
        emit(level, msg, extra, ap);
        va_end(ap);
}

void qz_log(enum qz_log_level level, const char *fmt, ...)
{
        if (!qz_log_enabled(level))
                return;
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        emit_kv(level, msg, NULL, NULL);
}

void qz_log_kv(enum qz_log_level level, const char *msg, ...)
{
        if (!qz_log_enabled(level))
                return;
        va_list ap;
        va_start(ap, msg);
        emit(level, msg, NULL, ap);
        va_end(ap);
}

void qz_log_json(enum qz_log_level level, const char *msg, const json_t *fields)
{
        if (qz_log_enabled(level))
                emit_kv(level, msg, fields, NULL);
}
