/* kafka_producer.c - the idempotent producer whose callers wait for broker acknowledgements.
 *
 * Each qz_kafka_produce_wait() call allocates one batch: a mutex, a condition
 * variable and one slot per record. A slot's address is the record's
 * msg_opaque; the delivery report callback (run by this module's poll thread)
 * fills the slot and signals. The batch is reference counted (one reference
 * per queued record plus one for the waiter), so a waiter that gives up at
 * its timeout can return while late delivery reports still land safely. */
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct batch;

struct slot {
        struct batch *batch;
        rd_kafka_resp_err_t err;
        int32_t partition;
        int64_t offset;
        bool done;
};

struct batch {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        size_t pending; /* queued records without a delivery report yet */
        size_t refs;    /* pending + the waiter's */
        struct slot slots[];
};

struct qz_kafka_producer {
        rd_kafka_t *rk;
        pthread_t poller;
        bool poller_started;
        atomic_bool stop;
        atomic_bool broken;      /* fatal error: recreate the producer */
        atomic_bool broker_seen; /* some broker has been up since start */
        atomic_bool all_down;    /* last word from librdkafka: no broker up */
        int queue_full_wait_ms;
        struct qz_metric *m_ok, *m_failed, *m_queue_full;
};

/* ---- shared helpers (also used by kafka_consumer.c) ------------------ */

void qz_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
        enum qz_log_level l = level <= 3   ? QZ_LOG_ERROR
                              : level <= 4 ? QZ_LOG_WARN
                              : level <= 6 ? QZ_LOG_INFO
                                           : QZ_LOG_DEBUG;
        if (!qz_log_enabled(l))
                return;
        qz_log_kv(l, buf, "component", "librdkafka", "client", rd_kafka_name(rk), "facility", fac,
                  NULL);
}

int qz_kafka_stats_brokers_up(const char *json, size_t len)
{
        json_t *root = json_loadb(json, len, 0, NULL);
        json_t *brokers, *b;
        const char *name;
        int up = 0;
        if (!root)
                return -1;
        brokers = json_object_get(root, "brokers");
        json_object_foreach(brokers, name, b)
        {
                const char *state = json_string_value(json_object_get(b, "state"));
                if (state && strcmp(state, "UP") == 0)
                        up++;
        }
        json_decref(root);
        return up;
}

/* ---- callbacks (poll thread) ----------------------------------------- */

static void batch_unref_locked(struct batch *b)
{
        bool last = --b->refs == 0;
        pthread_mutex_unlock(&b->mu);
        if (last) {
                pthread_mutex_destroy(&b->mu);
                pthread_cond_destroy(&b->cv);
                free(b);
        }
}

static void delivery_report_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        struct qz_kafka_producer *p = opaque;
        struct slot *s = m->_private;
        (void)rk;
        if (m->err == 0) {
                atomic_store(&p->broker_seen, true);
                atomic_store(&p->all_down, false);
                if (p->m_ok)
                        qz_metric_inc(p->m_ok);
        } else if (p->m_failed) {
                qz_metric_inc(p->m_failed);
        }
        if (!s)
                return;
        struct batch *b = s->batch;
        pthread_mutex_lock(&b->mu);
        s->err = m->err;
        s->partition = m->partition;
        s->offset = m->offset;
        s->done = true;
        if (--b->pending == 0)
                pthread_cond_broadcast(&b->cv);
        batch_unref_locked(b);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
        struct qz_kafka_producer *p = opaque;
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                char buf[512];
                rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, buf, sizeof(buf));
                atomic_store(&p->broken, true);
                qz_log_kv(QZ_LOG_ERROR, "kafka producer fatal error: producer must be recreated",
                          "error", rd_kafka_err2name(ferr), "reason", buf, NULL);
                return;
        }
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                atomic_store(&p->all_down, true);
        qz_log_kv(QZ_LOG_WARN, "kafka producer error", "error",
                  rd_kafka_err2name((rd_kafka_resp_err_t)err), "reason", reason, NULL);
}

/* Statistics arrive every second; they are the one place that says a broker
 * came back when nothing is being produced. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
        struct qz_kafka_producer *p = opaque;
        int up = qz_kafka_stats_brokers_up(json, len);
        (void)rk;
        if (up > 0) {
                atomic_store(&p->broker_seen, true);
                atomic_store(&p->all_down, false);
        } else if (up == 0) {
                atomic_store(&p->all_down, true);
        }
        return 0; /* librdkafka frees json */
}

static void *poll_thread(void *arg)
{
        struct qz_kafka_producer *p = arg;
        while (!atomic_load(&p->stop))
                rd_kafka_poll(p->rk, 100);
        return NULL;
}

