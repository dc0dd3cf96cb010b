/* cfg.h - configuration from environment variables, declared as one table.
 *
 * A service lists every setting once (name, type, default, bounds, where the
 * value lands) and calls qz_cfg_load(); a missing variable takes its default,
 * a malformed one fails the whole load with a one-line error naming the
 * variable and the bad value. main() prints that error and exits 2
 * (qz_cfg_load_or_exit does exactly that).
 *
 * Ownership: string values point into the environment or the table's default
 * literal and are never freed; they live as long as the process. */
#ifndef QZ_CFG_H
#define QZ_CFG_H

#include <stdbool.h>
#include <stddef.h>

enum qz_cfg_type {
        QZ_CFG_STR,      /* dest: const char ** */
        QZ_CFG_INT,      /* dest: long *, checked against [min, max] */
        QZ_CFG_BOOL,     /* dest: bool *; accepts 1/0/true/false/yes/no/on/off */
        QZ_CFG_ADDR,     /* dest: struct qz_addr *; "host:port" or ":port" */
        QZ_CFG_PG_DSN,   /* dest: const char **; validated with libpq's parser */
        QZ_CFG_REDIS,    /* dest: struct qz_redis_url *; redis://[:pw@]host[:port][/db] */
        QZ_CFG_LOGLEVEL, /* dest: enum qz_log_level *; debug/info/warn/error */
};

struct qz_addr {
        char host[256];
        int port;
};

struct qz_redis_url {
        char host[256];
        int port;
        int db;
        char password[256]; /* empty when none */
};

struct qz_cfg_entry {
        const char *name; /* environment variable */
        enum qz_cfg_type type;
        const char *def; /* default as text; NULL = required */
        long min, max;   /* QZ_CFG_INT bounds (ignored when min > max) */
        void *dest;
        const char *help; /* one line, for --help and docs */
};

/* Loads every entry of table (terminated by an entry with name NULL).
 * Returns 0, or -1 with errstr like
 * "QOQNUZ_HTTP_ADDR: bad value 'abc': expected host:port". */
int qz_cfg_load(const struct qz_cfg_entry *table, char *errstr, size_t errstr_size);
/* qz_cfg_load, and on error prints the line to stderr and exits 2. */
void qz_cfg_load_or_exit(const struct qz_cfg_entry *table);
/* Prints "NAME (default): help" per entry, for --help. */
void qz_cfg_print_help(const struct qz_cfg_entry *table);

/* Parsers the table uses; exposed for tools and tests. Return 0 or -1. */
int qz_addr_parse(const char *s, struct qz_addr *out, char *errstr, size_t errstr_size);
int qz_redis_url_parse(const char *s, struct qz_redis_url *out, char *errstr, size_t errstr_size);
int qz_pg_dsn_check(const char *s, char *errstr, size_t errstr_size);

#endif
