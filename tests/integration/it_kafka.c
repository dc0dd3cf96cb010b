/* it_kafka.c - the producer, the consume-process-commit loop and the DLQ against the dev-broker.
 *
 * Env: QZ_TEST_BROKERS (bootstrap), QZ_TEST_BROKER_CONTROL (host:port of the
 * dev-broker's control port), QZ_TEST_ROOT (schemas in $QZ_TEST_ROOT/schemas).
 * Every test uses its own topics and groups (the mock cluster creates topics
 * on first produce), so tests never see each other's data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "avro.h"
#include "cfg.h"
#include "dlq.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *brokers, *control, *root;
static char prefix[64];
static struct qz_avro_registry *registry;

static void name(char *buf, size_t size, const char *what)
{
        snprintf(buf, size, "%s-%s", prefix, what);
}

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends one control line to the dev-broker and asserts the answer is "ok". */
static void broker_control(const char *line)
{
        struct qz_addr a;
        struct sockaddr_in sa = {.sin_family = AF_INET};
        char err[256], reply[256];
        int fd;
        ssize_t r;
        size_t got = 0;

        assert_int_equal(qz_addr_parse(control, &a, err, sizeof(err)), 0);
        sa.sin_port = htons((uint16_t)a.port);
        assert_int_equal(inet_pton(AF_INET, a.host[0] ? a.host : "127.0.0.1", &sa.sin_addr), 1);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(dprintf(fd, "%s\n", line) > 0, 1);
        while (got < sizeof(reply) - 1 &&
               (r = read(fd, reply + got, sizeof(reply) - 1 - got)) > 0) {
                got += (size_t)r;
                if (memchr(reply, '\n', got))
                        break;
        }
        close(fd);
        reply[got] = '\0';
        if (strcmp(reply, "ok\n") != 0) {
                fprintf(stderr, "control '%s' answered '%s'\n", line, reply);
                fail();
        }
}

static struct qz_kafka_producer *producer_new(int delivery_timeout_ms)
{
        struct qz_kafka_producer *p = NULL;
        char err[512];
        struct qz_kafka_producer_config cfg = {.brokers = brokers,
                                               .client_id = "it_kafka",
                                               .delivery_timeout_ms = delivery_timeout_ms};
        if (qz_kafka_producer_new(&cfg, &p, err, sizeof(err)) != 0) {
                fprintf(stderr, "producer: %s\n", err);
                fail();
        }
        return p;
}

/* Produces n records "k<i>"/"<tag>-<i>" (value "poison" at poison_at) and asserts all acked. */
static void produce_n(struct qz_kafka_producer *p, const char *topic, const char *tag, int n,
                      int poison_at)
{
        struct qz_kafka_record recs[64];
        char keys[64][32], vals[64][64], err[512];
        assert_true(n <= 64);
        for (int i = 0; i < n; i++) {
                snprintf(keys[i], sizeof(keys[i]), "k%d", i);
                snprintf(vals[i], sizeof(vals[i]), "%s-%d", tag, i);
                if (i == poison_at)
                        snprintf(vals[i], sizeof(vals[i]), "poison");
                recs[i] = (struct qz_kafka_record){.topic = topic,
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = keys[i],
                                                   .key_len = strlen(keys[i]),
                                                   .value = vals[i],
                                                   .value_len = strlen(vals[i])};
        }
        enum qz_kafka_status st =
            qz_kafka_produce_wait(p, recs, (size_t)n, 20000, err, sizeof(err));
        if (st != QZ_KAFKA_OK)
                fprintf(stderr, "produce: %s\n", err);
        assert_int_equal(st, QZ_KAFKA_OK);
        for (int i = 0; i < n; i++) {
                assert_int_equal(recs[i].err, 0);
                assert_true(recs[i].out_offset >= 0);
                assert_true(recs[i].out_partition >= 0);
        }
}

/* ---- running the loop with a deadline -------------------------------- */

