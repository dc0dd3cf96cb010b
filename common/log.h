/* log.h - JSON-lines logging to stderr with levels.
 *
 * One line per event: {"ts":"…","level":"info","service":"…","msg":"…"}.
 * qz_log_init() is called once from main() before any thread starts; the
 * service name and threshold it sets are the only process-wide logging state
 * and are read-only afterwards. Every function is thread-safe (one fputs of a
 * complete line per call). */
#ifndef QZ_LOG_H
#define QZ_LOG_H

#include <jansson.h>
#include <stdarg.h>

enum qz_log_level { QZ_LOG_DEBUG, QZ_LOG_INFO, QZ_LOG_WARN, QZ_LOG_ERROR };

void qz_log_init(const char *service, enum qz_log_level threshold);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 on anything else. */
int qz_log_level_parse(const char *s, enum qz_log_level *out);
int qz_log_enabled(enum qz_log_level level);

/* msg is printf-style. qz_log_kv appends string fields given as
 * key, value pairs terminated by NULL: qz_log_kv(QZ_LOG_INFO, "up", "addr", a, NULL). */
void qz_log(enum qz_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qz_log_kv(enum qz_log_level level, const char *msg, ...) __attribute__((sentinel));
/* The same with the fields given as the members of a JSON object (borrowed). */
void qz_log_json(enum qz_log_level level, const char *msg, const json_t *fields);

#define qz_debug(...) qz_log(QZ_LOG_DEBUG, __VA_ARGS__)
#define qz_info(...)  qz_log(QZ_LOG_INFO, __VA_ARGS__)
#define qz_warn(...)  qz_log(QZ_LOG_WARN, __VA_ARGS__)
#define qz_error(...) qz_log(QZ_LOG_ERROR, __VA_ARGS__)

#endif
