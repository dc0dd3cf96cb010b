/* kafka_consumer.c - the consume -> process -> commit loop every consuming service runs.
 *
 * Offsets are committed explicitly, per batch, after the service's callback
 * made the batch durable (enable.auto.commit and auto.offset.store are off).
 * Rebalances only happen inside rd_kafka_consumer_poll(), i.e. while a batch
 * is being collected, never while one is processed: on revoke the collected,
 * unprocessed messages of the revoked partitions are dropped uncommitted, so
 * the next owner replays them.
 *
 * auto.offset.reset is "error" so that an out-of-range offset reaches us as
 * an event instead of a silent skip; partitions without a committed offset
 * are started at the beginning explicitly at assignment time. While a failing
 * batch is retried the loop does not poll: a retry that outlasts
 * max.poll.interval.ms (5 min) costs the group membership, the commit then
 * fails and the batch is replayed after rejoining (effects are idempotent). */
#include "kafka.h"
#include "clock.h"
#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "sig.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct reject {
        size_t index;
        char *reason;
        char **errors; /* NULL = none */
        size_t nerrors;
};

struct qz_kafka_batch {
        struct qz_kafka_consumer *c;
        size_t n;
        struct reject *rejects;
        size_t nrejects, cap;
};

struct qz_kafka_consumer {
        rd_kafka_t *rk;
        char *service, *group_id, *dlq_topic;
        struct qz_kafka_producer *dlq_producer;
        const struct qz_avro_registry *avro;
        size_t batch_size;
        int batch_wait_ms, retry_min_ms, retry_max_ms, lag_interval_ms, dlq_timeout_ms;
        void (*idle_cb)(void *);
        void *idle_opaque;
        void (*assign_cb)(void *, rd_kafka_topic_partition_list_t *);
        void (*revoke_cb)(void *, const rd_kafka_topic_partition_list_t *);
        void *rebalance_opaque;
        int idle_interval_ms;
        int64_t next_idle_ms;
        struct qz_metrics *metrics;
        struct qz_metric *m_consumed, *m_committed, *m_dlq, *m_retries, *m_resets, *m_commit_failed;
        atomic_bool stop;
        atomic_bool joined;           /* got an assignment since the last revoke */
        atomic_bool all_down;         /* librdkafka's last word: no broker up */
        rd_kafka_message_t **pending; /* collected, not yet processed */
        size_t npending;
        struct qz_kafka_msg *msgs;
        int64_t next_lag_ms;
};

static bool stopping(struct qz_kafka_consumer *c)
{
        return atomic_load(&c->stop) || qz_sig_stop_requested();
}

/* Sleeps ms in short slices; true when a stop was requested meanwhile. */
static bool sleep_unless_stopped(struct qz_kafka_consumer *c, int ms)
{
        for (int64_t end = qz_clock_mono_ms() + ms; qz_clock_mono_ms() < end;) {
                if (stopping(c))
                        return true;
                usleep(20000);
        }
        return stopping(c);
}

static int backoff_ms(const struct qz_kafka_consumer *c, int attempt)
{
        int64_t d = c->retry_min_ms;
        for (int i = 0; i < attempt && d < c->retry_max_ms; i++)
                d *= 2;
        return d > c->retry_max_ms ? c->retry_max_ms : (int)d;
}

/* "plays.v1[0,3,5] tracks.v1[1]" (truncated to the buffer). */
static void parts_str(const rd_kafka_topic_partition_list_t *parts, char *buf, size_t size)
{
        size_t o = 0;
        buf[0] = '\0';
        for (int i = 0; parts && i < parts->cnt && o + 1 < size; i++) {
                const rd_kafka_topic_partition_t *p = &parts->elems[i];
                bool same = i > 0 && strcmp(parts->elems[i - 1].topic, p->topic) == 0;
                int w = same ? snprintf(buf + o, size - o, ",%" PRId32, p->partition)
                             : snprintf(buf + o, size - o, "%s%s[%" PRId32, i ? "] " : "", p->topic,
                                        p->partition);
                if (w < 0 || (size_t)w >= size - o)
                        return;
                o += (size_t)w;
        }
        if (parts && parts->cnt && o + 1 < size)
                snprintf(buf + o, size - o, "]");
}