struct seen {
        int calls;      /* callback invocations */
        int fail_first; /* return -1 on this many first calls */
        int want;       /* stop the consumer after this many messages were accepted */
        int n;          /* messages accepted */
        char vals[256][64];
        int64_t first_batch_offsets[64]; /* offsets of the first offered batch */
        size_t first_batch_n;
        bool retry_batches_equal;  /* every retry offered exactly the first batch */
        const char *group, *topic; /* for the committed-offset probe */
        bool committed_during_failure;
        bool reject_poison;
        struct qz_kafka_consumer *c;
};

struct watchdog {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool done;
        int ms;
        struct qz_kafka_consumer *c;
};

static void *watchdog_thread(void *arg)
{
        struct watchdog *w = arg;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += w->ms / 1000;
        pthread_mutex_lock(&w->mu);
        while (!w->done)
                if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
                        break;
        pthread_mutex_unlock(&w->mu);
        qz_kafka_consumer_stop(w->c); /* harmless when the callback already stopped it */
        return NULL;
}

static struct qz_kafka_consumer *consumer_new(const char *group, const char *topic,
                                              struct qz_kafka_producer *dlq, const char *dlq_topic,
                                              struct qz_metrics *m)
{
        struct qz_kafka_consumer *c = NULL;
        char err[512];
        const char *topics[] = {topic};
        struct qz_kafka_consumer_config cfg = {
            .brokers = brokers,
            .group_id = group,
            .topics = topics,
            .ntopics = 1,
            .service = "it_kafka",
            .batch_size = 100,
            .batch_wait_ms = 300,
            .retry_min_ms = 50,
            .retry_max_ms = 200,
            .lag_interval_ms = 500,
            .dlq_producer = dlq,
            .avro = dlq ? registry : NULL,
            .dlq_topic = dlq ? dlq_topic : NULL,
            .metrics = m,
        };
        if (qz_kafka_consumer_new(&cfg, &c, err, sizeof(err)) != 0) {
                fprintf(stderr, "consumer: %s\n", err);
                fail();
        }
        return c;
}

/* Runs c until the callback stops it or timeout_s passed. */
static void run_for(struct qz_kafka_consumer *c, qz_kafka_batch_cb cb, void *opaque, int timeout_s)
{
        struct watchdog w = {.ms = timeout_s * 1000, .c = c};
        pthread_t t;
        char err[512];
        pthread_mutex_init(&w.mu, NULL);
        pthread_cond_init(&w.cv, NULL);
        assert_int_equal(pthread_create(&t, NULL, watchdog_thread, &w), 0);
        int rc = qz_kafka_consumer_run(c, cb, opaque, err, sizeof(err));
        pthread_mutex_lock(&w.mu);
        w.done = true;
        pthread_cond_signal(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(t, NULL);
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
        assert_int_equal(rc, 0);
}

/* Sum of the group's committed offsets over the topic's partitions (-1 = none at all). */
static int64_t committed_total(const char *group, const char *topic)
{
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_t *rk;
        const rd_kafka_metadata_t *md = NULL;
        rd_kafka_topic_partition_list_t *parts;
        char err[256];
        int64_t total = -1;
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err));
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set_log_cb(conf, qz_kafka_log_cb);
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        assert_non_null(rk);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 10000), 0);
        assert_int_equal(md->topic_cnt, 1);
        parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
                rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id);
        assert_int_equal(rd_kafka_committed(rk, parts, 10000), 0);
        for (int i = 0; i < parts->cnt; i++)
                if (parts->elems[i].offset >= 0)
                        total = (total < 0 ? 0 : total) + parts->elems[i].offset;
        rd_kafka_topic_partition_list_destroy(parts);
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(rk);
        return total;
}

