/* redis.h - one hiredis connection with AUTH/SELECT, reconnect with backoff, pipelining.
 *
 * An unreachable Redis is not fatal: qz_redis_new() always returns a handle;
 * a command on a lost connection fails with an error, the connection is
 * dropped, and the next call reconnects (at once the first time, then with
 * backoff 100 ms doubling to 5 s; calls inside the backoff window fail fast).
 * Before each send the socket is checked for a close by the server (idle
 * timeout, CLIENT KILL, restart), so such a close is repaired transparently
 * without re-sending anything: a command is never sent twice.
 * The transition up/down is logged once per change, naming host:port.
 *
 * Not thread-safe: one handle per thread (or a lock around it).
 * Ownership: replies handed out are the caller's (freeReplyObject, or
 * qz_redis_replies_free for a pipeline's array). */
#ifndef QZ_REDIS_H
#define QZ_REDIS_H

#include "cfg.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

struct qz_redis;

#define QZ_REDIS_ANY 0 /* expect_type for "any non-error reply" */

/* timeout_ms bounds connect and each command's I/O (0 = 2000). Connects once
 * right away (a failure is logged, not returned). NULL only when out of memory. */
struct qz_redis *qz_redis_new(const struct qz_redis_url *url, int timeout_ms);
void qz_redis_free(struct qz_redis *r);

/* Runs one command (hiredis format: "SET %s %b", key, val, len).
 * expect_type is a REDIS_REPLY_* type or QZ_REDIS_ANY; an error reply is
 * always a failure (errstr has Redis's message), and so is another type
 * than expected. On success *out (if out is not NULL) gets the reply,
 * caller frees with freeReplyObject; with out NULL the reply is freed. */
int qz_redis_command(struct qz_redis *r, int expect_type, redisReply **out, char *errstr,
                     size_t errstr_size, const char *fmt, ...);
/* Binary-safe form (argvlen NULL = strlen of each). */
int qz_redis_command_argv(struct qz_redis *r, int expect_type, redisReply **out, char *errstr,
                          size_t errstr_size, int argc, const char **argv, const size_t *argvlen);

/* Pipelining: append commands, then qz_redis_exec reads one reply per
 * command. An append failure (connection down) is remembered and reported
 * by exec, which also discards the queue. */
void qz_redis_append(struct qz_redis *r, const char *fmt, ...);
void qz_redis_append_argv(struct qz_redis *r, int argc, const char **argv, const size_t *argvlen);
/* Returns 0 when every reply arrived and none is an error; then *replies
 * (if not NULL) is a malloc'd array of *n replies, freed with
 * qz_redis_replies_free. Returns -1 otherwise, errstr naming the first bad
 * command ("command 3 of 5: ERR ..."), nothing handed out. */
int qz_redis_exec(struct qz_redis *r, redisReply ***replies, size_t *n, char *errstr,
                  size_t errstr_size);
void qz_redis_replies_free(redisReply **replies, size_t n);

/* PING: 0 when Redis answers PONG (for /readyz). */
int qz_redis_ping(struct qz_redis *r, char *errstr, size_t errstr_size);

#endif
