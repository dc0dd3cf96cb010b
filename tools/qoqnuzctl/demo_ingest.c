/* demo_ingest.c - posts demo plays to the play-ingestor (POST /v1/plays) in batches of 500, with
 * retries.
 *
 * 503 (broker down), 429 (overloaded), 502/504 and a refused or dropped
 * connection are retried with exponential backoff (Retry-After wins when
 * given) for up to 60 s per batch; anything else stops the load with the
 * status and the start of the answer. */
#include "demo.h"
#include "clock.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BATCH_MAX       500
#define RETRY_WINDOW_MS 60000
#define BODY_CAP        (BATCH_MAX * 400 + 16)

struct qz_demo_ingest {
        CURL *curl;
        struct curl_slist *headers;
        char url[512]; /* for error messages */
        char *body;
        size_t len;
        int n;
        char *resp;
        size_t resp_len, resp_cap;
        long retry_after_s;
        long long accepted, rejected, retries;
        char first_reject[256];
};

static void sleep_ms(int64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
                ;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
        struct qz_demo_ingest *s = ctx;
        size_t n = size * nmemb;
        if (s->resp_len + n + 1 > s->resp_cap) {
                size_t cap = (s->resp_len + n + 1) * 2;
                char *p = realloc(s->resp, cap);
                if (!p)
                        return 0;
                s->resp = p;
                s->resp_cap = cap;
        }
        memcpy(s->resp + s->resp_len, data, n);
        s->resp_len += n;
        s->resp[s->resp_len] = '\0';
        return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
        struct qz_demo_ingest *s = ctx;
        size_t n = size * nmemb;
        if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0)
                s->retry_after_s = strtol(data + 12, NULL, 10);
        return n;
}

struct qz_demo_ingest *qz_demo_ingest_open(const char *url, const char *token, char *errstr,
                                           size_t errstr_size)
{
        struct qz_demo_ingest *s = calloc(1, sizeof(*s));
        char auth[4096];
        if (!s || !(s->body = malloc(BODY_CAP))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token) >= (int)sizeof(auth)) {
                snprintf(errstr, errstr_size, "token too long");
                goto fail;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(s->curl = curl_easy_init())) {
                snprintf(errstr, errstr_size, "cannot initialise libcurl");
                goto fail;
        }
        s->headers = curl_slist_append(NULL, "Content-Type: application/json");
        struct curl_slist *h = s->headers ? curl_slist_append(s->headers, auth) : NULL;
        if (!h) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        s->headers = h;
        snprintf(s->url, sizeof(s->url), "%s", url);
        curl_easy_setopt(s->curl, CURLOPT_URL, url);
        curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, s->headers);
        curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->curl, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(s->curl, CURLOPT_HEADERDATA, s);
        curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
        curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
        s->len = (size_t)snprintf(s->body, BODY_CAP, "[");
        return s;
fail:
        if (s) {
                if (s->curl) {
                        curl_easy_cleanup(s->curl);
                        curl_global_cleanup();
                }
                curl_slist_free_all(s->headers);
                free(s->body);
                free(s);
        }
        return NULL;
}

static void read_answer(struct qz_demo_ingest *s, int sent)
{
        json_error_t jerr;
        json_t *root = json_loadb(s->resp ? s->resp : "", s->resp_len, 0, &jerr);
        json_t *acc = root ? json_object_get(root, "accepted") : NULL;
        json_t *rej = root ? json_object_get(root, "rejected") : NULL;
        long long a = json_is_integer(acc) ? json_integer_value(acc) : sent;
        long long r = json_is_array(rej) ? (long long)json_array_size(rej) : 0;
        if (r > 0 && s->first_reject[0] == '\0') {
                char *txt = json_dumps(json_array_get(rej, 0), JSON_COMPACT);
                snprintf(s->first_reject, sizeof(s->first_reject), "%s", txt ? txt : "?");
                free(txt);
        }
        s->accepted += a;
        s->rejected += r;
        json_decref(root);
}