static int record_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                     struct qz_kafka_batch *batch)
{
        struct seen *s = opaque;
        s->calls++;
        if (s->calls == 1) {
                s->first_batch_n = n < 64 ? n : 64;
                for (size_t i = 0; i < s->first_batch_n; i++)
                        s->first_batch_offsets[i] = msgs[i].offset;
                s->retry_batches_equal = true;
        } else if (s->calls <= s->fail_first + 1) {
                /* A retry (or the success after the retries): the same batch again. */
                if (n != s->first_batch_n)
                        s->retry_batches_equal = false;
                for (size_t i = 0; i < n && i < s->first_batch_n; i++)
                        if (msgs[i].offset != s->first_batch_offsets[i])
                                s->retry_batches_equal = false;
        }
        if (s->calls <= s->fail_first) {
                if (s->calls == s->fail_first && committed_total(s->group, s->topic) >= 0)
                        s->committed_during_failure = true;
                return -1;
        }
        for (size_t i = 0; i < n; i++) {
                if (s->reject_poison && msgs[i].value_len == 6 &&
                    memcmp(msgs[i].value, "poison", 6) == 0) {
                        const char *errs[] = {"bad magic byte"};
                        assert_int_equal(qz_kafka_batch_reject(batch, i, "decode_error", errs, 1),
                                         0);
                        continue;
                }
                if (s->n < 256)
                        snprintf(s->vals[s->n], sizeof(s->vals[0]), "%.*s", (int)msgs[i].value_len,
                                 (const char *)msgs[i].value);
                s->n++;
        }
        if (s->n >= s->want)
                qz_kafka_consumer_stop(s->c);
        return 0;
}

/* ---- tests ----------------------------------------------------------- */

/* Produce, consume and commit; a second consumer in the group resumes after
 * the commit (no replay of the first 20). */
static void test_produce_consume_commit(void **state)
{
        (void)state;
        char topic[128], group[128];
        struct seen *s1 = calloc(1, sizeof(*s1)), *s2 = calloc(1, sizeof(*s2));
        struct qz_kafka_producer *p = producer_new(20000);
        name(topic, sizeof(topic), "plays");
        name(group, sizeof(group), "g-commit");

        produce_n(p, topic, "first", 20, -1);
        assert_true(qz_kafka_producer_ready(p));

        struct qz_kafka_consumer *c = consumer_new(group, topic, NULL, NULL, NULL);
        s1->want = 20;
        s1->c = c;
        run_for(c, record_cb, s1, 30);
        assert_int_equal(s1->n, 20);
        assert_true(qz_kafka_consumer_ready(c));
        qz_kafka_consumer_close(c);
        assert_int_equal(committed_total(group, topic), 20);

        produce_n(p, topic, "second", 5, -1);
        c = consumer_new(group, topic, NULL, NULL, NULL);
        s2->want = 5;
        s2->c = c;
        run_for(c, record_cb, s2, 30);
        qz_kafka_consumer_close(c);
        assert_int_equal(s2->n, 5);
        for (int i = 0; i < s2->n; i++)
                assert_memory_equal(s2->vals[i], "second-", 7);
        assert_int_equal(committed_total(group, topic), 25);
        qz_kafka_producer_close(p, 5000);
        free(s1);
        free(s2);
}

/* A failing callback gets the same batch again; nothing is committed until it succeeds. */
static void test_failed_batch_is_retried(void **state)
{
        (void)state;
        char topic[128], group[128];
        struct seen *s = calloc(1, sizeof(*s));
        struct qz_kafka_producer *p = producer_new(20000);
        struct qz_metrics *m = qz_metrics_new();
        name(topic, sizeof(topic), "retry");
        name(group, sizeof(group), "g-retry");
        produce_n(p, topic, "r", 3, -1);

        struct qz_kafka_consumer *c = consumer_new(group, topic, NULL, NULL, m);
        s->want = 3;
        s->fail_first = 2;
        s->group = group;
        s->topic = topic;
        s->c = c;
        run_for(c, record_cb, s, 30);
        qz_kafka_consumer_close(c);
        assert_int_equal(s->n, 3);
        assert_true(s->calls >= 3);
        assert_true(s->retry_batches_equal);
        assert_false(s->committed_during_failure);
        assert_int_equal(committed_total(group, topic), 3);
        char labels[200];
        snprintf(labels, sizeof(labels), "group=\"%s\"", group);
        assert_int_equal(
            (int)qz_metric_value(qz_metrics_counter(m, "qz_kafka_batch_retries_total", labels, "")),
            2);
        qz_metrics_free(m);
        qz_kafka_producer_close(p, 5000);
        free(s);
}