/* ---- callbacks (run inside rd_kafka_consumer_poll, on the loop thread) ---- */

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
        struct qz_kafka_consumer *c = opaque;
        (void)rk;
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                atomic_store(&c->all_down, true);
        qz_log_kv(err == RD_KAFKA_RESP_ERR__FATAL ? QZ_LOG_ERROR : QZ_LOG_WARN,
                  "kafka consumer error", "group", c->group_id, "error",
                  rd_kafka_err2name((rd_kafka_resp_err_t)err), "reason", reason, NULL);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
        struct qz_kafka_consumer *c = opaque;
        int up = qz_kafka_stats_brokers_up(json, len);
        (void)rk;
        if (up >= 0)
                atomic_store(&c->all_down, up == 0);
        return 0;
}

/* Of the partitions without a start offset (INVALID = "use committed"), those
 * the group never committed start at the beginning. */
static void set_start_offsets(struct qz_kafka_consumer *c, rd_kafka_topic_partition_list_t *parts)
{
        rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
        rd_kafka_resp_err_t err = rd_kafka_committed(c->rk, committed, 10000);
        if (err) {
                /* Falls back to the offset-reset event, which handles "none" too. */
                qz_log_kv(QZ_LOG_WARN, "cannot fetch committed offsets at assignment", "group",
                          c->group_id, "error", rd_kafka_err2str(err), NULL);
        } else {
                for (int i = 0; i < committed->cnt; i++)
                        if (parts->elems[i].offset == RD_KAFKA_OFFSET_INVALID &&
                            committed->elems[i].err == 0 && committed->elems[i].offset < 0)
                                parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_topic_partition_list_destroy(committed);
}

/* Drops collected messages of the given partitions: uncommitted, so replayed. */
static size_t drop_pending(struct qz_kafka_consumer *c,
                           const rd_kafka_topic_partition_list_t *parts)
{
        size_t k = 0, dropped = 0;
        for (size_t i = 0; i < c->npending; i++) {
                rd_kafka_message_t *m = c->pending[i];
                if (!parts || rd_kafka_topic_partition_list_find(parts, rd_kafka_topic_name(m->rkt),
                                                                 m->partition)) {
                        rd_kafka_message_destroy(m);
                        dropped++;
                } else {
                        c->pending[k++] = m;
                }
        }
        c->npending = k;
        return dropped;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
        struct qz_kafka_consumer *c = opaque;
        char list[512], n[32];
        parts_str(parts, list, sizeof(list));
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                set_start_offsets(c, parts);
                if (c->assign_cb)
                        c->assign_cb(c->rebalance_opaque, parts);
                qz_log_kv(QZ_LOG_INFO, "partitions assigned", "group", c->group_id, "partitions",
                          list, NULL);
                rd_kafka_assign(rk, parts);
                atomic_store(&c->joined, true);
                return;
        }
        snprintf(n, sizeof(n), "%zu", drop_pending(c, parts));
        if (c->revoke_cb)
                c->revoke_cb(c->rebalance_opaque, parts);
        qz_log_kv(err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? QZ_LOG_INFO : QZ_LOG_WARN,
                  "partitions revoked", "group", c->group_id, "partitions", list,
                  "dropped_uncommitted", n, "reason", rd_kafka_err2str(err), NULL);
        rd_kafka_assign(rk, NULL);
        atomic_store(&c->joined, false);
}

