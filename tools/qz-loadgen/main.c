/* main.c - qz-loadgen: load for the play-ingestor benchmark (bench/ingest.sh).
 *
 *   qz-loadgen http    --url URL --token T [--connections 8] [--batch 100] [--seconds 10]
 *   qz-loadgen produce --brokers B [--connections 8] [--batch 100] [--seconds 10] [--linger-ms 5]
 *                      [--rate PLAYS_PER_S]
 *   qz-loadgen pg      --dsn DSN [--connections 8] [--seconds 10]
 *   common: [--pid NAME=PID]... (CPU of those processes per 1k plays, from /proc/PID/stat;
 *           PID 0 = qz-loadgen itself)
 *
 * http: keep-alive HTTP/1.1 connections, one thread each, posting JSON arrays of
 * `batch` plays (fresh event ids per request) and timing each request until its 202.
 * produce: the same plays, Avro-encoded once, straight into plays.v1 through the
 * acknowledged producer (common/kafka.h): the broker's ceiling without HTTP. Each record sent
 * gets a fresh event_id and played_at patched into its encoded bytes (no re-encoding), so a
 * consumer counts every one (bench/trending.sh measures freshness with it). --rate paces the
 * threads to that many plays/s in total (default: as fast as acknowledgements come back).
 * pg: the old system's path, one INSERT INTO play_history per play through libpq.
 * The first second is warm-up and not measured. Each prints one line: mode, plays/s, p50/p99
 * latency of one request (or insert), errors, and CPU ms per 1k plays of every --pid. */
#include "avro.h"
#include "clock.h"
#include "json.h"
#include "kafka.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PIDS 4

struct opts {
        const char *mode, *url, *token, *brokers, *dsn, *schema_dir;
        int connections, batch, linger_ms;
        double seconds, rate;
        int npids;
        char pid_names[MAX_PIDS][32];
        int pids[MAX_PIDS];
};

/* Per-thread results: request latencies in microseconds. */
struct worker {
        const struct opts *o;
        pthread_t th;
        int id;
        int64_t deadline_ns;
        int64_t count_from_ns; /* warm-up: requests finishing earlier are not counted */
        long plays, errors;
        long e429, e503; /* of errors: overloaded, unavailable (http mode) */
        uint32_t *lat_us;
        size_t nlat, caplat;
        void *ctx; /* mode-specific */
};

static void lat_add(struct worker *w, int64_t ns)
{
        if (qz_clock_mono_ns() < w->count_from_ns)
                return;
        if (w->nlat == w->caplat) {
                w->caplat = w->caplat ? w->caplat * 2 : 4096;
                w->lat_us = realloc(w->lat_us, w->caplat * sizeof(*w->lat_us));
        }
        w->lat_us[w->nlat++] = (uint32_t)(ns / 1000);
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

/* utime + stime of pid in clock ticks; -1 when unreadable. */
static long cpu_ticks(int pid)
{
        char path[64], buf[2048];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        long utime = 0, stime = 0;
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime,
                         &stime) != 2)
                return -1;
        return utime + stime;
}

/* ---- the plays ---------------------------------------------------------- */

static void play_fields(char *out, size_t size, unsigned seed, int i)
{
        char event_id[37], user[37], track[37];
        qz_uuid_generate(event_id);
        /* 10,000 users and 50,000 tracks, spread over every partition */
        snprintf(user, sizeof(user), "%08x-0000-4000-8000-%012x", (seed * 31 + (unsigned)i) % 10000,
                 (unsigned)i);
        snprintf(track, sizeof(track), "%08x-1111-4111-8111-%012x",
                 (seed * 17 + (unsigned)i * 7) % 50000, 0u);
        snprintf(out, size,
                 "{\"event_id\":\"%s\",\"user_id\":\"%s\",\"track_id\":\"%s\","
                 "\"duration_played_ms\":%d,\"completed\":%s,\"source\":\"playlist\","
                 "\"device_type\":\"mobile\"}",
                 event_id, user, track, 30000 + i, i % 3 ? "true" : "false");
}

/* ---- http --------------------------------------------------------------- */

struct http_target {
        struct sockaddr_in addr;
        char host[80], path[256]; /* host: "a.b.c.d:port" for the Host header */
};

