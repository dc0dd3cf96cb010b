/* requests.c - playlists.requests.v1 batches into stored playlists and PlaylistGenerated events. */
#include "requests.h"
#include "store.h"

#include "avro.h"
#include "clock.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pl_requests {
        struct pl_requests_cfg cfg;
        const struct qz_avro_schema *req_schema, *gen_schema;
        struct qz_metric *ok, *failed, *dup, *rejected, *retries, *seconds;
};

struct pl_requests *pl_requests_new(const struct pl_requests_cfg *cfg, char *errstr,
                                    size_t errstr_size)
{
        struct pl_requests *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        r->cfg = *cfg;
        r->req_schema = qz_avro_schema_get(cfg->avro, "PlaylistRequest");
        r->gen_schema = qz_avro_schema_get(cfg->avro, "PlaylistGenerated");
        if (!r->req_schema || !r->gen_schema) {
                snprintf(errstr, errstr_size, "schemas PlaylistRequest/PlaylistGenerated missing");
                free(r);
                return NULL;
        }
        if (pl_store_prepare(cfg->pg, errstr, errstr_size) != 0) {
                free(r);
                return NULL;
        }
        struct qz_metrics *m = cfg->metrics;
        r->ok = qz_metrics_counter(m, "qz_playlists_requests_total", "result=\"ok\"",
                                   "Playlist requests by outcome");
        r->failed = qz_metrics_counter(m, "qz_playlists_requests_total", "result=\"error\"",
                                       "Playlist requests by outcome");
        r->dup = qz_metrics_counter(m, "qz_playlists_requests_total", "result=\"duplicate\"",
                                    "Playlist requests by outcome");
        r->rejected = qz_metrics_counter(m, "qz_playlists_requests_total", "result=\"dlq\"",
                                         "Playlist requests by outcome");
        r->retries = qz_metrics_counter(m, "qz_playlists_batch_failures_total", NULL,
                                        "Request batches that failed and will be retried");
        r->seconds = qz_metrics_histogram(m, "qz_playlists_build_seconds", NULL,
                                          "Time to build and store one playlist", NULL, 0);
        return r;
}

void pl_requests_free(struct pl_requests *r)
{
        free(r);
}

/* Pulls a request out of a decoded PlaylistRequest; NULL ids make it invalid. */
static int request_from(const json_t *ev, struct pl_request *rq, char *errstr, size_t errstr_size)
{
        memset(rq, 0, sizeof(*rq));
        if (qz_json_get_uuid(ev, "request_id", true, &rq->request_id, errstr, errstr_size) != 0 ||
            qz_json_get_uuid(ev, "user_id", true, &rq->user_id, errstr, errstr_size) != 0 ||
            qz_json_get_string(ev, "playlist_type", true, &rq->playlist_type, errstr,
                               errstr_size) != 0 ||
            qz_json_get_string(ev, "reason", true, &rq->reason, errstr, errstr_size) != 0 ||
            qz_json_get_uuid(ev, "run_id", false, &rq->run_id, errstr, errstr_size) < 0)
                return -1;
        rq->params = json_object_get(ev, "params");
        return 0;
}

static json_t *generated_event(const struct pl_request *rq, const struct pl_store_outcome *o)
{
        return json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:o}", "request_id", rq->request_id,
                         "user_id", rq->user_id, "playlist_id", o->playlist_id, "playlist_type",
                         rq->playlist_type, "track_count", o->track_count, "generated_at",
                         (json_int_t)o->generated_ms, "expires_at", (json_int_t)o->expires_ms,
                         "run_id", rq->run_id ? json_string(rq->run_id) : json_null());
}

/* One request of a batch through the three phases. */
struct item {
        json_t *ev; /* the decoded request (owns rq's strings); NULL = rejected */
        struct pl_request rq;
        int built; /* 0 = playlist built, 1 = answered with err (bad request) */
        struct pl_playlist pl;
        char err[512];
        struct pl_store_outcome o;
        int64_t ns; /* time spent on it */
};

/* Phase 1: builds every decoded request as one batch (gen.c: the scheduled types from the
 * in-memory catalog and one query for all users' plays; no transaction). 0, or -1 = transient
 * (retry the batch). */