/* ---- lifecycle ------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr,
                    size_t errstr_size)
{
        char rderr[256];
        if (rd_kafka_conf_set(conf, k, v, rderr, sizeof(rderr)) == RD_KAFKA_CONF_OK)
                return 0;
        snprintf(errstr, errstr_size, "kafka producer config %s=%s: %s", k, v, rderr);
        return -1;
}

int qz_kafka_producer_new(const struct qz_kafka_producer_config *cfg,
                          struct qz_kafka_producer **out, char *errstr, size_t errstr_size)
{
        struct qz_kafka_producer *p = NULL;
        rd_kafka_conf_t *conf = NULL;
        char num[3][32], rderr[256];

        if (!cfg->brokers || !*cfg->brokers) {
                snprintf(errstr, errstr_size, "kafka producer: no brokers configured");
                return -1;
        }
        p = calloc(1, sizeof(*p));
        if (!p) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        p->queue_full_wait_ms = cfg->queue_full_wait_ms > 0 ? cfg->queue_full_wait_ms : 50;
        snprintf(num[0], sizeof(num[0]), "%d", cfg->linger_ms > 0 ? cfg->linger_ms : 5);
        snprintf(num[1], sizeof(num[1]), "%d",
                 cfg->delivery_timeout_ms > 0 ? cfg->delivery_timeout_ms : 30000);
        snprintf(num[2], sizeof(num[2]), "%d",
                 cfg->queue_max_messages > 0 ? cfg->queue_max_messages : 100000);

        conf = rd_kafka_conf_new();
        if (conf_set(conf, "bootstrap.servers", cfg->brokers, errstr, errstr_size) != 0 ||
            conf_set(conf, "client.id", cfg->client_id ? cfg->client_id : "qoqnuz", errstr,
                     errstr_size) != 0 ||
            conf_set(conf, "enable.idempotence", "true", errstr, errstr_size) != 0 ||
            conf_set(conf, "acks", "all", errstr, errstr_size) != 0 ||
            conf_set(conf, "linger.ms", num[0], errstr, errstr_size) != 0 ||
            conf_set(conf, "message.timeout.ms", num[1], errstr, errstr_size) != 0 ||
            conf_set(conf, "queue.buffering.max.messages", num[2], errstr, errstr_size) != 0 ||
            /* the Java client's partitioner, so every producer agrees on key -> partition */
            conf_set(conf, "partitioner", "murmur2_random", errstr, errstr_size) != 0 ||
            conf_set(conf, "statistics.interval.ms", "1000", errstr, errstr_size) != 0)
                goto fail;
        rd_kafka_conf_set_opaque(conf, p);
        rd_kafka_conf_set_dr_msg_cb(conf, delivery_report_cb);
        rd_kafka_conf_set_error_cb(conf, error_cb);
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
        rd_kafka_conf_set_log_cb(conf, qz_kafka_log_cb);

        p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, rderr, sizeof(rderr));
        if (!p->rk) {
                snprintf(errstr, errstr_size, "kafka producer: %s", rderr);
                goto fail;
        }
        conf = NULL; /* now owned by rk */
        if (cfg->metrics) {
                const char *h = "Records produced, by delivery outcome.";
                p->m_ok =
                    qz_metrics_counter(cfg->metrics, "qz_kafka_produced_total", "result=\"ok\"", h);
                p->m_failed = qz_metrics_counter(cfg->metrics, "qz_kafka_produced_total",
                                                 "result=\"failed\"", h);
                p->m_queue_full = qz_metrics_counter(cfg->metrics, "qz_kafka_produced_total",
                                                     "result=\"queue_full\"", h);
        }
        if (pthread_create(&p->poller, NULL, poll_thread, p) != 0) {
                snprintf(errstr, errstr_size, "kafka producer: cannot start poll thread");
                goto fail;
        }
        p->poller_started = true;
        *out = p;
        return 0;
fail:
        if (conf)
                rd_kafka_conf_destroy(conf);
        if (p && p->rk)
                rd_kafka_destroy(p->rk);
        free(p);
        return -1;
}

void qz_kafka_producer_close(struct qz_kafka_producer *p, int flush_timeout_ms)
{
        if (!p)
                return;
        atomic_store(&p->stop, true);
        if (p->poller_started)
                pthread_join(p->poller, NULL);
        rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, flush_timeout_ms);
        int left = rd_kafka_outq_len(p->rk);
        if (err || left > 0) {
                char n[32];
                snprintf(n, sizeof(n), "%d", left);
                qz_log_kv(QZ_LOG_ERROR, "kafka producer closed with undelivered records", "left", n,
                          NULL);
                /* Purged records get their delivery reports (freeing abandoned batches). */
                rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                rd_kafka_flush(p->rk, 1000);
        }
        rd_kafka_destroy(p->rk);
        free(p);
}

bool qz_kafka_producer_ready(struct qz_kafka_producer *p)
{
        return !atomic_load(&p->broken) && atomic_load(&p->broker_seen) &&
               !atomic_load(&p->all_down);
}

bool qz_kafka_producer_broken(struct qz_kafka_producer *p)
{
        return atomic_load(&p->broken);
}

rd_kafka_t *qz_kafka_producer_handle(struct qz_kafka_producer *p)
{
        return p->rk;
}

/* ---- produce and wait ------------------------------------------------ */

/* Errors that retrying cannot fix. */
static bool err_is_permanent(rd_kafka_resp_err_t err)
{
        switch (err) {
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        case RD_KAFKA_RESP_ERR_INVALID_RECORD:
        case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
        case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        case RD_KAFKA_RESP_ERR__INVALID_ARG:
        case RD_KAFKA_RESP_ERR__BAD_MSG:
                return true;
        default:
                return false;
        }
}

