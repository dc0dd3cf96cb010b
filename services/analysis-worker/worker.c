/* worker.c - analysis threads: consume task tokens, claim the most urgent task, analyse, store. */
#include "worker.h"

#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker_thread {
        struct worker_pool *pool;
        struct qz_pg *pg;
        struct qz_kafka_consumer *consumer;
        pthread_t thread;
        bool started;
};

struct worker_pool {
        struct worker_config cfg;
        struct worker_thread *t;
        int n;
        atomic_bool failed;
        struct qz_metric *m_completed, *m_retry, *m_failed, *m_lost, *m_idle, *m_seconds;
};

static void idle_cb(void *opaque)
{
        char err[256];
        qz_pg_ping(opaque, err, sizeof(err));
}

static int batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                    struct qz_kafka_batch *batch)
{
        struct worker_thread *w = opaque;
        struct worker_pool *p = w->pool;
        char err[512];
        for (size_t i = 0; i < n; i++) {
                json_t *task = NULL;
                if (qz_avro_decode_json(p->cfg.avro, msgs[i].value, msgs[i].value_len, NULL, &task,
                                        err, sizeof(err)) != 0) {
                        const char *e[1] = {err};
                        if (qz_kafka_batch_reject(batch, i, "decode_error", e, 1) != 0)
                                qz_warn("undecodable task message skipped: %s", err);
                        continue;
                }
                struct qz_analysis_outcome out;
                int rc = qz_analysis_run_task(w->pg, &p->cfg.analysis, NULL, NULL, &out, err,
                                              sizeof(err));
                /* Nothing claimable without waiting: the token's own task may
                 * still be locked by the relay that sent it; wait for it. */
                char named[40] = "";
                const char *tid = json_string_value(json_object_get(task, "task_id"));
                if (tid && qz_uuid_valid(tid))
                        snprintf(named, sizeof(named), "%s", tid);
                json_decref(task);
                if (rc == 0 && named[0])
                        rc = qz_analysis_run_task(w->pg, &p->cfg.analysis, named, NULL, &out, err,
                                                  sizeof(err));
                if (rc < 0) {
                        qz_warn("task attempt failed on the database: %s", err);
                        return -1; /* redelivered after backoff; the claim is idempotent */
                }
                if (rc == 0) {
                        qz_log_kv(QZ_LOG_DEBUG, "token found no due task", "named", named, NULL);
                        if (p->m_idle)
                                qz_metric_inc(p->m_idle);
                        continue;
                }
                struct qz_metric *m = strcmp(out.status, "completed") == 0 ? p->m_completed
                                      : strcmp(out.status, "pending") == 0 ? p->m_retry
                                      : strcmp(out.status, "failed") == 0  ? p->m_failed
                                                                           : p->m_lost;
                if (m)
                        qz_metric_inc(m);
                if (p->m_seconds)
                        qz_metric_observe(p->m_seconds, out.seconds);
                char att[16], secs[32];
                snprintf(att, sizeof(att), "%d", out.task.attempts);
                snprintf(secs, sizeof(secs), "%.3f", out.seconds);
                qz_log_kv(strcmp(out.status, "completed") == 0 ? QZ_LOG_DEBUG : QZ_LOG_INFO,
                          "task attempt", "task_id", out.task.id, "task_type", out.task.task_type,
                          "entity_id", out.task.entity_id, "attempt", att, "status", out.status,
                          "seconds", secs, "error", out.error, NULL);
                json_decref(out.result);
        }
        return 0;
}

static void *thread_main(void *opaque)
{
        struct worker_thread *w = opaque;
        char err[512];
        if (qz_kafka_consumer_run(w->consumer, batch_cb, w, err, sizeof(err)) != 0) {
                qz_error("analysis consumer stopped: %s", err);
                atomic_store(&w->pool->failed, true);
        }
        return NULL;
}