struct dlq_seen {
        int n;
        char reason[64], error0[64], value[64], topic[128];
        int64_t offset;
        struct qz_kafka_consumer *c;
};

static int dlq_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                  struct qz_kafka_batch *batch)
{
        struct dlq_seen *d = opaque;
        (void)batch;
        for (size_t i = 0; i < n; i++) {
                json_t *v = NULL;
                const struct qz_avro_schema *schema = NULL;
                char err[256];
                if (qz_avro_decode_json(registry, msgs[i].value, msgs[i].value_len, &schema, &v,
                                        err, sizeof(err)) != 0) {
                        fprintf(stderr, "DLQ record does not decode: %s\n", err);
                        continue;
                }
                snprintf(d->reason, sizeof(d->reason), "%s",
                         json_string_value(json_object_get(v, "reason")));
                snprintf(d->error0, sizeof(d->error0), "%s",
                         json_string_value(json_array_get(json_object_get(v, "errors"), 0)));
                snprintf(d->value, sizeof(d->value), "%s",
                         json_string_value(json_object_get(v, "original_value")));
                snprintf(d->topic, sizeof(d->topic), "%s",
                         json_string_value(json_object_get(v, "original_topic")));
                d->offset = json_integer_value(json_object_get(v, "original_offset"));
                json_decref(v);
                d->n++;
        }
        qz_kafka_consumer_stop(d->c);
        return 0;
}

/* A poison message goes to the DLQ as a decodable RejectedEvent; its offset is committed. */
static void test_poison_goes_to_dlq(void **state)
{
        (void)state;
        char topic[128], dlq_topic[128], group[128], dgroup[128];
        struct seen *s = calloc(1, sizeof(*s));
        struct dlq_seen *d = calloc(1, sizeof(*d));
        struct qz_kafka_producer *p = producer_new(20000);
        name(topic, sizeof(topic), "poison");
        name(dlq_topic, sizeof(dlq_topic), "poison.dlq");
        name(group, sizeof(group), "g-poison");
        name(dgroup, sizeof(dgroup), "g-poison-dlq");
        produce_n(p, topic, "ok", 4, 2);

        struct qz_kafka_consumer *c = consumer_new(group, topic, p, dlq_topic, NULL);
        s->want = 3;
        s->reject_poison = true;
        s->c = c;
        run_for(c, record_cb, s, 30);
        qz_kafka_consumer_close(c);
        assert_int_equal(s->n, 3);
        assert_int_equal(committed_total(group, topic), 4);

        c = consumer_new(dgroup, dlq_topic, NULL, NULL, NULL);
        d->c = c;
        run_for(c, dlq_cb, d, 30);
        qz_kafka_consumer_close(c);
        assert_int_equal(d->n, 1);
        assert_string_equal(d->reason, "decode_error");
        assert_string_equal(d->error0, "bad magic byte");
        assert_string_equal(d->value, "cG9pc29u"); /* base64("poison") */
        assert_string_equal(d->topic, topic);
        assert_true(d->offset >= 0);
        qz_kafka_producer_close(p, 5000);
        free(s);
        free(d);
}

/* A committed offset beyond the log end is an incident: counted, then the
 * loop restarts at the earliest offset instead of skipping silently. */
