/* bench_automation_api.c - closed-loop HTTP/1.1 keep-alive load generator for
 * bench/automation-api.sh.
 *
 * usage: bench_automation_api HOST PORT PATH SECONDS CONNECTIONS [BEARER_TOKEN]
 * Each connection is one thread sending GET PATH, reading the whole answer
 * (Content-Length), then the next; prints requests/s and latency percentiles.
 * Without arguments (as `make bench` runs every bench_* binary) it says so and
 * exits 0: the measurement needs the servers bench/automation-api.sh starts. */
#include "clock.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

struct worker {
        pthread_t thread;
        const char *host;
        int port;
        char request[2048];
        int64_t deadline_ns;
        long done, errors, non200;
        uint32_t *lat_us; /* one per request, up to MAX_SAMPLES / connections */
        long cap;
};

static int connect_to(const char *host, int port)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        int one = 1;
        if (fd < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
            connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return fd;
}

/* Reads one response; returns its status or -1. */
static int read_response(int fd, char *buf, size_t cap)
{
        size_t have = 0;
        char *end = NULL;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
                if (have == cap)
                        return -1;
                ssize_t n = read(fd, buf + have, cap - have);
                if (n <= 0)
                        return -1;
                have += (size_t)n;
        }
        int status = atoi(buf + 9);
        long clen = 0;
        for (char *p = buf; p < end; p++) {
                if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0) {
                        clen = strtol(p + 15, NULL, 10);
                        break;
                }
        }
        size_t body_have = have - (size_t)(end + 4 - buf);
        while ((long)body_have < clen) {
                ssize_t n = read(fd, buf, cap);
                if (n <= 0)
                        return -1;
                body_have += (size_t)n;
        }
        return status;
}

static void *run(void *arg)
{
        struct worker *w = arg;
        size_t cap = 1 << 20;
        char *buf = malloc(cap);
        int fd = -1;
        size_t rlen = strlen(w->request);
        while (buf && qz_clock_mono_ns() < w->deadline_ns) {
                if (fd < 0 && (fd = connect_to(w->host, w->port)) < 0) {
                        w->errors++;
                        usleep(10000);
                        continue;
                }
                int64_t t0 = qz_clock_mono_ns();
                int st = -1;
                if (write(fd, w->request, rlen) == (ssize_t)rlen)
                        st = read_response(fd, buf, cap);
                if (st < 0) {
                        w->errors++;
                        close(fd);
                        fd = -1;
                        continue;
                }
                if (st != 200)
                        w->non200++;
                if (w->done < w->cap)
                        w->lat_us[w->done] = (uint32_t)((qz_clock_mono_ns() - t0) / 1000);
                w->done++;
        }
        if (fd >= 0)
                close(fd);
        free(buf);
        return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
        if (argc < 6) {
                printf("bench_automation_api: the load generator of bench/automation-api.sh "
                       "(which starts the servers); nothing to measure on its own\n");
                return 0;
        }
        const char *host = argv[1], *path = argv[3], *token = argc > 6 ? argv[6] : NULL;
        int port = atoi(argv[2]), conns = atoi(argv[5]);
        double seconds = atof(argv[4]);
        if (port <= 0 || conns <= 0 || conns > 1024 || seconds <= 0) {
                fprintf(stderr, "bad arguments\n");
                return 2;
        }
        struct worker *ws = calloc((size_t)conns, sizeof(*ws));
        int64_t start = qz_clock_mono_ns();
        for (int i = 0; i < conns; i++) {
                struct worker *w = &ws[i];
                w->host = host;
                w->port = port;
                w->cap = MAX_SAMPLES / conns;
                w->lat_us = malloc(sizeof(uint32_t) * (size_t)w->cap);
                w->deadline_ns = start + (int64_t)(seconds * 1e9);
                snprintf(w->request, sizeof(w->request),
                         "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s%sConnection: keep-alive\r\n\r\n",
                         path, host, token ? "Authorization: Bearer " : "", token ? token : "",
                         token ? "\r\n" : "");
                pthread_create(&w->thread, NULL, run, w);
        }
        long done = 0, errors = 0, non200 = 0, nsamples = 0;
        for (int i = 0; i < conns; i++) {
                pthread_join(ws[i].thread, NULL);
                done += ws[i].done;
                errors += ws[i].errors;
                non200 += ws[i].non200;
        }
        double elapsed = (double)(qz_clock_mono_ns() - start) / 1e9;
        uint32_t *all = malloc(sizeof(uint32_t) * (size_t)(done > 0 ? done : 1));
        for (int i = 0; i < conns; i++) {
                long n = ws[i].done < ws[i].cap ? ws[i].done : ws[i].cap;
                memcpy(all + nsamples, ws[i].lat_us, sizeof(uint32_t) * (size_t)n);
                nsamples += n;
                free(ws[i].lat_us);
        }
        qsort(all, (size_t)nsamples, sizeof(uint32_t), cmp_u32);
#define PCT(p) (nsamples ? all[(size_t)((double)(nsamples - 1) * (p))] / 1000.0 : 0.0)
        /* one machine-readable line: rps p50_ms p99_ms requests errors non200 */
        printf("rps=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%ld errors=%ld non200=%ld\n",
               (double)done / elapsed, PCT(0.50), PCT(0.99), PCT(1.0), done, errors, non200);
        free(all);
        free(ws);
        return errors > done / 100 || non200 > 0 ? 1 : 0;
}