int worker_pool_start(const struct worker_config *cfg, struct worker_pool **out, char *errstr,
                      size_t errstr_size)
{
        struct worker_pool *p = calloc(1, sizeof(*p));
        if (!p || !(p->t = calloc((size_t)cfg->threads, sizeof(*p->t)))) {
                free(p);
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
        }
        p->cfg = *cfg;
        p->n = cfg->threads;
        if (cfg->metrics) {
                const char *h = "task attempts by outcome";
                const char *name = "qz_analysis_attempts_total";
                p->m_completed = qz_metrics_counter(cfg->metrics, name, "status=\"completed\"", h);
                p->m_retry = qz_metrics_counter(cfg->metrics, name, "status=\"retry\"", h);
                p->m_failed = qz_metrics_counter(cfg->metrics, name, "status=\"failed\"", h);
                p->m_lost = qz_metrics_counter(cfg->metrics, name, "status=\"lost\"", h);
                p->m_idle = qz_metrics_counter(cfg->metrics, "qz_analysis_empty_tokens_total", "",
                                               "messages that found no due task");
                p->m_seconds = qz_metrics_histogram(cfg->metrics, "qz_analysis_task_seconds", "",
                                                    "analysis + store time per attempt", NULL, 0);
        }
        const char *topics[2] = {cfg->tasks_topic, cfg->retry_topic};
        for (int i = 0; i < p->n; i++) {
                struct worker_thread *w = &p->t[i];
                char app[64];
                snprintf(app, sizeof(app), "%s-%d", cfg->service, i);
                struct qz_pg_opts po = {.dsn = cfg->pg_dsn, .application_name = app};
                w->pool = p;
                if (!(w->pg = qz_pg_new(&po, errstr, errstr_size)))
                        goto fail;
                qz_pg_connect(w->pg, errstr, errstr_size); /* early; retried later */
                struct qz_kafka_consumer_config cc = {
                    .brokers = cfg->brokers,
                    .group_id = cfg->group_id,
                    .topics = topics,
                    .ntopics = 2,
                    .service = cfg->service,
                    .batch_size = (size_t)(cfg->batch_size > 0 ? cfg->batch_size : 4),
                    .batch_wait_ms = 20,
                    .dlq_producer = cfg->dlq_producer,
                    .avro = cfg->avro,
                    .dlq_topic = cfg->dlq_topic,
                    .metrics = cfg->metrics,
                    .idle_cb = idle_cb,
                    .idle_opaque = w->pg};
                if (qz_kafka_consumer_new(&cc, &w->consumer, errstr, errstr_size) != 0)
                        goto fail;
        }
        for (int i = 0; i < p->n; i++) {
                if (pthread_create(&p->t[i].thread, NULL, thread_main, &p->t[i]) != 0) {
                        snprintf(errstr, errstr_size, "cannot start analysis thread");
                        goto fail;
                }
                p->t[i].started = true;
        }
        *out = p;
        return 0;
fail:
        worker_pool_stop(p);
        return -1;
}

bool worker_pool_ready(struct worker_pool *p)
{
        for (int i = 0; i < p->n; i++)
                if (!qz_pg_ready(p->t[i].pg) || !qz_kafka_consumer_ready(p->t[i].consumer))
                        return false;
        return !atomic_load(&p->failed);
}

bool worker_pool_failed(struct worker_pool *p)
{
        return atomic_load(&p->failed);
}

void worker_pool_stop(struct worker_pool *p)
{
        if (!p)
                return;
        for (int i = 0; i < p->n; i++)
                if (p->t[i].consumer)
                        qz_kafka_consumer_stop(p->t[i].consumer);
        for (int i = 0; i < p->n; i++) {
                if (p->t[i].started)
                        pthread_join(p->t[i].thread, NULL);
                qz_kafka_consumer_close(p->t[i].consumer);
                qz_pg_free(p->t[i].pg);
        }
        free(p->t);
        free(p);
}
