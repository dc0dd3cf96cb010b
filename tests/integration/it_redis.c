/* it_redis.c - redis.h against the real Redis at QZ_TEST_REDIS_URL: commands, reply
 * type checks, pipelines, transparent reconnect after CLIENT KILL, SELECT and AUTH from
 * the URL, fail-fast backoff when unreachable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "log.h"
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PW "it-redis-pw"

struct fixture {
        struct qz_redis_url url;
        redisContext *admin; /* plain hiredis, to look behind the module's back */
};

static redisReply *admin_cmd(struct fixture *f, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        redisReply *r = redisvCommand(f->admin, fmt, ap);
        va_end(ap);
        if (!r || r->type == REDIS_REPLY_ERROR)
                fail_msg("admin %s: %s", fmt, r ? r->str : f->admin->errstr);
        return r;
}

static void admin_ok(struct fixture *f, const char *fmt, const char *arg)
{
        freeReplyObject(admin_cmd(f, fmt, arg));
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        const char *u = getenv("QZ_TEST_REDIS_URL");
        char err[256];

        qz_log_init("it_redis", QZ_LOG_ERROR);
        if (!u) {
                fprintf(stderr, "QZ_TEST_REDIS_URL is not set\n");
                return -1;
        }
        if (qz_redis_url_parse(u, &f->url, err, sizeof(err)) != 0) {
                fprintf(stderr, "QZ_TEST_REDIS_URL: %s\n", err);
                return -1;
        }
        f->admin = redisConnect(f->url.host, f->url.port);
        if (!f->admin || f->admin->err) {
                fprintf(stderr, "cannot connect to %s\n", u);
                return -1;
        }
        if (f->url.password[0])
                freeReplyObject(redisCommand(f->admin, "AUTH %s", f->url.password));
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        /* the admin connection stays authenticated, so it can always undo AUTH test state */
        freeReplyObject(redisCommand(f->admin, "CONFIG SET requirepass %s", f->url.password));
        freeReplyObject(redisCommand(f->admin, "SELECT 5"));
        freeReplyObject(redisCommand(f->admin, "DEL qz:it:db"));
        freeReplyObject(redisCommand(f->admin, "SELECT %d", f->url.db));
        freeReplyObject(redisCommand(f->admin, "DEL qz:it:k qz:it:list qz:it:z"));
        redisFree(f->admin);
        free(f);
        return 0;
}

static void test_commands(void **state)
{
        struct fixture *f = *state;
        struct qz_redis *r = qz_redis_new(&f->url, 2000);
        redisReply *rep = NULL;
        char err[256];
        const char *argv[] = {"SET", "qz:it:k", "a\0b"};
        const size_t lens[] = {3, 7, 3};

        assert_int_equal(qz_redis_ping(r, err, sizeof(err)), 0);
        assert_int_equal(qz_redis_command(r, REDIS_REPLY_STATUS, NULL, err, sizeof(err),
                                          "SET %s %s", "qz:it:k", "v1"),
                         0);
        assert_int_equal(
            qz_redis_command(r, REDIS_REPLY_STRING, &rep, err, sizeof(err), "GET %s", "qz:it:k"),
            0);
        assert_string_equal(rep->str, "v1");
        freeReplyObject(rep);
        /* wrong expected type is an error, and so is an error reply */
        assert_int_equal(
            qz_redis_command(r, REDIS_REPLY_INTEGER, &rep, err, sizeof(err), "GET %s", "qz:it:k"),
            -1);
        assert_non_null(strstr(err, "unexpected reply type"));
        assert_int_equal(
            qz_redis_command(r, QZ_REDIS_ANY, &rep, err, sizeof(err), "INCR %s", "qz:it:k"), -1);
        assert_non_null(strstr(err, "not an integer"));
        assert_int_equal(qz_redis_command(r, QZ_REDIS_ANY, &rep, err, sizeof(err), "NOSUCHCMD"),
                         -1);
        assert_non_null(strstr(err, "unknown command"));
        /* binary-safe argv */
        assert_int_equal(
            qz_redis_command_argv(r, REDIS_REPLY_STATUS, NULL, err, sizeof(err), 3, argv, lens), 0);
        assert_int_equal(
            qz_redis_command(r, REDIS_REPLY_STRING, &rep, err, sizeof(err), "GET qz:it:k"), 0);
        assert_int_equal(rep->len, 3);
        assert_memory_equal(rep->str, "a\0b", 3);
        freeReplyObject(rep);
        qz_redis_free(r);
}

