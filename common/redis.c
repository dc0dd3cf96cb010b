/* redis.c - one hiredis connection with AUTH/SELECT, reconnect with backoff, pipelining. */
#include "redis.h"
#include "clock.h"

#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

enum link_state { LINK_UNKNOWN, LINK_UP, LINK_DOWN };

struct qz_redis {
        struct qz_redis_url url;
        struct timeval tv;
        redisContext *c;
        enum link_state state;
        int64_t next_try_ms; /* no connect attempt before this (monotonic) */
        int backoff_ms;
        char last_err[256];
        /* pipeline */
        size_t pending;
        bool append_failed;
        char append_err[256];
};

static void mark_up(struct qz_redis *r)
{
        char addr[300];

        r->backoff_ms = 0;
        r->next_try_ms = 0;
        if (r->state == LINK_UP)
                return;
        r->state = LINK_UP;
        snprintf(addr, sizeof(addr), "%s:%d", r->url.host, r->url.port);
        qz_log_kv(QZ_LOG_INFO, "redis connected", "addr", addr, NULL);
}

/* Records why the link is gone and frees the context. */
static void mark_down(struct qz_redis *r, const char *why)
{
        char addr[300];

        snprintf(r->last_err, sizeof(r->last_err), "%s", why);
        if (r->c) {
                redisFree(r->c);
                r->c = NULL;
        }
        if (r->state == LINK_DOWN)
                return;
        r->state = LINK_DOWN;
        snprintf(addr, sizeof(addr), "%s:%d", r->url.host, r->url.port);
        qz_log_kv(QZ_LOG_WARN, "redis unavailable", "addr", addr, "error", why, NULL);
}

/* A connect attempt failed: wait longer before the next one. */
static void back_off(struct qz_redis *r)
{
        r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (r->backoff_ms > BACKOFF_MAX_MS)
                r->backoff_ms = BACKOFF_MAX_MS;
        r->next_try_ms = qz_clock_mono_ms() + r->backoff_ms;
}