/* ---- lifecycle ------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr,
                    size_t errstr_size)
{
        char rderr[256];
        if (rd_kafka_conf_set(conf, k, v, rderr, sizeof(rderr)) == RD_KAFKA_CONF_OK)
                return 0;
        snprintf(errstr, errstr_size, "kafka consumer config %s=%s: %s", k, v, rderr);
        return -1;
}

static void make_metrics(struct qz_kafka_consumer *c)
{
        char labels[300];
        struct qz_metrics *m = c->metrics;
        if (!m)
                return;
        snprintf(labels, sizeof(labels), "group=\"%s\"", c->group_id);
        c->m_consumed = qz_metrics_counter(m, "qz_kafka_consumed_total", labels,
                                           "Messages handed to the batch callback.");
        c->m_committed = qz_metrics_counter(m, "qz_kafka_committed_total", labels,
                                            "Messages whose offsets were committed.");
        c->m_dlq = qz_metrics_counter(m, "qz_kafka_dlq_total", labels,
                                      "Messages rejected to the dead-letter topic.");
        c->m_retries = qz_metrics_counter(m, "qz_kafka_batch_retries_total", labels,
                                          "Batches offered again after a transient failure.");
        c->m_resets = qz_metrics_counter(m, "qz_kafka_offset_resets_total", labels,
                                         "Out-of-range offsets (messages possibly skipped).");
        c->m_commit_failed = qz_metrics_counter(m, "qz_kafka_commit_failures_total", labels,
                                                "Offset commits that failed (batch replays).");
}

static void inc(struct qz_metric *m, double v)
{
        if (m)
                qz_metric_add(m, v);
}

int qz_kafka_consumer_new(const struct qz_kafka_consumer_config *cfg,
                          struct qz_kafka_consumer **out, char *errstr, size_t errstr_size)
{
        struct qz_kafka_consumer *c = NULL;
        rd_kafka_conf_t *conf = NULL;
        rd_kafka_topic_partition_list_t *topics = NULL;
        rd_kafka_resp_err_t err;
        char rderr[256], session[32];

        if (!cfg->brokers || !cfg->group_id || !cfg->service || cfg->ntopics == 0) {
                snprintf(errstr, errstr_size,
                         "kafka consumer: brokers, group_id, service and topics are required");
                return -1;
        }
        if ((cfg->dlq_producer || cfg->avro || cfg->dlq_topic) &&
            !(cfg->dlq_producer && cfg->avro && cfg->dlq_topic)) {
                snprintf(errstr, errstr_size,
                         "kafka consumer: dlq_producer, avro and dlq_topic go together");
                return -1;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                goto oom;
        c->batch_size = cfg->batch_size ? cfg->batch_size : 500;
        c->batch_wait_ms = cfg->batch_wait_ms > 0 ? cfg->batch_wait_ms : 200;
        c->retry_min_ms = cfg->retry_min_ms > 0 ? cfg->retry_min_ms : 100;
        c->retry_max_ms = cfg->retry_max_ms > 0 ? cfg->retry_max_ms : 10000;
        c->lag_interval_ms = cfg->lag_interval_ms > 0 ? cfg->lag_interval_ms : 5000;
        c->idle_cb = cfg->idle_cb;
        c->idle_opaque = cfg->idle_opaque;
        c->assign_cb = cfg->assign_cb;
        c->revoke_cb = cfg->revoke_cb;
        c->rebalance_opaque = cfg->rebalance_opaque;
        c->idle_interval_ms = cfg->idle_interval_ms > 0 ? cfg->idle_interval_ms : 1000;
        c->dlq_timeout_ms = cfg->dlq_timeout_ms > 0 ? cfg->dlq_timeout_ms : 10000;
        c->dlq_producer = cfg->dlq_producer;
        c->avro = cfg->avro;
        c->metrics = cfg->metrics;
        c->service = strdup(cfg->service);
        c->group_id = strdup(cfg->group_id);
        c->dlq_topic = cfg->dlq_topic ? strdup(cfg->dlq_topic) : NULL;
        c->pending = calloc(c->batch_size, sizeof(*c->pending));
        c->msgs = calloc(c->batch_size, sizeof(*c->msgs));
        if (!c->service || !c->group_id || (cfg->dlq_topic && !c->dlq_topic) || !c->pending ||
            !c->msgs)
                goto oom;
        make_metrics(c);

        snprintf(session, sizeof(session), "%d",
                 cfg->session_timeout_ms > 0 ? cfg->session_timeout_ms : 6000);
        conf = rd_kafka_conf_new();
        if (conf_set(conf, "bootstrap.servers", cfg->brokers, errstr, errstr_size) != 0 ||
            conf_set(conf, "group.id", cfg->group_id, errstr, errstr_size) != 0 ||
            conf_set(conf, "client.id", cfg->service, errstr, errstr_size) != 0 ||
            conf_set(conf, "session.timeout.ms", session, errstr, errstr_size) != 0 ||
            conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) != 0 ||
            conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) != 0 ||
            conf_set(conf, "auto.offset.reset", "error", errstr, errstr_size) != 0 ||
            conf_set(conf, "statistics.interval.ms", "1000", errstr, errstr_size) != 0)
                goto fail;
        if (cfg->fetch_wait_max_ms > 0) {
                char fw[16];
                snprintf(fw, sizeof(fw), "%d", cfg->fetch_wait_max_ms);
                if (conf_set(conf, "fetch.wait.max.ms", fw, errstr, errstr_size) != 0)
                        goto fail;
        }
        if (cfg->max_poll_interval_ms > 0) {
                char mpi[16];
                snprintf(mpi, sizeof(mpi), "%d", cfg->max_poll_interval_ms);
                if (conf_set(conf, "max.poll.interval.ms", mpi, errstr, errstr_size) != 0)
                        goto fail;
        }
        rd_kafka_conf_set_opaque(conf, c);
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
        rd_kafka_conf_set_error_cb(conf, error_cb);
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
        rd_kafka_conf_set_log_cb(conf, qz_kafka_log_cb);
        c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
        if (!c->rk) {
                snprintf(errstr, errstr_size, "kafka consumer: %s", rderr);
                goto fail;
        }
        conf = NULL; /* now owned by rk */
        rd_kafka_poll_set_consumer(c->rk);
        topics = rd_kafka_topic_partition_list_new((int)cfg->ntopics);
        for (size_t i = 0; i < cfg->ntopics; i++)
                rd_kafka_topic_partition_list_add(topics, cfg->topics[i], RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(c->rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err) {
                snprintf(errstr, errstr_size, "kafka consumer subscribe: %s",
                         rd_kafka_err2str(err));
                goto fail;
        }
        c->next_lag_ms = qz_clock_mono_ms() + c->lag_interval_ms;
        *out = c;
        return 0;
oom:
        snprintf(errstr, errstr_size, "out of memory");
fail:
        if (conf)
                rd_kafka_conf_destroy(conf);
        qz_kafka_consumer_close(c);
        return -1;
}