static void test_pipeline(void **state)
{
        struct fixture *f = *state;
        struct qz_redis *r = qz_redis_new(&f->url, 2000);
        redisReply **reps = NULL;
        size_t n = 0;
        char err[256];

        qz_redis_append(r, "DEL %s", "qz:it:list");
        for (int i = 0; i < 100; i++)
                qz_redis_append(r, "RPUSH %s %d", "qz:it:list", i);
        qz_redis_append(r, "LLEN %s", "qz:it:list");
        assert_int_equal(qz_redis_exec(r, &reps, &n, err, sizeof(err)), 0);
        assert_int_equal(n, 102);
        assert_int_equal(reps[100]->integer, 100);
        assert_int_equal(reps[101]->type, REDIS_REPLY_INTEGER);
        assert_int_equal(reps[101]->integer, 100);
        qz_redis_replies_free(reps, n);

        /* one failing command fails the batch and is named */
        qz_redis_append(r, "SET qz:it:k x");
        qz_redis_append(r, "LPUSH qz:it:k y"); /* WRONGTYPE */
        qz_redis_append(r, "GET qz:it:k");
        assert_int_equal(qz_redis_exec(r, &reps, &n, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "command 2 of 3"));
        assert_non_null(strstr(err, "WRONGTYPE"));
        assert_null(reps);
        /* the connection is still in step: the next command gets its own reply */
        redisReply *rep = NULL;
        assert_int_equal(
            qz_redis_command(r, REDIS_REPLY_STRING, &rep, err, sizeof(err), "GET qz:it:k"), 0);
        assert_string_equal(rep->str, "x");
        freeReplyObject(rep);
        /* an empty batch is fine */
        assert_int_equal(qz_redis_exec(r, NULL, &n, err, sizeof(err)), 0);
        assert_int_equal(n, 0);
        qz_redis_free(r);
}

static long long client_id(struct qz_redis *r)
{
        redisReply *rep = NULL;
        char err[256];
        if (qz_redis_command(r, REDIS_REPLY_INTEGER, &rep, err, sizeof(err), "CLIENT ID") != 0)
                fail_msg("CLIENT ID: %s", err);
        long long id = rep->integer;
        freeReplyObject(rep);
        return id;
}

static void test_reconnect_after_kill(void **state)
{
        struct fixture *f = *state;
        struct qz_redis_url u = f->url;
        char err[256];

        u.db = 5; /* the new connection must SELECT again */
        struct qz_redis *r = qz_redis_new(&u, 2000);
        for (int round = 0; round < 3; round++) {
                long long id = client_id(r);
                redisReply *k = admin_cmd(f, "CLIENT KILL ID %lld", id);
                assert_int_equal(k->integer, 1);
                freeReplyObject(k);
                /* the very next call works, on a new connection, in the same db */
                assert_int_equal(qz_redis_command(r, REDIS_REPLY_STATUS, NULL, err, sizeof(err),
                                                  "SET qz:it:db %d", round),
                                 0);
                assert_true(client_id(r) != id);
        }
        admin_ok(f, "SELECT %s", "5");
        redisReply *g = admin_cmd(f, "GET qz:it:db");
        assert_string_equal(g->str, "2");
        freeReplyObject(g);
        char db[16];
        snprintf(db, sizeof(db), "%d", f->url.db);
        admin_ok(f, "SELECT %s", db);
        g = admin_cmd(f, "EXISTS qz:it:db");
        assert_int_equal(g->integer, 0); /* not written into the URL's db */
        freeReplyObject(g);
        qz_redis_free(r);
}

static void test_auth(void **state)
{
        struct fixture *f = *state;
        struct qz_redis_url good = f->url, bad = f->url;
        char err[256];

        snprintf(good.password, sizeof(good.password), "%s", PW);
        snprintf(bad.password, sizeof(bad.password), "%s", "wrong");
        admin_ok(f, "CONFIG SET requirepass %s", PW);

        struct qz_redis *r = qz_redis_new(&good, 2000);
        assert_int_equal(qz_redis_ping(r, err, sizeof(err)), 0);
        qz_redis_free(r);

        r = qz_redis_new(&bad, 2000);
        assert_int_equal(qz_redis_ping(r, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "unavailable"));
        qz_redis_free(r);

        r = qz_redis_new(&f->url, 2000); /* no password now refused */
        assert_int_equal(
            qz_redis_command(r, REDIS_REPLY_STATUS, NULL, err, sizeof(err), "SET qz:it:k z"), -1);
        qz_redis_free(r);

        freeReplyObject(admin_cmd(f, "CONFIG SET requirepass %s", f->url.password));
}

static void test_unreachable_backoff(void **state)
{
        (void)state;
        struct qz_redis_url u = {.host = "127.0.0.1", .port = 1};
        char err[256];

        struct qz_redis *r = qz_redis_new(&u, 500);
        assert_int_equal(qz_redis_ping(r, err, sizeof(err)), -1); /* inside the backoff window */
        assert_non_null(strstr(err, "127.0.0.1:1 unavailable"));
        qz_redis_append(r, "PING");
        assert_int_equal(qz_redis_exec(r, NULL, NULL, err, sizeof(err)), -1);
        qz_redis_free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_commands),
            cmocka_unit_test(test_pipeline),
            cmocka_unit_test(test_reconnect_after_kill),
            cmocka_unit_test(test_auth),
            cmocka_unit_test(test_unreachable_backoff),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