static int parse_url(const char *url, struct http_target *t)
{
        int port = 80;
        char host[64] = "", path[256] = "/";
        if (sscanf(url, "http://%63[^:/]:%d%255s", host, &port, path) < 2 || port < 1 ||
            port > 65535)
                return -1;
        memset(&t->addr, 0, sizeof(t->addr));
        t->addr.sin_family = AF_INET;
        t->addr.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &t->addr.sin_addr) != 1)
                return -1;
        snprintf(t->host, sizeof(t->host), "%s:%d", host, port);
        snprintf(t->path, sizeof(t->path), "%s", path);
        return 0;
}

static int connect_to(const struct http_target *t)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *)&t->addr, sizeof(t->addr)) != 0) {
                close(fd);
                return -1;
        }
        return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return -1;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Reads one response; returns its status, or -1 (the connection is then unusable). */
static int read_response(int fd, char *buf, size_t size)
{
        size_t have = 0;
        char *end = NULL;
        while (!end) {
                if (have == size - 1)
                        return -1;
                ssize_t r = read(fd, buf + have, size - 1 - have);
                if (r <= 0)
                        return -1;
                have += (size_t)r;
                buf[have] = '\0';
                end = strstr(buf, "\r\n\r\n");
        }
        int status = atoi(buf + 9);
        char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
        size_t got = have - (size_t)(end + 4 - buf);
        while (got < body) {
                ssize_t r = read(fd, buf, size - 1 < body - got ? size - 1 : body - got);
                if (r <= 0)
                        return -1;
                got += (size_t)r;
        }
        return status;
}