static void test_offset_out_of_range_is_an_incident(void **state)
{
        (void)state;
        char topic[128], group[128], labels[200], err[256];
        struct seen *s = calloc(1, sizeof(*s));
        struct qz_kafka_producer *p = producer_new(20000);
        struct qz_metrics *m = qz_metrics_new();
        struct qz_kafka_record rec = {.topic = topic, .partition = 0, .value = "x", .value_len = 1};
        name(topic, sizeof(topic), "reset");
        name(group, sizeof(group), "g-reset");
        assert_int_equal(qz_kafka_produce_wait(p, &rec, 1, 20000, err, sizeof(err)), QZ_KAFKA_OK);

        /* Commit offset 1000 for partition 0 (the log has 1 message). */
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err));
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        assert_non_null(rk);
        rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(offs, topic, 0)->offset = 1000;
        assert_int_equal(rd_kafka_commit(rk, offs, 0), 0);
        rd_kafka_topic_partition_list_destroy(offs);
        rd_kafka_destroy(rk);

        struct qz_kafka_consumer *c = consumer_new(group, topic, NULL, NULL, m);
        s->want = 1;
        s->c = c;
        run_for(c, record_cb, s, 30);
        qz_kafka_consumer_close(c);
        assert_int_equal(s->n, 1);
        assert_string_equal(s->vals[0], "x");
        snprintf(labels, sizeof(labels), "group=\"%s\"", group);
        assert_int_equal(
            (int)qz_metric_value(qz_metrics_counter(m, "qz_kafka_offset_resets_total", labels, "")),
            1);
        qz_metrics_free(m);
        qz_kafka_producer_close(p, 5000);
        free(s);
}

/* Broker down: produce-and-wait fails within its timeout (no false success);
 * after "up" the same producer works again. */
static void test_broker_down_then_up(void **state)
{
        (void)state;
        char topic[128], line[256], err[512];
        struct qz_kafka_producer *p = producer_new(60000);
        struct qz_kafka_record rec = {.topic = topic, .partition = 0, .value = "a", .value_len = 1};
        name(topic, sizeof(topic), "down");
        assert_int_equal(qz_kafka_produce_wait(p, &rec, 1, 20000, err, sizeof(err)), QZ_KAFKA_OK);
        snprintf(line, sizeof(line), "leader %s 0 2", topic);
        broker_control(line);

        broker_control("down 2");
        rec.value = "b";
        int64_t t0 = mono_ms();
        enum qz_kafka_status st = qz_kafka_produce_wait(p, &rec, 1, 2000, err, sizeof(err));
        int64_t took = mono_ms() - t0;
        broker_control("up 2");
        assert_int_equal(st, QZ_KAFKA_UNAVAILABLE);
        assert_int_not_equal(rec.err, 0);
        assert_true(took >= 1900 && took < 4000);

        rec.value = "c";
        st = qz_kafka_produce_wait(p, &rec, 1, 30000, err, sizeof(err));
        if (st != QZ_KAFKA_OK)
                fprintf(stderr, "after up: %s\n", err);
        assert_int_equal(st, QZ_KAFKA_OK);
        assert_int_equal(rec.err, 0);
        qz_kafka_producer_close(p, 5000);
}

struct bg {
        struct qz_kafka_consumer *c;
        atomic_int got;
        int rc;
};

static int count_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                    struct qz_kafka_batch *batch)
{
        struct bg *b = opaque;
        (void)msgs;
        (void)batch;
        atomic_fetch_add(&b->got, (int)n);
        return 0;
}

static void *bg_run(void *arg)
{
        struct bg *b = arg;
        char err[512];
        b->rc = qz_kafka_consumer_run(b->c, count_cb, b, err, sizeof(err));
        return NULL;
}

/* Polls until cond(p, c) or timeout_ms; returns whether it became true. */
static bool wait_until(bool (*cond)(struct qz_kafka_producer *, struct qz_kafka_consumer *),
                       struct qz_kafka_producer *p, struct qz_kafka_consumer *c, int timeout_ms)
{
        for (int64_t end = mono_ms() + timeout_ms; mono_ms() < end; usleep(100000))
                if (cond(p, c))
                        return true;
        return false;
}