void qz_kafka_consumer_close(struct qz_kafka_consumer *c)
{
        if (!c)
                return;
        if (c->rk) {
                rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
                if (err)
                        qz_log_kv(QZ_LOG_WARN, "kafka consumer close", "group", c->group_id,
                                  "error", rd_kafka_err2str(err), NULL);
                drop_pending(c, NULL);
                rd_kafka_destroy(c->rk);
        }
        free(c->pending);
        free(c->msgs);
        free(c->service);
        free(c->group_id);
        free(c->dlq_topic);
        free(c);
}

void qz_kafka_consumer_stop(struct qz_kafka_consumer *c)
{
        atomic_store(&c->stop, true);
}

bool qz_kafka_consumer_ready(struct qz_kafka_consumer *c)
{
        return atomic_load(&c->joined) && !atomic_load(&c->all_down);
}

/* ---- rejections ------------------------------------------------------ */

static void rejects_clear(struct qz_kafka_batch *b)
{
        for (size_t i = 0; i < b->nrejects; i++) {
                struct reject *r = &b->rejects[i];
                for (size_t j = 0; r->errors && j < r->nerrors; j++)
                        free(r->errors[j]);
                free(r->errors);
                free(r->reason);
        }
        b->nrejects = 0;
}

int qz_kafka_batch_reject(struct qz_kafka_batch *b, size_t index, const char *reason,
                          const char *const *errors, size_t nerrors)
{
        struct reject *r;
        if (!b->c->dlq_topic) {
                qz_log_kv(QZ_LOG_ERROR, "message rejected but no DLQ is configured", "group",
                          b->c->group_id, "reason", reason, NULL);
                return -1;
        }
        if (index >= b->n)
                return -1;
        for (size_t i = 0; i < b->nrejects; i++)
                if (b->rejects[i].index == index)
                        return 0; /* first reason wins */
        if (b->nrejects == b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 8;
                struct reject *nr = realloc(b->rejects, cap * sizeof(*nr));
                if (!nr)
                        return -1;
                b->rejects = nr;
                b->cap = cap;
        }
        r = &b->rejects[b->nrejects];
        memset(r, 0, sizeof(*r));
        r->index = index;
        r->reason = strdup(reason ? reason : "rejected");
        if (!r->reason)
                return -1;
        if (errors) {
                r->errors = calloc(nerrors ? nerrors : 1, sizeof(char *));
                if (!r->errors) {
                        free(r->reason);
                        return -1;
                }
                r->nerrors = nerrors;
                for (size_t i = 0; i < nerrors; i++)
                        r->errors[i] = strdup(errors[i] ? errors[i] : "");
        }
        b->nrejects++;
        return 0;
}