static void *http_worker(void *arg)
{
        struct worker *w = arg;
        const struct http_target *t = w->ctx;
        size_t cap = (size_t)w->o->batch * 400 + 4096;
        char *req = malloc(cap), *body = malloc(cap), resp[65536], play[512];
        int fd = connect_to(t);
        unsigned seq = (unsigned)w->id * 7919;
        while (fd >= 0 && qz_clock_mono_ns() < w->deadline_ns) {
                size_t bl = 0;
                body[bl++] = '[';
                for (int i = 0; i < w->o->batch; i++) {
                        play_fields(play, sizeof(play), seq++, i);
                        bl += (size_t)snprintf(body + bl, cap - bl, "%s%s", i ? "," : "", play);
                }
                body[bl++] = ']';
                int hl = snprintf(req, cap,
                                  "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                                  t->path, t->host, w->o->token, bl);
                memcpy(req + hl, body, bl);
                int64_t t0 = qz_clock_mono_ns();
                int status = write_all(fd, req, (size_t)hl + bl) == 0
                                 ? read_response(fd, resp, sizeof(resp))
                                 : -1;
                if (status == 202) {
                        if (qz_clock_mono_ns() >= w->count_from_ns)
                                w->plays += w->o->batch;
                        lat_add(w, qz_clock_mono_ns() - t0);
                } else {
                        w->errors++;
                        w->e429 += status == 429;
                        w->e503 += status == 503;
                        if (status < 0) { /* reconnect */
                                close(fd);
                                fd = connect_to(t);
                        } else {
                                usleep(10000); /* 429/503: back off a little */
                        }
                }
        }
        if (fd >= 0)
                close(fd);
        free(req);
        free(body);
        return NULL;
}

/* ---- produce (no HTTP) ---------------------------------------------------- */

struct produce_ctx {
        struct qz_kafka_producer *p;
        const struct qz_avro_schema *schema;
};

/* Where event_id's text and played_at's varint sit in an encoded PlayEvent: the 10-byte
 * single-object header, then event_id, user_id, track_id as (length 72 = 0x48, 36 chars). */
#define PATCH_EVENT_ID  11
#define PATCH_PLAYED_AT (10 + 3 * 37)

static size_t zigzag_varint(int64_t v, unsigned char *out)
{
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        size_t n = 0;
        do {
                out[n++] = (unsigned char)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
                z >>= 7;
        } while (z);
        return n;
}

/* True when the record can be patched in place: the layout above holds and played_at's
 * varint has the length it will keep for the run (6 bytes from 2004 to 2248). */
static bool patchable(const unsigned char *v, size_t len, const char *event_id, int64_t at)
{
        unsigned char var[10];
        size_t n = zigzag_varint(at, var);
        return len > PATCH_PLAYED_AT + n && v[PATCH_EVENT_ID - 1] == 72 &&
               memcmp(v + PATCH_EVENT_ID, event_id, 36) == 0 &&
               memcmp(v + PATCH_PLAYED_AT, var, n) == 0 && n == 6;
}

/* A fresh, distinct event id without a syscall: a random per-thread prefix and a counter. */
static void event_id_next(char out[37], uint64_t prefix, uint64_t seq)
{
        char hex[33];
        snprintf(hex, sizeof(hex), "%016llx%016llx", (unsigned long long)prefix,
                 (unsigned long long)seq);
        snprintf(out, 37, "%.8s-%.4s-4%.3s-8%.3s-%.12s", hex, hex + 8, hex + 13, hex + 17,
                 hex + 20);
}

static void *produce_worker(void *arg)
{
        struct worker *w = arg;
        struct produce_ctx *c = w->ctx;
        int n = w->o->batch;
        struct qz_kafka_record *recs = calloc((size_t)n, sizeof(*recs));
        unsigned char **vals = calloc((size_t)n, sizeof(*vals));
        char(*keys)[37] = calloc((size_t)n, 37), play[512], err[256], eid[37];
        bool patch = true;
        uint64_t prefix = 0, seq = 0;
        char hex[17];
        qz_uuid_generate(eid);
        snprintf(hex, sizeof(hex), "%.8s%.4s%.4s", eid, eid + 9, eid + 14);
        prefix = strtoull(hex, NULL, 16);
        for (int i = 0; i < n; i++) {
                play_fields(play, sizeof(play), (unsigned)w->id * 7919, i);
                json_t *v = json_loads(play, 0, NULL);
                json_object_set_new(v, "played_at", json_integer(qz_time_now_ms()));
                json_object_set_new(v, "source_playlist_id", json_null());
                size_t len = 0;
                if (qz_avro_encode_json(c->schema, v, &vals[i], &len, err, sizeof(err)) != 0) {
                        fprintf(stderr, "encode: %s\n", err);
                        exit(1);
                }
                patch = patch &&
                        patchable(vals[i], len, json_string_value(json_object_get(v, "event_id")),
                                  json_integer_value(json_object_get(v, "played_at")));
                snprintf(keys[i], 37, "%s", json_string_value(json_object_get(v, "user_id")));
                recs[i] = (struct qz_kafka_record){.topic = "plays.v1",
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = keys[i],
                                                   .key_len = 36,
                                                   .value = vals[i],
                                                   .value_len = len};
                json_decref(v);
        }
        if (!patch)
                fprintf(stderr,
                        "qz-loadgen: encoded layout not as expected: the same %d plays "
                        "are repeated (consumers drop them as duplicates)\n",
                        n);
        /* --rate: this thread's share, one batch every step_ns */
        int64_t step_ns = w->o->rate > 0 ? (int64_t)(n * 1e9 * w->o->connections / w->o->rate) : 0;
        int64_t next_ns = qz_clock_mono_ns();
        while (qz_clock_mono_ns() < w->deadline_ns) {
                if (step_ns > 0) {
                        int64_t wait = next_ns - qz_clock_mono_ns();
                        if (wait > 0)
                                usleep((useconds_t)(wait / 1000));
                        next_ns += step_ns;
                }
                if (patch) {
                        unsigned char var[10];
                        zigzag_varint(qz_time_now_ms(), var);
                        for (int i = 0; i < n; i++) {
                                event_id_next(eid, prefix, seq++);
                                memcpy(vals[i] + PATCH_EVENT_ID, eid, 36);
                                memcpy(vals[i] + PATCH_PLAYED_AT, var, 6);
                        }
                }
                int64_t t0 = qz_clock_mono_ns();
                if (qz_kafka_produce_wait(c->p, recs, (size_t)n, 10000, err, sizeof(err)) ==
                    QZ_KAFKA_OK) {
                        if (qz_clock_mono_ns() >= w->count_from_ns)
                                w->plays += n;
                        lat_add(w, qz_clock_mono_ns() - t0);
                } else {
                        w->errors++;
                        usleep(10000);
                }
        }
        for (int i = 0; i < n; i++)
                free(vals[i]);
        free(vals);
        free(keys);
        free(recs);
        return NULL;
}

/* ---- pg: the old path ---------------------------------------------------- */

static void *pg_worker(void *arg)
{
        struct worker *w = arg;
        PGconn *c = PQconnectdb(w->o->dsn);
        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "pg: %s", PQerrorMessage(c));
                PQfinish(c);
                w->errors++;
                return NULL;
        }
        unsigned seq = (unsigned)w->id * 7919;
        while (qz_clock_mono_ns() < w->deadline_ns) {
                char event_id[37], user[37], track[37], dur[16];
                qz_uuid_generate(event_id);
                snprintf(user, sizeof(user), "%08x-0000-4000-8000-%012x", seq % 10000, seq);
                snprintf(track, sizeof(track), "%08x-1111-4111-8111-%012x", (seq * 7) % 50000, 0u);
                snprintf(dur, sizeof(dur), "%u", 30000 + seq % 100);
                seq++;
                const char *v[] = {event_id,   user,    track, dur, seq % 3 ? "true" : "false",
                                   "playlist", "mobile"};
                int64_t t0 = qz_clock_mono_ns();
                PGresult *r = PQexecParams(
                    c,
                    "INSERT INTO play_history (event_id, user_id, track_id, played_at, "
                    "duration_played_ms, completed, source, device_type) "
                    "VALUES ($1, $2, $3, now(), $4, $5, $6, $7)",
                    7, NULL, v, NULL, NULL, 0);
                if (PQresultStatus(r) == PGRES_COMMAND_OK) {
                        if (qz_clock_mono_ns() >= w->count_from_ns)
                                w->plays++;
                        lat_add(w, qz_clock_mono_ns() - t0);
                } else {
                        w->errors++;
                }
                PQclear(r);
        }
        PQfinish(c);
        return NULL;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(void)
{
        fprintf(
            stderr,
            "usage: qz-loadgen http --url URL --token TOKEN | produce --brokers B | pg --dsn DSN\n"
            "       [--connections N] [--batch N] [--seconds S] [--linger-ms N (produce)]\n"
            "       [--rate PLAYS_PER_S (produce)]\n"
            "       [--pid NAME=PID]...\n");
        exit(2);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
        if (argc < 2)
                usage();
        *o = (struct opts){.mode = argv[1], .connections = 8, .batch = 100, .seconds = 10};
        o->schema_dir = getenv("QOQNUZ_SCHEMA_DIR") ? getenv("QOQNUZ_SCHEMA_DIR") : "schemas";
        for (int i = 2; i < argc; i++) {
                const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!v)
                        usage();
                i++;
                if (strcmp(k, "--url") == 0)
                        o->url = v;
                else if (strcmp(k, "--token") == 0)
                        o->token = v;
                else if (strcmp(k, "--brokers") == 0)
                        o->brokers = v;
                else if (strcmp(k, "--dsn") == 0)
                        o->dsn = v;
                else if (strcmp(k, "--connections") == 0)
                        o->connections = atoi(v);
                else if (strcmp(k, "--batch") == 0)
                        o->batch = atoi(v);
                else if (strcmp(k, "--linger-ms") == 0)
                        o->linger_ms = atoi(v);
                else if (strcmp(k, "--rate") == 0)
                        o->rate = atof(v);
                else if (strcmp(k, "--seconds") == 0)
                        o->seconds = atof(v);
                else if (strcmp(k, "--pid") == 0 && o->npids < MAX_PIDS && strchr(v, '=')) {
                        snprintf(o->pid_names[o->npids], sizeof(o->pid_names[0]), "%.*s",
                                 (int)(strchr(v, '=') - v), v);
                        o->pids[o->npids] = atoi(strchr(v, '=') + 1);
                        if (o->pids[o->npids] == 0)
                                o->pids[o->npids] = (int)getpid();
                        o->npids++;
                } else
                        usage();
        }
        if (o->connections < 1 || o->batch < 1 || o->seconds <= 0)
                usage();
}