static enum qz_kafka_status status_of(rd_kafka_resp_err_t err)
{
        if (err == 0)
                return QZ_KAFKA_OK;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                return QZ_KAFKA_QUEUE_FULL;
        return err_is_permanent(err) ? QZ_KAFKA_REJECTED : QZ_KAFKA_UNAVAILABLE;
}

/* QUEUE_FULL > UNAVAILABLE > REJECTED > OK */
static int severity(enum qz_kafka_status s)
{
        static const int rank[] = {[QZ_KAFKA_OK] = 0,
                                   [QZ_KAFKA_REJECTED] = 1,
                                   [QZ_KAFKA_UNAVAILABLE] = 2,
                                   [QZ_KAFKA_QUEUE_FULL] = 3};
        return rank[s];
}

static rd_kafka_resp_err_t produce_one(struct qz_kafka_producer *p, const struct qz_kafka_record *r,
                                       struct slot *s)
{
        int waited = 0;
        for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    p->rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_PARTITION(r->partition),
                    RD_KAFKA_V_KEY(r->key, r->key ? r->key_len : 0),
                    RD_KAFKA_V_VALUE((void *)r->value, r->value_len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(s), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || waited >= p->queue_full_wait_ms)
                        return err;
                /* The poll thread drains the queue; give it a moment. */
                usleep(5000);
                waited += 5;
        }
}

static void deadline_after(struct timespec *ts, int ms)
{
        clock_gettime(CLOCK_MONOTONIC, ts);
        ts->tv_sec += ms / 1000;
        ts->tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

static struct batch *batch_new(size_t n)
{
        pthread_condattr_t ca;
        struct batch *b = calloc(1, sizeof(*b) + n * sizeof(struct slot));
        if (!b)
                return NULL;
        pthread_mutex_init(&b->mu, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&b->cv, &ca);
        pthread_condattr_destroy(&ca);
        b->refs = 1; /* the waiter's */
        for (size_t i = 0; i < n; i++)
                b->slots[i].batch = b;
        return b;
}

enum qz_kafka_status qz_kafka_produce_wait(struct qz_kafka_producer *p,
                                           struct qz_kafka_record *recs, size_t n, int timeout_ms,
                                           char *errstr, size_t errstr_size)
{
        enum qz_kafka_status worst = QZ_KAFKA_OK;
        struct batch *b = NULL;
        struct timespec deadline;
        size_t first_bad = n;

        if (errstr_size)
                errstr[0] = '\0';
        if (n == 0)
                return QZ_KAFKA_OK;
        if (atomic_load(&p->broken)) {
                for (size_t i = 0; i < n; i++)
                        recs[i].err = RD_KAFKA_RESP_ERR__FATAL;
                snprintf(errstr, errstr_size, "kafka producer is broken (fatal error)");
                return QZ_KAFKA_UNAVAILABLE;
        }
        b = batch_new(n);
        if (!b) {
                snprintf(errstr, errstr_size, "out of memory");
                return QZ_KAFKA_UNAVAILABLE;
        }
        deadline_after(&deadline, timeout_ms);
        for (size_t i = 0; i < n; i++) {
                struct slot *s = &b->slots[i];
                rd_kafka_resp_err_t err;
                /* Count the reference first: the report may arrive before producev returns. */
                pthread_mutex_lock(&b->mu);
                b->refs++;
                b->pending++;
                pthread_mutex_unlock(&b->mu);
                err = produce_one(p, &recs[i], s);
                if (err) {
                        pthread_mutex_lock(&b->mu);
                        b->refs--;
                        b->pending--;
                        s->err = err;
                        s->partition = recs[i].partition;
                        s->offset = -1;
                        s->done = true;
                        pthread_mutex_unlock(&b->mu);
                        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && p->m_queue_full)
                                qz_metric_inc(p->m_queue_full);
                }
        }

        pthread_mutex_lock(&b->mu);
        while (b->pending > 0) {
                int rc = pthread_cond_timedwait(&b->cv, &b->mu, &deadline);
                if (rc == ETIMEDOUT)
                        break;
        }
        for (size_t i = 0; i < n; i++) {
                struct slot *s = &b->slots[i];
                recs[i].err = s->done ? s->err : RD_KAFKA_RESP_ERR__TIMED_OUT;
                recs[i].out_partition = s->done ? s->partition : recs[i].partition;
                recs[i].out_offset = s->done ? s->offset : -1;
                enum qz_kafka_status st = status_of(recs[i].err);
                if (severity(st) > severity(worst))
                        worst = st;
                if (recs[i].err && first_bad == n)
                        first_bad = i;
        }
        batch_unref_locked(b); /* late reports still find their batch */

        if (first_bad < n)
                snprintf(errstr, errstr_size, "record %zu of %zu to %s: %s", first_bad, n,
                         recs[first_bad].topic, rd_kafka_err2str(recs[first_bad].err));
        return worst;
}