static int send_rejects(struct qz_kafka_consumer *c, struct qz_kafka_batch *b, char *errstr,
                        size_t errstr_size)
{
        struct qz_dlq_event *evs = calloc(b->nrejects, sizeof(*evs));
        int rc;
        if (!evs) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        for (size_t i = 0; i < b->nrejects; i++) {
                const struct reject *r = &b->rejects[i];
                const struct qz_kafka_msg *m = &c->msgs[r->index];
                evs[i] = (struct qz_dlq_event){
                    .original_topic = m->topic,
                    .original_partition = m->partition,
                    .original_offset = m->offset,
                    .original_key = m->key,
                    .original_key_len = m->key_len,
                    .original_value = m->value,
                    .original_value_len = m->value_len,
                    .reason = r->reason,
                    .errors = (const char *const *)r->errors,
                    .nerrors = r->nerrors,
                    .service = c->service,
                };
        }
        rc = qz_dlq_send(c->dlq_producer, c->avro, c->dlq_topic, evs, b->nrejects,
                         c->dlq_timeout_ms, errstr, errstr_size);
        free(evs);
        return rc;
}

/* ---- the loop -------------------------------------------------------- */

static void refresh_lag(struct qz_kafka_consumer *c)
{
        rd_kafka_topic_partition_list_t *parts = NULL;
        if (!c->metrics || rd_kafka_assignment(c->rk, &parts) != 0)
                return;
        rd_kafka_position(c->rk, parts);
        for (int i = 0; i < parts->cnt; i++) {
                rd_kafka_topic_partition_t *p = &parts->elems[i];
                int64_t lo = -1, hi = -1;
                char labels[400];
                /* Cached by the fetcher: no broker round trip on the loop thread. */
                if (p->offset < 0 ||
                    rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) != 0 ||
                    hi < 0)
                        continue;
                snprintf(labels, sizeof(labels),
                         "group=\"%s\",topic=\"%s\",partition=\"%" PRId32 "\"", c->group_id,
                         p->topic, p->partition);
                qz_metric_set(qz_metrics_gauge(c->metrics, "qz_kafka_consumer_lag", labels,
                                               "Messages between the consumer position and the "
                                               "partition end."),
                              (double)(hi > p->offset ? hi - p->offset : 0));
        }
        rd_kafka_topic_partition_list_destroy(parts);
}

/* After an offset-reset event the partition's fetcher is stopped and a seek
 * is refused, so the assignment is renewed: this partition at offset, every
 * other one at its current position. The new start is committed first, so
 * any later (re)assignment starts there too instead of out of range again. */
static void restart_partition(struct qz_kafka_consumer *c, const char *topic, int32_t partition,
                              int64_t offset)
{
        rd_kafka_topic_partition_list_t *parts = NULL;
        rd_kafka_topic_partition_t *p;
        rd_kafka_resp_err_t err;

        if (offset >= 0) {
                parts = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(parts, topic, partition)->offset = offset;
                err = rd_kafka_commit(c->rk, parts, 0);
                if (err)
                        qz_log_kv(QZ_LOG_WARN, "cannot commit the restart offset", "group",
                                  c->group_id, "topic", topic, "error", rd_kafka_err2str(err),
                                  NULL);
                rd_kafka_topic_partition_list_destroy(parts);
                parts = NULL;
        }
        err = rd_kafka_assignment(c->rk, &parts);
        if (!err) {
                rd_kafka_position(c->rk, parts);
                for (int i = 0; i < parts->cnt; i++)
                        if (parts->elems[i].err)
                                parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
                set_start_offsets(c, parts);
                p = rd_kafka_topic_partition_list_find(parts, topic, partition);
                if (p)
                        p->offset = offset >= 0 ? offset : RD_KAFKA_OFFSET_BEGINNING;
                err = p ? rd_kafka_assign(c->rk, parts) : RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
        }
        if (err)
                qz_log_kv(QZ_LOG_ERROR, "cannot restart partition after offset reset", "group",
                          c->group_id, "topic", topic, "error", rd_kafka_err2str(err), NULL);
        if (parts)
                rd_kafka_topic_partition_list_destroy(parts);
}

/* Out of range: log the incident with what was skipped, restart at the
 * partition's earliest offset. offset < 0 means "never committed". */