int main(int argc, char **argv)
{
        struct opts o;
        struct http_target target;
        struct produce_ctx pc = {0};
        struct qz_avro_registry *reg = NULL;
        void *(*fn)(void *) = NULL;
        void *ctx = NULL;
        char err[512];

        parse_args(argc, argv, &o);
        if (strcmp(o.mode, "http") == 0) {
                if (!o.url || !o.token || parse_url(o.url, &target) != 0)
                        usage();
                fn = http_worker;
                ctx = &target;
        } else if (strcmp(o.mode, "produce") == 0) {
                if (!o.brokers)
                        usage();
                if (qz_avro_registry_load(o.schema_dir, &reg, err, sizeof(err)) != 0) {
                        fprintf(stderr, "schemas: %s\n", err);
                        return 1;
                }
                pc.schema = qz_avro_schema_get(reg, "PlayEvent");
                struct qz_kafka_producer_config kc = {
                    .brokers = o.brokers, .client_id = "qz-loadgen", .linger_ms = o.linger_ms};
                if (qz_kafka_producer_new(&kc, &pc.p, err, sizeof(err)) != 0) {
                        fprintf(stderr, "%s\n", err);
                        return 1;
                }
                /* wait for a broker, like the ingestor's readiness */
                for (int i = 0; i < 100 && !qz_kafka_producer_ready(pc.p); i++)
                        usleep(100000);
                fn = produce_worker;
                ctx = &pc;
        } else if (strcmp(o.mode, "pg") == 0) {
                if (!o.dsn)
                        usage();
                o.batch = 1; /* one play per insert */
                fn = pg_worker;
        } else {
                usage();
        }

        struct worker *w = calloc((size_t)o.connections, sizeof(*w));
        long ticks0[MAX_PIDS];
        /* one second of warm-up (connections, metadata, producer id) is not measured */
        int64_t warm = qz_clock_mono_ns(), t0 = warm + 1000000000LL;
        for (int i = 0; i < o.connections; i++) {
                w[i] = (struct worker){.o = &o, .id = i, .ctx = ctx, .count_from_ns = t0};
                w[i].deadline_ns = t0 + (int64_t)(o.seconds * 1e9);
                pthread_create(&w[i].th, NULL, fn, &w[i]);
        }
        usleep((useconds_t)((t0 - qz_clock_mono_ns()) / 1000));
        for (int i = 0; i < o.npids; i++)
                ticks0[i] = cpu_ticks(o.pids[i]);
        long plays = 0, errors = 0, e429 = 0, e503 = 0;
        size_t nlat = 0;
        for (int i = 0; i < o.connections; i++) {
                pthread_join(w[i].th, NULL);
                plays += w[i].plays;
                errors += w[i].errors;
                e429 += w[i].e429;
                e503 += w[i].e503;
                nlat += w[i].nlat;
        }
        double secs = (double)(qz_clock_mono_ns() - t0) / 1e9;
        uint32_t *all = malloc((nlat + 1) * sizeof(*all));
        size_t k = 0;
        for (int i = 0; i < o.connections; i++) {
                memcpy(all + k, w[i].lat_us, w[i].nlat * sizeof(*all));
                k += w[i].nlat;
                free(w[i].lat_us);
        }
        qsort(all, nlat, sizeof(*all), cmp_u32);
        double p50 = nlat ? all[nlat / 2] / 1000.0 : 0,
               p99 = nlat ? all[nlat * 99 / 100] / 1000.0 : 0;
        printf("%s: %.0f plays/s (%ld plays in %.1f s, %d connections, batch %d), "
               "latency p50 %.2f ms p99 %.2f ms, errors %ld",
               o.mode, plays / secs, plays, secs, o.connections, o.batch, p50, p99, errors);
        if (e429 || e503)
                printf(" (%ld of them 429 overloaded, %ld 503 unavailable)", e429, e503);
        long hz = sysconf(_SC_CLK_TCK);
        for (int i = 0; i < o.npids; i++) {
                long t = cpu_ticks(o.pids[i]);
                double ms = t >= 0 && ticks0[i] >= 0 ? (double)(t - ticks0[i]) * 1000.0 / hz : -1;
                printf(", %s CPU %.1f ms per 1k plays (%.0f%% of a core)", o.pid_names[i],
                       plays ? ms * 1000.0 / plays : 0, ms / 10.0 / secs);
        }
        printf("\n");
        free(all);
        free(w);
        if (pc.p)
                qz_kafka_producer_close(pc.p, 10000);
        qz_avro_registry_free(reg);
        return plays > 0 ? 0 : 1;
}