static int build_all(struct pl_requests *r, struct item *items, size_t n, int64_t now_ms)
{
        int64_t t0 = qz_clock_mono_ns();
        const struct pl_request **rqs = calloc(n ? n : 1, sizeof(*rqs));
        struct pl_gen_result *res = calloc(n ? n : 1, sizeof(*res));
        size_t *idx = calloc(n ? n : 1, sizeof(*idx));
        size_t k = 0;
        int rc = -1;
        char err[512];
        if (!rqs || !res || !idx) {
                qz_warn("building a batch of %zu requests: out of memory, will retry", n);
                goto done;
        }
        for (size_t i = 0; i < n; i++)
                if (items[i].ev) {
                        idx[k] = i;
                        rqs[k++] = &items[i].rq;
                }
        if (pl_gen_build_batch(r->cfg.gen, rqs, k, now_ms, res, err, sizeof(err)) != 0) {
                qz_warn("building a batch of %zu requests failed, will retry: %s", k, err);
                goto done;
        }
        for (size_t j = 0; j < k; j++) {
                struct item *it = &items[idx[j]];
                int brc = res[j].rc;
                snprintf(it->err, sizeof(it->err), "%s", res[j].err);
                pl_store_text_fix(it->err);
                if (brc < 0) {
                        /* The state of this request's own failure (gen.c keeps it): the
                         * connection's is of whatever ran last. */
                        const char *state = res[j].sqlstate;
                        if (qz_pg_sqlstate_is_connection(state) || !state[0]) {
                                qz_warn("request %s: building failed, will retry: %s",
                                        it->rq.request_id, it->err);
                                for (size_t x = j; x < k; x++)
                                        pl_playlist_free(&res[x].pl);
                                goto done;
                        }
                        brc = 1; /* a query the request's values broke: its answer is an error */
                }
                it->built = brc;
                it->pl = res[j].pl; /* moved */
                memset(&res[j].pl, 0, sizeof(res[j].pl));
        }
        int64_t per = k ? (qz_clock_mono_ns() - t0) / (int64_t)k : 0;
        for (size_t j = 0; j < k; j++)
                items[idx[j]].ns += per;
        rc = 0;
done:
        free(rqs);
        free(res);
        free(idx);
        return rc;
}

/* Phase 2, fast path: every request's outcome and notification, the runs' progress (one update
 * per run), one commit. 0; -1 = transient (retry the batch); 1 = Postgres refused some
 * request's values: nothing was stored, store one by one (store_one) to single it out. */
static int store_batch(struct pl_requests *r, struct item *items, size_t n)
{
        char err[512];
        struct qz_pg *pg = r->cfg.pg;
        int64_t t0 = qz_clock_mono_ns();
        size_t stored = 0;
        const struct pl_request **rqs = calloc(n ? n : 1, sizeof(*rqs));
        const struct pl_playlist **pls = calloc(n ? n : 1, sizeof(*pls));
        const char **errs = calloc(n ? n : 1, sizeof(*errs));
        struct pl_store_outcome *outs = calloc(n ? n : 1, sizeof(*outs));
        size_t *idx = calloc(n ? n : 1, sizeof(*idx));
        char state[8] = "";
        int src = -1;
        if (!rqs || !pls || !errs || !outs || !idx) {
                snprintf(err, sizeof(err), "out of memory");
                goto stored_all;
        }
        for (size_t i = 0; i < n; i++) {
                struct item *it = &items[i];
                if (!it->ev)
                        continue;
                idx[stored] = i;
                rqs[stored] = &it->rq;
                pls[stored] = it->built == 0 ? &it->pl : NULL;
                errs[stored] = it->built == 0 ? NULL : it->err;
                stored++;
        }
        /* One statement per round for the whole batch (store.c), in one transaction. */
        if (qz_pg_begin(pg, err, sizeof(err)) != 0)
                goto stored_all;
        if (pl_store_batch(pg, rqs, pls, errs, stored, outs, state, err, sizeof(err)) != 0) {
                qz_pg_rollback(pg, NULL, 0);
                src = qz_pg_sqlstate_is_connection(state) || !state[0] ? -1 : 1;
                goto stored_all;
        }
        for (size_t j = 0; j < stored; j++)
                items[idx[j]].o = outs[j];
        src = 0;
stored_all:
        free(rqs);
        free(pls);
        free(errs);
        free(outs);
        free(idx);
        if (src < 0)
                goto transient;
        if (src > 0) {
                qz_warn("storing a batch of %zu requests: postgres refused it (SQLSTATE %s), "
                        "storing them one by one: %s",
                        n, state, err);
                return 1;
        }
        /* The runs' progress, counted once per request first stored, with its effect. */
        for (size_t i = 0; i < n; i++) {
                if (!items[i].ev || !items[i].o.counted)
                        continue;
                long k = 0;
                bool seen = false;
                for (size_t j = 0; j < n && !seen; j++) {
                        if (!items[j].ev || !items[j].o.counted)
                                continue;
                        if (strcmp(items[j].rq.run_id, items[i].rq.run_id) == 0) {
                                if (j < i)
                                        seen = true; /* counted with an earlier one */
                                else
                                        k++;
                        }
                }
                if (!seen &&
                    qz_jobs_run_progress(pg, items[i].rq.run_id, k, err, sizeof(err)) != 0) {
                        bool conn = qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg));
                        qz_pg_rollback(pg, NULL, 0);
                        if (conn)
                                goto transient;
                        qz_warn("counting a batch's run progress refused, storing its %zu "
                                "requests one by one: %s",
                                n, err);
                        return 1;
                }
        }
        if (qz_pg_commit(pg, err, sizeof(err)) != 0)
                goto transient;
        for (size_t i = 0; stored && i < n; i++)
                items[i].ns += (qz_clock_mono_ns() - t0) / (int64_t)stored;
        return 0;