static void handle_offset_reset(struct qz_kafka_consumer *c, const rd_kafka_message_t *m)
{
        const char *topic = rd_kafka_topic_name(m->rkt);
        int64_t lo = -1, hi = -1;
        char s_part[16], s_req[32], s_lo[32], s_hi[32], s_skip[32];

        rd_kafka_query_watermark_offsets(c->rk, topic, m->partition, &lo, &hi, 5000);
        snprintf(s_part, sizeof(s_part), "%" PRId32, m->partition);
        snprintf(s_req, sizeof(s_req), "%" PRId64, m->offset);
        snprintf(s_lo, sizeof(s_lo), "%" PRId64, lo);
        snprintf(s_hi, sizeof(s_hi), "%" PRId64, hi);
        if (m->offset < 0) {
                qz_log_kv(QZ_LOG_INFO, "no committed offset: starting at the earliest", "group",
                          c->group_id, "topic", topic, "partition", s_part, "earliest", s_lo, NULL);
        } else {
                /* Messages [requested, earliest) were dropped by the broker unread. */
                snprintf(s_skip, sizeof(s_skip), "%" PRId64, lo > m->offset ? lo - m->offset : 0);
                qz_log_kv(QZ_LOG_ERROR,
                          "INCIDENT: consumer offset out of range; restarting at the earliest "
                          "offset (skipped = messages dropped by the broker unread)",
                          "group", c->group_id, "topic", topic, "partition", s_part, "requested",
                          s_req, "earliest", s_lo, "latest", s_hi, "skipped", s_skip, "detail",
                          rd_kafka_message_errstr(m), NULL);
                inc(c->m_resets, 1);
        }
        restart_partition(c, topic, m->partition, lo);
}

