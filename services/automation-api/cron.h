/* cron.h - 5-field cron expressions (minute hour day-of-month month day-of-week) and their next
 * fire time.
 *
 * Syntax per field: a star, a number, a range a-b, a step (star/n, a-b/n, or
 * a/n = from a to the field's maximum), and comma-separated lists of those.
 * Months accept jan..dec and weekdays sun..sat (case-insensitive, also in
 * ranges); Sunday is 0 or 7. As in Vixie cron, when both day-of-month and
 * day-of-week are restricted (neither starts with '*'), a day matches if
 * either does.
 *
 * Times are evaluated in the process's local time zone (main.c sets TZ from
 * QOQNUZ_SCHEDULER_TZ, default UTC): a wall-clock time skipped by a DST jump
 * never fires, one repeated fires at its first occurrence.
 * Pure functions, thread-safe (localtime_r/mktime). */
#ifndef API_CRON_H
#define API_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cron_expr {
        uint64_t minute; /* bit i = minute i (0-59) */
        uint32_t hour;   /* 0-23 */
        uint32_t dom;    /* 1-31 */
        uint16_t month;  /* 1-12 */
        uint8_t dow;     /* 0-6, Sunday 0 (7 folded into 0) */
        bool dom_star;   /* the field started with '*' */
        bool dow_star;
};

/* Parses expr. Returns 0, or -1 with errstr naming the field ("hour: 24 is out of range 0-23"). */
int cron_parse(const char *expr, struct cron_expr *out, char *errstr, size_t errstr_size);

/* The first fire time strictly after `after` (seconds since the epoch), on a
 * whole minute. Returns -1 when none exists within 5 years (e.g. "0 0 30 2 *"). */
time_t cron_next(const struct cron_expr *c, time_t after);

#endif
