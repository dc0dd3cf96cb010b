/* ingest.c - the POST /v1/plays handler: auth, validation, Avro, produce, answer. */
#include "ingest.h"
#include "clock.h"

#include "auth.h"
#include "avro.h"
#include "json.h"
#include "log.h"
#include "trackset.h"
#include "metrics.h"
#include "playenc.h"
#include "plays.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct ingest {
        struct ingest_config cfg;
        uint64_t fingerprint; /* of PlayEvent, for playenc */
        struct qz_metrics *metrics;
        struct trackset *catalog; /* borrowed; NULL = no unknown-track counting */
        pthread_rwlock_t lock;    /* guards producer against ingest_producer_swap */
        struct qz_kafka_producer *producer;
        struct qz_metric *requests, *accepted, *rejected_forbidden, *unauthorized, *unavailable,
            *queue_full, *inflight, *produce_seconds, *unknown_track, *unchecked_track;
};

/* qz_ingest_plays_rejected_total{reason}: one series per reason, made on first use. */
static struct qz_metric *reject_counter(struct ingest *in, const char *reason)
{
        char labels[96];
        snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
        return qz_metrics_counter(in->metrics, "qz_ingest_plays_rejected_total", labels,
                                  "Plays rejected, by reason (a field name or a rule)");
}

struct ingest *ingest_new(const struct ingest_config *cfg, const struct qz_avro_registry *avro,
                          struct qz_metrics *m, struct trackset *catalog,
                          struct qz_kafka_producer *producer, char *errstr, size_t errstr_size)
{
        const struct qz_avro_schema *schema = qz_avro_schema_get(avro, "PlayEvent");
        if (!schema) {
                snprintf(errstr, errstr_size, "schema qoqnuz.PlayEvent not found");
                return NULL;
        }
        struct ingest *in = calloc(1, sizeof(*in));
        if (!in) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        in->cfg = *cfg;
        in->fingerprint = qz_avro_schema_fingerprint(schema);
        in->metrics = m;
        in->catalog = catalog;
        pthread_rwlock_init(&in->lock, NULL);
        in->producer = producer;
        const char *n = "qz_ingest_plays_total";
        const char *h = "Plays by outcome";
        in->requests = qz_metrics_counter(m, "qz_ingest_requests_total", NULL,
                                          "POST /v1/plays requests received");
        in->accepted = qz_metrics_counter(m, n, "result=\"accepted\"", h);
        in->unavailable = qz_metrics_counter(m, n, "result=\"broker_unavailable\"", h);
        in->queue_full = qz_metrics_counter(m, n, "result=\"queue_full\"", h);
        in->rejected_forbidden = reject_counter(in, "forbidden");
        in->unauthorized = qz_metrics_counter(m, "qz_ingest_unauthorized_total", NULL,
                                              "Requests refused for a missing or bad token");
        in->inflight = qz_metrics_gauge(m, "qz_ingest_inflight_requests", NULL,
                                        "Requests being handled (parsing, producing, waiting)");
        in->produce_seconds =
            qz_metrics_histogram(m, "qz_ingest_produce_seconds", NULL,
                                 "Produce-to-acknowledgement (or enqueue) latency", NULL, 0);
        in->unknown_track =
            qz_metrics_counter(m, "qz_ingest_unknown_track_plays_total", NULL,
                               "Accepted plays whose track_id is not in the catalog (yet)");
        in->unchecked_track = qz_metrics_counter(
            m, "qz_ingest_unchecked_track_plays_total", NULL,
            "Accepted plays not checked against the catalog (not loaded yet, or disabled)");
        return in;
}

void ingest_free(struct ingest *in)
{
        if (!in)
                return;
        qz_kafka_producer_close(in->producer, 10000);
        pthread_rwlock_destroy(&in->lock);
        free(in);
}

void ingest_producer_swap(struct ingest *in, struct qz_kafka_producer *fresh)
{
        pthread_rwlock_wrlock(&in->lock);
        struct qz_kafka_producer *old = in->producer;
        in->producer = fresh;
        pthread_rwlock_unlock(&in->lock);
        qz_kafka_producer_close(old, 0);
}