/* -1 only on a fatal consumer error. */
static int handle_event(struct qz_kafka_consumer *c, const rd_kafka_message_t *m, char *errstr,
                        size_t errstr_size)
{
        switch (m->err) {
        case RD_KAFKA_RESP_ERR__PARTITION_EOF:
                return 0;
        case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
                handle_offset_reset(c, m);
                return 0;
        case RD_KAFKA_RESP_ERR__FATAL: {
                char buf[256];
                rd_kafka_fatal_error(c->rk, buf, sizeof(buf));
                snprintf(errstr, errstr_size, "kafka consumer fatal error: %s", buf);
                return -1;
        }
        default:
                if (m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                        atomic_store(&c->all_down, true);
                qz_log_kv(QZ_LOG_WARN, "kafka consumer event", "group", c->group_id, "topic",
                          m->rkt ? rd_kafka_topic_name(m->rkt) : "", "error",
                          rd_kafka_err2name(m->err), "detail", rd_kafka_message_errstr(m), NULL);
                return 0;
        }
}

/* Polls until the batch is full, batch_wait_ms passed since its first
 * message, or (empty) one poll interval passed. */
static int collect(struct qz_kafka_consumer *c, char *errstr, size_t errstr_size)
{
        int64_t deadline = 0;
        while (c->npending < c->batch_size && !stopping(c)) {
                int timeout = 100;
                if (c->npending > 0) {
                        int64_t left = deadline - qz_clock_mono_ms();
                        if (left <= 0)
                                break;
                        timeout = left < timeout ? (int)left : timeout;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout);
                if (qz_clock_mono_ms() >= c->next_lag_ms) {
                        refresh_lag(c);
                        c->next_lag_ms = qz_clock_mono_ms() + c->lag_interval_ms;
                }
                if (!m) {
                        if (c->npending == 0)
                                return 0;
                        continue;
                }
                if (m->err) {
                        int rc = handle_event(c, m, errstr, errstr_size);
                        rd_kafka_message_destroy(m);
                        if (rc != 0)
                                return -1;
                        continue;
                }
                atomic_store(&c->all_down, false);
                c->pending[c->npending++] = m;
                if (c->npending == 1)
                        deadline = qz_clock_mono_ms() + c->batch_wait_ms;
        }
        return 0;
}

static void commit_batch(struct qz_kafka_consumer *c)
{
        rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
        rd_kafka_resp_err_t err;
        for (size_t i = 0; i < c->npending; i++) {
                const struct qz_kafka_msg *m = &c->msgs[i];
                rd_kafka_topic_partition_t *p =
                    rd_kafka_topic_partition_list_find(offs, m->topic, m->partition);
                if (!p)
                        p = rd_kafka_topic_partition_list_add(offs, m->topic, m->partition);
                if (m->offset + 1 > p->offset)
                        p->offset = m->offset + 1; /* the next message to read */
        }
        for (int attempt = 0;; attempt++) {
                err = rd_kafka_commit(c->rk, offs, 0 /* synchronous */);
                if (!err) {
                        inc(c->m_committed, (double)c->npending);
                        break;
                }
                qz_log_kv(QZ_LOG_WARN, "offset commit failed; the batch will be replayed", "group",
                          c->group_id, "error", rd_kafka_err2str(err), NULL);
                /* A lost generation cannot commit any more; a later commit
                 * covers these offsets anyway, so a few tries suffice. */
                if (err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
                    err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                    err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || attempt >= 3 ||
                    sleep_unless_stopped(c, backoff_ms(c, attempt))) {
                        inc(c->m_commit_failed, 1);
                        break;
                }
        }
        rd_kafka_topic_partition_list_destroy(offs);
}

static void log_retry(struct qz_kafka_consumer *c, const char *what, const char *detail, int delay)
{
        char n[32], d[32], first[300];
        const struct qz_kafka_msg *m = &c->msgs[0];
        snprintf(n, sizeof(n), "%zu", c->npending);
        snprintf(d, sizeof(d), "%d", delay);
        snprintf(first, sizeof(first), "%s[%" PRId32 "]@%" PRId64, m->topic, m->partition,
                 m->offset);
        qz_log_kv(QZ_LOG_WARN, what, "group", c->group_id, "messages", n, "first", first,
                  "retry_in_ms", d, "detail", detail, NULL);
}

/* Runs the callback until it succeeds, sends rejections, commits. A stop
 * while still failing leaves the batch uncommitted (replayed later). */
static void process(struct qz_kafka_consumer *c, qz_kafka_batch_cb cb, void *opaque)
{
        struct qz_kafka_batch b = {.c = c, .n = c->npending};
        char errstr[512];

        for (size_t i = 0; i < c->npending; i++) {
                const rd_kafka_message_t *m = c->pending[i];
                rd_kafka_timestamp_type_t tt;
                int64_t ts = rd_kafka_message_timestamp(m, &tt);
                c->msgs[i] = (struct qz_kafka_msg){
                    .topic = rd_kafka_topic_name(m->rkt),
                    .partition = m->partition,
                    .offset = m->offset,
                    .key = m->key,
                    .key_len = m->key ? m->key_len : 0,
                    .value = m->payload ? m->payload : "",
                    .value_len = m->payload ? m->len : 0,
                    .timestamp_ms = tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts,
                };
        }
        inc(c->m_consumed, (double)c->npending);
        for (int attempt = 0;; attempt++) {
                rejects_clear(&b);
                if (cb(opaque, c->msgs, c->npending, &b) == 0)
                        break;
                inc(c->m_retries, 1);
                int delay = backoff_ms(c, attempt);
                log_retry(c, "batch failed; retrying the same batch", "callback returned -1",
                          delay);
                if (sleep_unless_stopped(c, delay)) {
                        qz_log_kv(QZ_LOG_WARN, "stopping with a failed batch uncommitted", "group",
                                  c->group_id, NULL);
                        goto done;
                }
        }
        for (int attempt = 0; b.nrejects > 0; attempt++) {
                if (send_rejects(c, &b, errstr, sizeof(errstr)) == 0) {
                        char n[32];
                        snprintf(n, sizeof(n), "%zu", b.nrejects);
                        qz_log_kv(QZ_LOG_WARN, "messages sent to the DLQ", "group", c->group_id,
                                  "dlq_topic", c->dlq_topic, "count", n, "first_reason",
                                  b.rejects[0].reason, NULL);
                        inc(c->m_dlq, (double)b.nrejects);
                        break;
                }
                int delay = backoff_ms(c, attempt);
                log_retry(c, "DLQ write failed; not committing", errstr, delay);
                if (sleep_unless_stopped(c, delay))
                        goto done;
        }
        commit_batch(c);
done:
        rejects_clear(&b);
        free(b.rejects);
        drop_pending(c, NULL);
}

int qz_kafka_consumer_run(struct qz_kafka_consumer *c, qz_kafka_batch_cb cb, void *opaque,
                          char *errstr, size_t errstr_size)
{
        while (!stopping(c)) {
                if (collect(c, errstr, errstr_size) != 0) {
                        drop_pending(c, NULL);
                        return -1;
                }
                if (c->npending > 0) {
                        process(c, cb, opaque);
                        c->next_idle_ms = qz_clock_mono_ms() + c->idle_interval_ms;
                } else if (c->idle_cb && qz_clock_mono_ms() >= c->next_idle_ms) {
                        c->idle_cb(c->idle_opaque);
                        c->next_idle_ms = qz_clock_mono_ms() + c->idle_interval_ms;
                }
        }
        return 0;
}