transient:
        qz_warn("storing a batch of %zu requests failed, will retry: %s", n, err);
        return -1;
}

/* Phase 2, slow path: one request in its own transaction. 0, -1 = transient, -2 = poison. */
static int store_one(struct pl_requests *r, struct item *it)
{
        char serr[512];
        int64_t t0 = qz_clock_mono_ns();
        if (pl_store_result(r->cfg.pg, &it->rq, it->built == 0 ? &it->pl : NULL,
                            it->built == 0 ? NULL : it->err, &it->o, serr, sizeof(serr)) != 0) {
                if (qz_pg_sqlstate_is_connection(it->o.sqlstate) || !it->o.sqlstate[0]) {
                        qz_warn("request %s: storing failed, will retry: %s", it->rq.request_id,
                                serr);
                        return -1;
                }
                /* Postgres refused this request's values: answer it with that error rather
                 * than retrying it forever; if even that is refused it is poison. */
                snprintf(it->err, sizeof(it->err), "%s", serr);
                pl_store_text_fix(it->err);
                if (it->built == 0)
                        pl_playlist_free(&it->pl);
                it->built = 1;
                if (pl_store_result(r->cfg.pg, &it->rq, NULL, it->err, &it->o, serr,
                                    sizeof(serr)) != 0)
                        return qz_pg_sqlstate_is_connection(it->o.sqlstate) ? -1 : -2;
        }
        it->ns += qz_clock_mono_ns() - t0;
        return 0;
}

/* Metrics and the log line of one stored request. */
static void account(struct pl_requests *r, const struct item *it)
{
        if (it->o.duplicate)
                qz_metric_inc(r->dup);
        else if (it->built == 0)
                qz_metric_inc(r->ok);
        else
                qz_metric_inc(r->failed);
        if (it->built != 0 && !it->o.duplicate)
                qz_log_kv(QZ_LOG_WARN, "playlist request failed", "request_id", it->rq.request_id,
                          "user_id", it->rq.user_id, "playlist_type", it->rq.playlist_type, "error",
                          it->err, NULL);
        qz_metric_observe(r->seconds, (double)it->ns / 1e9);
}

/* A batch: decode and build every request (phase 1), store all outcomes in one transaction
 * (phase 2; one transaction per request when Postgres refuses one), then produce the events
 * and wait for the acknowledgements (phase 3). */