bool ingest_producer_broken(struct ingest *in)
{
        pthread_rwlock_rdlock(&in->lock);
        bool broken = qz_kafka_producer_broken(in->producer);
        pthread_rwlock_unlock(&in->lock);
        return broken;
}

bool ingest_ready_cb(void *opaque, json_t *checks)
{
        struct ingest *in = opaque;
        pthread_rwlock_rdlock(&in->lock);
        bool ok = qz_kafka_producer_ready(in->producer);
        pthread_rwlock_unlock(&in->lock);
        json_object_set_new(checks, "kafka", json_string(ok ? "ok" : "no broker reachable"));
        return ok;
}

/* A listener may post only its own plays; a service token any user's.
 * Admins are people too: their token is held to its own sub. */
static bool may_post_for(const struct qz_auth_claims *who, const char *user_id)
{
        return who->role == QZ_AUTH_ROLE_SERVICE || strcasecmp(who->sub, user_id) == 0;
}

static bool content_type_ok(const char *ct, bool *ndjson)
{
        *ndjson = false;
        if (!ct)
                return true; /* curl -d without a type: assume JSON */
        size_t n = strcspn(ct, ";");
        while (n > 0 && ct[n - 1] == ' ')
                n--;
        if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
                return true;
        if ((n == 20 && strncasecmp(ct, "application/x-ndjson", n) == 0) ||
            (n == 20 && strncasecmp(ct, "application/jsonlines", 20) == 0)) {
                *ndjson = true;
                return true;
        }
        return false;
}

static void reply_unavailable(struct qz_http_response *resp, int status, const char *retry,
                              const char *code, const char *msg)
{
        qz_http_reply_error(resp, status, code, "%s; retry with the same event_ids", msg);
        qz_http_add_header(resp, "Retry-After", retry);
}

/* Enqueues recs without waiting for acknowledgements (ack_on_enqueue). The
 * delivery reports still arrive (opaque NULL) and feed the producer's metrics. */
static enum qz_kafka_status enqueue(struct qz_kafka_producer *p, const struct qz_kafka_record *recs,
                                    size_t n, char *errstr, size_t errstr_size)
{
        rd_kafka_t *rk = qz_kafka_producer_handle(p);
        for (size_t i = 0; i < n; i++) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(recs[i].topic), RD_KAFKA_V_PARTITION(recs[i].partition),
                    RD_KAFKA_V_KEY(recs[i].key, recs[i].key_len),
                    RD_KAFKA_V_VALUE((void *)recs[i].value, recs[i].value_len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err) {
                        snprintf(errstr, errstr_size, "record %zu of %zu: %s", i, n,
                                 rd_kafka_err2str(err));
                        /* the ones before are queued: the retry duplicates them, harmlessly */
                        return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? QZ_KAFKA_QUEUE_FULL
                                                                    : QZ_KAFKA_UNAVAILABLE;
                }
        }
        return QZ_KAFKA_OK;
}

/* Produces the accepted events; returns the HTTP status to answer with (202,
 * or the error already written into resp). */
static int produce(struct ingest *in, struct plays_batch *b, size_t naccepted,
                   struct qz_http_response *resp)
{
        struct qz_kafka_record *recs = calloc(naccepted, sizeof(*recs));
        /* One buffer for every value: strings of a validated play are short
         * (UUIDs, 32-char tokens), so the bound per play is small and fixed. */
        size_t per = PLAYENC_MAX(4 * 36 + 2 * 32), cap = naccepted * per, used = 0;
        unsigned char *buf = malloc(cap);
        size_t n = 0;
        int status = 500;
        char err[256];
        if (!recs || !buf) {
                qz_http_reply_error(resp, 500, "internal", "out of memory");
                goto done;
        }
        for (size_t i = 0; i < b->n; i++) {
                const struct play *ev = &b->items[i].play;
                if (!b->items[i].ok)
                        continue;
                size_t len = playenc_encode(in->fingerprint, ev, buf + used, cap - used);
                if (len == 0) {
                        qz_error("encoding validated play %zu failed", i);
                        qz_http_reply_error(resp, 500, "internal", "encoding failed");
                        goto done;
                }
                recs[n] = (struct qz_kafka_record){.topic = in->cfg.topic,
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = ev->user_id,
                                                   .key_len = strlen(ev->user_id),
                                                   .value = buf + used,
                                                   .value_len = len};
                used += len;
                n++;
        }