/* True when the server closed (or wrote unasked to) an idle connection. */
static bool link_stale(redisContext *c)
{
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        char b;

        if (c->err)
                return true;
        if (poll(&p, 1, 0) <= 0)
                return false;
        if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
                return true;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Runs one setup command on a fresh context; 0 or -1 with why. */
static int setup_cmd(redisContext *c, char *why, size_t why_size, const char *fmt, ...)
{
        va_list ap;
        redisReply *rep;
        int rc = 0;

        va_start(ap, fmt);
        rep = redisvCommand(c, fmt, ap);
        va_end(ap);
        if (!rep) {
                snprintf(why, why_size, "%s", c->errstr);
                return -1;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
                snprintf(why, why_size, "%s", rep->str);
                rc = -1;
        }
        freeReplyObject(rep);
        return rc;
}

/* Makes r->c usable: checks the idle link, connects/authenticates/selects if needed. */
static int ensure(struct qz_redis *r, char *errstr, size_t errstr_size)
{
        char why[256];
        redisContext *c = NULL;

        if (r->c && link_stale(r->c)) {
                mark_down(r, r->c->err ? r->c->errstr : "connection closed by server");
                r->next_try_ms = 0; /* was up: reconnect at once */
        }
        if (r->c)
                return 0;
        if (qz_clock_mono_ms() < r->next_try_ms) {
                snprintf(errstr, errstr_size, "redis %s:%d unavailable: %s", r->url.host,
                         r->url.port, r->last_err);
                return -1;
        }
        c = redisConnectWithTimeout(r->url.host, r->url.port, r->tv);
        if (!c || c->err) {
                snprintf(why, sizeof(why), "connect: %s", c ? c->errstr : "out of memory");
                goto fail;
        }
        if (redisSetTimeout(c, r->tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
                snprintf(why, sizeof(why), "socket setup: %s", c->errstr);
                goto fail;
        }
        if (r->url.password[0] && setup_cmd(c, why, sizeof(why), "AUTH %s", r->url.password))
                goto fail;
        if (r->url.db && setup_cmd(c, why, sizeof(why), "SELECT %d", r->url.db))
                goto fail;
        r->c = c;
        mark_up(r);
        return 0;
fail:
        if (c)
                redisFree(c);
        mark_down(r, why);
        back_off(r);
        snprintf(errstr, errstr_size, "redis %s:%d unavailable: %s", r->url.host, r->url.port, why);
        return -1;
}

struct qz_redis *qz_redis_new(const struct qz_redis_url *url, int timeout_ms)
{
        struct qz_redis *r = calloc(1, sizeof(*r));
        char err[300];

        if (!r)
                return NULL;
        r->url = *url;
        if (timeout_ms <= 0)
                timeout_ms = 2000;
        r->tv.tv_sec = timeout_ms / 1000;
        r->tv.tv_usec = (timeout_ms % 1000) * 1000;
        (void)ensure(r, err, sizeof(err)); /* logged by mark_down; later calls retry */
        return r;
}

void qz_redis_free(struct qz_redis *r)
{
        if (!r)
                return;
        if (r->c)
                redisFree(r->c);
        free(r);
}

/* Judges a reply from redisCommand*: NULL means the link broke. */
static int check_reply(struct qz_redis *r, redisReply *rep, int expect_type, redisReply **out,
                       char *errstr, size_t errstr_size)
{
        if (!rep) {
                snprintf(errstr, errstr_size, "redis %s:%d: %s", r->url.host, r->url.port,
                         r->c->errstr);
                mark_down(r, r->c->errstr);
                r->next_try_ms = 0;
                return -1;
        }
        if (rep->type == REDIS_REPLY_ERROR && expect_type != REDIS_REPLY_ERROR) {
                snprintf(errstr, errstr_size, "redis: %s", rep->str);
                goto fail;
        }
        if (expect_type != QZ_REDIS_ANY && rep->type != expect_type) {
                snprintf(errstr, errstr_size, "redis: unexpected reply type %d (wanted %d)",
                         rep->type, expect_type);
                goto fail;
        }
        if (out)
                *out = rep;
        else
                freeReplyObject(rep);
        return 0;
fail:
        freeReplyObject(rep);
        return -1;
}

int qz_redis_command(struct qz_redis *r, int expect_type, redisReply **out, char *errstr,
                     size_t errstr_size, const char *fmt, ...)
{
        va_list ap;
        redisReply *rep;

        if (r->pending) {
                snprintf(errstr, errstr_size, "redis: pipeline pending; call qz_redis_exec");
                return -1;
        }
        if (ensure(r, errstr, errstr_size) != 0)
                return -1;
        va_start(ap, fmt);
        rep = redisvCommand(r->c, fmt, ap);
        va_end(ap);
        return check_reply(r, rep, expect_type, out, errstr, errstr_size);
}

int qz_redis_command_argv(struct qz_redis *r, int expect_type, redisReply **out, char *errstr,
                          size_t errstr_size, int argc, const char **argv, const size_t *argvlen)
{
        redisReply *rep;

        if (r->pending) {
                snprintf(errstr, errstr_size, "redis: pipeline pending; call qz_redis_exec");
                return -1;
        }
        if (ensure(r, errstr, errstr_size) != 0)
                return -1;
        rep = redisCommandArgv(r->c, argc, argv, argvlen);
        return check_reply(r, rep, expect_type, out, errstr, errstr_size);
}

/* Common front of the appends: the link is checked once, at the first
 * command, so a stale check never drops already buffered commands. */
static bool append_ready(struct qz_redis *r)
{
        if (r->pending == 0) {
                r->append_failed = false;
                if (ensure(r, r->append_err, sizeof(r->append_err)) != 0)
                        r->append_failed = true;
        }
        r->pending++;
        return !r->append_failed && r->c;
}

void qz_redis_append(struct qz_redis *r, const char *fmt, ...)
{
        va_list ap;

        if (!append_ready(r))
                return;
        va_start(ap, fmt);
        if (redisvAppendCommand(r->c, fmt, ap) != REDIS_OK) {
                r->append_failed = true;
                snprintf(r->append_err, sizeof(r->append_err), "redis: cannot append: %s",
                         r->c->errstr);
        }
        va_end(ap);
}

void qz_redis_append_argv(struct qz_redis *r, int argc, const char **argv, const size_t *argvlen)
{
        if (!append_ready(r))
                return;
        if (redisAppendCommandArgv(r->c, argc, argv, argvlen) != REDIS_OK) {
                r->append_failed = true;
                snprintf(r->append_err, sizeof(r->append_err), "redis: cannot append: %s",
                         r->c->errstr);
        }
}

void qz_redis_replies_free(redisReply **replies, size_t n)
{
        if (!replies)
                return;
        for (size_t i = 0; i < n; i++)
                if (replies[i])
                        freeReplyObject(replies[i]);
        free(replies);
}

int qz_redis_exec(struct qz_redis *r, redisReply ***replies, size_t *n, char *errstr,
                  size_t errstr_size)
{
        size_t count = r->pending, got = 0;
        redisReply **reps = NULL;
        int rc = -1;

        r->pending = 0;
        if (replies)
                *replies = NULL;
        if (n)
                *n = 0;
        if (r->append_failed) {
                snprintf(errstr, errstr_size, "%s", r->append_err);
                /* commands may sit half-sent in the buffer: the link cannot be reused */
                if (r->c)
                        mark_down(r, r->append_err);
                r->next_try_ms = 0;
                return -1;
        }
        if (count == 0) {
                if (replies)
                        *replies = calloc(1, sizeof(*reps)); /* non-NULL for an empty batch */
                return 0;
        }
        reps = calloc(count, sizeof(*reps));
        if (!reps) {
                snprintf(errstr, errstr_size, "out of memory");
                mark_down(r, "out of memory in pipeline");
                return -1;
        }
        for (got = 0; got < count; got++) {
                void *rep = NULL;
                if (redisGetReply(r->c, &rep) != REDIS_OK || !rep) {
                        snprintf(errstr, errstr_size, "redis %s:%d: %s (reply %zu of %zu)",
                                 r->url.host, r->url.port, r->c->errstr, got + 1, count);
                        mark_down(r, r->c->errstr);
                        r->next_try_ms = 0;
                        goto fail;
                }
                reps[got] = rep;
        }
        for (size_t i = 0; i < count; i++) {
                if (reps[i]->type == REDIS_REPLY_ERROR) {
                        snprintf(errstr, errstr_size, "redis: command %zu of %zu: %s", i + 1, count,
                                 reps[i]->str);
                        goto fail;
                }
        }
        if (replies) {
                *replies = reps;
                reps = NULL; /* now owned by the caller */
        }
        if (n)
                *n = count;
        rc = 0;
fail:
        qz_redis_replies_free(reps, count);
        return rc;
}

int qz_redis_ping(struct qz_redis *r, char *errstr, size_t errstr_size)
{
        redisReply *rep = NULL;
        int rc = -1;

        if (qz_redis_command(r, REDIS_REPLY_STATUS, &rep, errstr, errstr_size, "PING") != 0)
                return -1;
        if (strcmp(rep->str, "PONG") == 0)
                rc = 0;
        else
                snprintf(errstr, errstr_size, "redis: PING answered %s", rep->str);
        freeReplyObject(rep);
        return rc;
}