int pl_requests_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                         struct qz_kafka_batch *batch)
{
        struct pl_requests *r = opaque;
        struct qz_kafka_record *recs = calloc(n ? n : 1, sizeof(*recs));
        unsigned char **bufs = calloc(n ? n : 1, sizeof(*bufs));
        char **keys = calloc(n ? n : 1, sizeof(*keys));
        struct item *items = calloc(n ? n : 1, sizeof(*items));
        size_t nrec = 0;
        int rc = -1;
        char err[512];
        if (!recs || !bufs || !keys || !items)
                goto done;
        /* One instant for the whole batch: a user's types share one profile (gen.c). */
        int64_t now_ms = qz_time_now_ms();
        for (size_t i = 0; i < n; i++) {
                const struct qz_avro_schema *s = NULL;
                json_t *ev = NULL;
                const char *why = NULL;
                if (qz_avro_decode_json(r->cfg.avro, msgs[i].value, msgs[i].value_len, &s, &ev, err,
                                        sizeof(err)) != 0)
                        why = "undecodable";
                else if (s != r->req_schema) {
                        snprintf(err, sizeof(err), "expected qoqnuz.PlaylistRequest, got %s",
                                 qz_avro_schema_name(s));
                        why = "wrong_schema";
                } else if (request_from(ev, &items[i].rq, err, sizeof(err)) != 0)
                        why = "invalid";
                if (why) {
                        const char *errs[] = {err};
                        qz_warn("%s partition %d offset %lld to the DLQ: %s: %s", msgs[i].topic,
                                (int)msgs[i].partition, (long long)msgs[i].offset, why, err);
                        qz_kafka_batch_reject(batch, i, why, errs, 1);
                        qz_metric_inc(r->rejected);
                        json_decref(ev);
                        continue;
                }
                items[i].ev = ev;
                items[i].built = -1; /* not built yet: nothing to free */
        }
        if (build_all(r, items, n, now_ms) != 0) {
                qz_metric_inc(r->retries);
                goto done;
        }
        int src = store_batch(r, items, n);
        if (src < 0) {
                qz_metric_inc(r->retries);
                goto done;
        }
        for (size_t i = 0; src == 1 && i < n; i++) {
                if (!items[i].ev)
                        continue;
                int hrc = store_one(r, &items[i]);
                if (hrc == -2) {
                        const char *errs[] = {"postgres refused the request and its failure"};
                        qz_kafka_batch_reject(batch, i, "unstorable", errs, 1);
                        qz_metric_inc(r->rejected);
                        json_decref(items[i].ev);
                        items[i].ev = NULL;
                        continue;
                }
                if (hrc != 0) {
                        qz_metric_inc(r->retries);
                        goto done;
                }
        }
        for (size_t i = 0; i < n; i++) {
                struct item *it = &items[i];
                if (!it->ev)
                        continue;
                account(r, it);
                if (!it->o.ok)
                        continue;
                json_t *g = generated_event(&it->rq, &it->o);
                size_t len = 0;
                if (!g || qz_avro_encode_json(r->gen_schema, g, &bufs[nrec], &len, err,
                                              sizeof(err)) != 0) {
                        qz_error("PlaylistGenerated for %s: %s", it->rq.request_id, err);
                        json_decref(g);
                        goto done;
                }
                json_decref(g);
                keys[nrec] = strdup(it->rq.user_id);
                recs[nrec] = (struct qz_kafka_record){.topic = r->cfg.generated_topic,
                                                      .partition = QZ_KAFKA_PARTITION_ANY,
                                                      .key = keys[nrec],
                                                      .key_len = strlen(it->rq.user_id),
                                                      .value = bufs[nrec],
                                                      .value_len = len};
                nrec++;
        }
        if (nrec > 0 && qz_kafka_produce_wait(r->cfg.producer, recs, nrec, 15000, err,
                                              sizeof(err)) != QZ_KAFKA_OK) {
                qz_warn("publishing %zu PlaylistGenerated failed, will retry the batch: %s", nrec,
                        err);
                qz_metric_inc(r->retries);
                goto done;
        }
        rc = 0;
done:
        for (size_t i = 0; i < nrec; i++) {
                free(bufs[i]);
                free(keys[i]);
        }
        for (size_t i = 0; items && i < n; i++) {
                if (items[i].ev && items[i].built == 0)
                        pl_playlist_free(&items[i].pl);
                json_decref(items[i].ev);
        }
        free(items);
        free(bufs);
        free(keys);
        free(recs);
        return rc;
}