        int64_t t0 = qz_clock_mono_ns();
        enum qz_kafka_status st;
        pthread_rwlock_rdlock(&in->lock);
        if (!qz_kafka_producer_ready(in->producer)) {
                /* No broker up (or a fatal error): do not queue what we cannot
                 * promise; the player retries. */
                snprintf(err, sizeof(err), "no Kafka broker reachable");
                st = QZ_KAFKA_UNAVAILABLE;
        } else if (in->cfg.ack_on_enqueue) {
                st = enqueue(in->producer, recs, n, err, sizeof(err));
        } else {
                st = qz_kafka_produce_wait(in->producer, recs, n, (int)in->cfg.ack_timeout_ms, err,
                                           sizeof(err));
        }
        pthread_rwlock_unlock(&in->lock);
        qz_metric_observe(in->produce_seconds, (double)(qz_clock_mono_ns() - t0) / 1e9);

        switch (st) {
        case QZ_KAFKA_OK:
                status = 202;
                break;
        case QZ_KAFKA_QUEUE_FULL:
                qz_metric_add(in->queue_full, (double)n);
                reply_unavailable(resp, 429, "1", "overloaded", "producer queue is full");
                status = 429;
                break;
        case QZ_KAFKA_UNAVAILABLE:
                qz_metric_add(in->unavailable, (double)n);
                qz_warn("plays not acknowledged by Kafka: %s", err);
                reply_unavailable(resp, 503, "5", "unavailable",
                                  "Kafka did not acknowledge the plays");
                status = 503;
                break;
        case QZ_KAFKA_REJECTED:
                qz_error("Kafka refused plays: %s", err);
                qz_http_reply_error(resp, 500, "internal", "Kafka refused the plays: %s", err);
                status = 500;
                break;
        }
done:
        free(buf);
        free(recs);
        return status;
}

/* Counts accepted plays whose track the catalog does not know (yet). */
static void count_unknown_tracks(struct ingest *in, const struct plays_batch *b)
{
        size_t unknown = 0, unchecked = 0;
        for (size_t i = 0; i < b->n; i++) {
                if (!b->items[i].ok)
                        continue;
                const char *t = b->items[i].play.track_id;
                enum trackset_answer a =
                    in->catalog ? trackset_lookup(in->catalog, t) : TRACKSET_UNCHECKED;
                unknown += a == TRACKSET_UNKNOWN;
                unchecked += a == TRACKSET_UNCHECKED;
        }
        if (unknown)
                qz_metric_add(in->unknown_track, (double)unknown);
        if (unchecked)
                qz_metric_add(in->unchecked_track, (double)unchecked);
}

/* The 202 of a batch without rejections, the common case: written directly
 * (ids are plain UUIDs, nothing to escape), the same bytes jansson would write. */
static void reply_accepted(struct qz_http_response *resp, const struct plays_batch *b)
{
        size_t cap = 64 + b->n * (PLAYS_UUID_LEN + 3);
        char *body = malloc(cap);
        if (!body) {
                qz_http_reply_error(resp, 500, "internal", "out of memory");
                return;
        }
        size_t len = (size_t)snprintf(body, cap, "{\"accepted\":%zu,\"event_ids\":[", b->n);
        for (size_t i = 0; i < b->n; i++) {
                if (i)
                        body[len++] = ',';
                body[len++] = '"';
                memcpy(body + len, b->items[i].play.event_id, PLAYS_UUID_LEN);
                len += PLAYS_UUID_LEN;
                body[len++] = '"';
        }
        memcpy(body + len, "],\"rejected\":[]}", 17);
        len += 16;
        free(resp->body);
        resp->status = 202;
        resp->body = body;
        resp->body_len = len;
        resp->content_type = "application/json";
}