static bool retryable_curl(CURLcode rc)
{
        return rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
               rc == CURLE_GOT_NOTHING || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR;
}

static int post_batch(struct qz_demo_ingest *s, char *errstr, size_t errstr_size)
{
        int64_t deadline = qz_clock_mono_ms() + RETRY_WINDOW_MS, backoff = 250;
        s->body[s->len++] = ']';
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, s->body);
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->len);
        for (;;) {
                long status = 0;
                s->resp_len = 0;
                s->retry_after_s = -1;
                CURLcode rc = curl_easy_perform(s->curl);
                if (rc == CURLE_OK)
                        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
                if (rc == CURLE_OK && status >= 200 && status < 300) {
                        read_answer(s, s->n);
                        break;
                }
                bool again = rc == CURLE_OK ? (status == 503 || status == 429 || status == 502 ||
                                               status == 504)
                                            : retryable_curl(rc);
                int64_t left = deadline - qz_clock_mono_ms();
                if (!again || left <= 0) {
                        if (rc != CURLE_OK)
                                snprintf(errstr, errstr_size, "POST %s: %s%s", s->url,
                                         curl_easy_strerror(rc),
                                         again ? " (gave up after 60 s of retries)" : "");
                        else
                                snprintf(errstr, errstr_size, "POST %s: HTTP %ld%s: %.300s", s->url,
                                         status, again ? " (gave up after 60 s of retries)" : "",
                                         s->resp_len ? s->resp : "(empty body)");
                        return -1;
                }
                int64_t wait = s->retry_after_s >= 0 ? s->retry_after_s * 1000 : backoff;
                if (wait > left)
                        wait = left;
                s->retries++;
                sleep_ms(wait);
                if (backoff < 4000)
                        backoff *= 2;
        }
        s->len = (size_t)snprintf(s->body, BODY_CAP, "[");
        s->n = 0;
        return 0;
}

static int ingest_emit_cb(const struct qz_demo_play *p, void *ctx, char *errstr, size_t errstr_size)
{
        struct qz_demo_ingest *s = ctx;
        char at[25];
        qz_demo_format_time(p->played_at_ms, at);
        /* Every field is ours (UUIDs, fixed words, numbers): nothing to escape. */
        s->len += (size_t)snprintf(s->body + s->len, BODY_CAP - s->len,
                                   "%s{\"event_id\":\"%s\",\"user_id\":\"%s\",\"track_id\":\"%s\","
                                   "\"played_at\":\"%s\",\"duration_played_ms\":%d,"
                                   "\"completed\":%s,\"source\":\"%s\",\"device_type\":\"%s\"}",
                                   s->n ? "," : "", p->event_id, p->user_id, p->track_id, at,
                                   (int)p->duration_played_ms, p->completed ? "true" : "false",
                                   p->source, p->device_type);
        if (++s->n >= BATCH_MAX)
                return post_batch(s, errstr, errstr_size);
        return 0;
}

qz_demo_emit_cb qz_demo_ingest_emit_cb(void)
{
        return ingest_emit_cb;
}

int qz_demo_ingest_close(struct qz_demo_ingest *s, bool flush, long long *accepted,
                         long long *rejected, char *errstr, size_t errstr_size)
{
        int rc = 0;
        if (flush && s->n > 0)
                rc = post_batch(s, errstr, errstr_size);
        if (accepted)
                *accepted = s->accepted;
        if (rejected)
                *rejected = s->rejected;
        if (s->rejected > 0)
                fprintf(stderr, "qoqnuzctl demo: %lld plays rejected by the ingestor, first: %s\n",
                        s->rejected, s->first_reject);
        if (s->retries > 0)
                fprintf(stderr, "qoqnuzctl demo: %lld retried posts (ingestor busy or down)\n",
                        s->retries);
        curl_easy_cleanup(s->curl);
        curl_global_cleanup();
        curl_slist_free_all(s->headers);
        free(s->resp);
        free(s->body);
        free(s);
        return rc;
}