static bool both_ready(struct qz_kafka_producer *p, struct qz_kafka_consumer *c)
{
        return qz_kafka_producer_ready(p) && qz_kafka_consumer_ready(c);
}

static bool neither_ready(struct qz_kafka_producer *p, struct qz_kafka_consumer *c)
{
        return !qz_kafka_producer_ready(p) && !qz_kafka_consumer_ready(c);
}

/* Every broker down: producer and consumer report not-ready; brought back,
 * both recover by themselves and the consumer receives new messages. */
static void test_all_brokers_down_readiness(void **state)
{
        (void)state;
        char topic[128], group[128];
        struct bg b = {.rc = -1};
        pthread_t t;
        struct qz_kafka_producer *p = producer_new(60000);
        name(topic, sizeof(topic), "ready");
        name(group, sizeof(group), "g-ready");
        produce_n(p, topic, "a", 1, -1);
        b.c = consumer_new(group, topic, NULL, NULL, NULL);
        assert_int_equal(pthread_create(&t, NULL, bg_run, &b), 0);
        assert_true(wait_until(both_ready, p, b.c, 15000));

        broker_control("down 1");
        broker_control("down 2");
        broker_control("down 3");
        bool went_down = wait_until(neither_ready, p, b.c, 10000);
        broker_control("up 1");
        broker_control("up 2");
        broker_control("up 3");
        assert_true(went_down);
        assert_true(wait_until(both_ready, p, b.c, 30000));

        produce_n(p, topic, "b", 1, -1);
        for (int64_t end = mono_ms() + 20000; mono_ms() < end && atomic_load(&b.got) < 2;)
                usleep(100000);
        qz_kafka_consumer_stop(b.c);
        pthread_join(t, NULL);
        assert_int_equal(b.rc, 0);
        assert_int_equal(atomic_load(&b.got), 2);
        qz_kafka_consumer_close(b.c);
        qz_kafka_producer_close(p, 5000);
}

int main(int argc, char **argv)
{
        char err[512], dir[4096];
        enum qz_log_level level = QZ_LOG_WARN;
        const char *lv = getenv("QOQNUZ_LOG_LEVEL");
        if (lv)
                qz_log_level_parse(lv, &level);
        qz_log_init("it_kafka", level);
        if (argc > 1)
                cmocka_set_test_filter(argv[1]); /* e.g. "*dlq*" */
        brokers = getenv("QZ_TEST_BROKERS");
        control = getenv("QZ_TEST_BROKER_CONTROL");
        root = getenv("QZ_TEST_ROOT");
        if (!brokers || !*brokers || !control || !*control || !root || !*root) {
                fprintf(stderr, "it_kafka: QZ_TEST_BROKERS, QZ_TEST_BROKER_CONTROL and "
                                "QZ_TEST_ROOT must be set\n");
                return 1;
        }
        snprintf(prefix, sizeof(prefix), "it-kafka-%d-%ld", (int)getpid(), (long)time(NULL));
        snprintf(dir, sizeof(dir), "%s/schemas", root);
        if (qz_avro_registry_load(dir, &registry, err, sizeof(err)) != 0) {
                fprintf(stderr, "it_kafka: schemas: %s\n", err);
                return 1;
        }
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_produce_consume_commit),
            cmocka_unit_test(test_failed_batch_is_retried),
            cmocka_unit_test(test_poison_goes_to_dlq),
            cmocka_unit_test(test_offset_out_of_range_is_an_incident),
            cmocka_unit_test(test_broker_down_then_up),
            cmocka_unit_test(test_all_brokers_down_readiness),
        };
        int rc = cmocka_run_group_tests(tests, NULL, NULL);
        qz_avro_registry_free(registry);
        return rc;
}