void ingest_plays_cb(const struct qz_http_request *req, struct qz_http_response *resp, void *opaque)
{
        struct ingest *in = opaque;
        struct qz_auth_claims who;
        struct plays_batch b = {0};
        char err[256];
        bool ndjson;

        qz_metric_inc(in->requests);
        qz_metric_add(in->inflight, 1);
        const char *token = qz_auth_bearer(qz_http_header(req, "Authorization"));
        if (qz_auth_verify(token, in->cfg.jwt_secret, time(NULL), &who, err, sizeof(err)) !=
            QZ_AUTH_OK) {
                qz_metric_inc(in->unauthorized);
                qz_http_reply_error(resp, 401, "unauthorized", "%s", err);
                qz_http_add_header(resp, "WWW-Authenticate", "Bearer");
                goto done;
        }
        if (!content_type_ok(qz_http_header(req, "Content-Type"), &ndjson)) {
                qz_http_reply_error(resp, 415, "unsupported_media_type",
                                    "use application/json or application/x-ndjson");
                goto done;
        }
        struct plays_rules rules = {.now_ms = qz_time_now_ms(),
                                    .max_future_ms = in->cfg.max_future_s * 1000,
                                    .horizon_ms = in->cfg.horizon_days * 86400000LL,
                                    .max_items = (size_t)in->cfg.max_items};
        int rc = plays_parse(req->body, req->body_len, ndjson, &rules, &b, err, sizeof(err));
        if (rc != 0) {
                qz_http_reply_error(resp, rc == -2 ? 413 : 400,
                                    rc == -2 ? "too_many_plays" : "bad_request", "%s", err);
                goto done;
        }

        size_t naccepted = 0;
        for (size_t i = 0; i < b.n; i++) {
                if (!b.items[i].ok)
                        continue;
                if (!may_post_for(&who, b.items[i].play.user_id)) {
                        qz_metric_add(in->rejected_forbidden, (double)b.n);
                        qz_http_reply_error(resp, 403, "forbidden",
                                            "play %zu is for another user than the token's", i);
                        goto done;
                }
                naccepted++;
        }

        json_t *rejected = json_array();
        json_t *ids = json_array();
        for (size_t i = 0; i < b.n; i++) {
                if (b.items[i].ok) {
                        if (naccepted < b.n) /* else reply_accepted writes the ids */
                                json_array_append_new(ids, json_string(b.items[i].play.event_id));
                        continue;
                }
                json_array_append_new(rejected, json_pack("{s:I, s:s}", "index", (json_int_t)i,
                                                          "error", b.items[i].error));
                qz_metric_inc(reject_counter(in, b.items[i].reason ? b.items[i].reason : "other"));
        }
        if (naccepted == 0) {
                json_t *body = json_pack("{s:{s:s, s:s}, s:i, s:o, s:o}", "error", "code",
                                         "bad_request", "message", "no valid plays", "accepted", 0,
                                         "event_ids", ids, "rejected", rejected);
                qz_http_reply_json_new(resp, 400, body);
                goto done;
        }
        if (produce(in, &b, naccepted, resp) != 202) {
                json_decref(ids);
                json_decref(rejected);
                goto done;
        }
        qz_metric_add(in->accepted, (double)naccepted);
        count_unknown_tracks(in, &b);
        if (naccepted == b.n) {
                json_decref(ids);
                json_decref(rejected);
                reply_accepted(resp, &b);
        } else {
                qz_http_reply_json_new(resp, 202,
                                       json_pack("{s:I, s:o, s:o}", "accepted",
                                                 (json_int_t)naccepted, "event_ids", ids,
                                                 "rejected", rejected));
        }
done:
        plays_batch_free(&b);
        qz_metric_add(in->inflight, -1);
}
