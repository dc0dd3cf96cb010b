/* proxy.c - the bootstrap forwarder: a fixed TCP port piped to the first live mock broker.
 *
 * Clients only use it for their first metadata request (they then talk to the
 * brokers' real ports), so one poll() thread with small buffers is plenty.
 * Each direction has one buffer; a side is read only while the buffer toward
 * the other side is empty, which keeps memory bounded without blocking. */
#include "devbroker.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROXY_MAX_PAIRS 256
#define PROXY_BUF       65536

struct pipe_dir {
        char buf[PROXY_BUF];
        size_t len, off; /* pending bytes are buf[off..len) */
};

struct pair {
        int fd[2];              /* 0 = client, 1 = broker */
        struct pipe_dir dir[2]; /* dir[i]: bytes read from fd[i], to write to fd[1-i] */
};

struct db_proxy {
        int listen_fd;
        struct db_cluster *cluster;
        struct pair *pairs[PROXY_MAX_PAIRS];
        size_t npairs;
};

static int set_nonblock(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int db_listen(const char *host, int port, char *errstr, size_t errstr_size)
{
        struct sockaddr_in sa;
        int one = 1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0) {
                snprintf(errstr, errstr_size, "socket: %s", strerror(errno));
                return -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
                snprintf(errstr, errstr_size, "bad IPv4 address '%s'", host);
                goto fail;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
                snprintf(errstr, errstr_size, "listen on %s:%d: %s", host, port, strerror(errno));
                goto fail;
        }
        if (set_nonblock(fd) != 0) {
                snprintf(errstr, errstr_size, "fcntl: %s", strerror(errno));
                goto fail;
        }
        return fd;
fail:
        close(fd);
        return -1;
}

int db_proxy_new(int listen_fd, struct db_cluster *c, struct db_proxy **out)
{
        struct db_proxy *p = calloc(1, sizeof(*p));
        if (!p)
                return -1;
        p->listen_fd = listen_fd;
        p->cluster = c;
        *out = p;
        return 0;
}

static int connect_broker(const char *host, int port)
{
        struct sockaddr_in sa;
        int one = 1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        /* A loopback connect completes at once, so a blocking connect is fine. */
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
            connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || set_nonblock(fd) != 0) {
                close(fd);
                return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return fd;
}

static void accept_clients(struct db_proxy *p)
{
        for (;;) {
                const char *host;
                int port, bfd, one = 1;
                int cfd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return;
                if (p->npairs == PROXY_MAX_PAIRS) {
                        qz_warn("bootstrap forwarder full (%d connections); refusing one",
                                PROXY_MAX_PAIRS);
                        close(cfd);
                        continue;
                }
                if (db_cluster_target(p->cluster, &host, &port) != 0 ||
                    (bfd = connect_broker(host, port)) < 0) {
                        qz_warn("bootstrap forwarder: no live broker to forward to");
                        close(cfd);
                        continue;
                }
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct pair *pr = calloc(1, sizeof(*pr));
                if (!pr) {
                        close(cfd);
                        close(bfd);
                        continue;
                }
                pr->fd[0] = cfd;
                pr->fd[1] = bfd;
                p->pairs[p->npairs++] = pr;
        }
}

size_t db_proxy_fill(struct db_proxy *p, struct pollfd *pfds, size_t max)
{
        size_t n = 0;
        if (n < max)
                pfds[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < p->npairs && n + 2 <= max; i++) {
                struct pair *pr = p->pairs[i];
                for (int s = 0; s < 2; s++) {
                        short ev = 0;
                        if (pr->dir[s].len == 0)
                                ev |= POLLIN; /* room to read from this side */
                        if (pr->dir[1 - s].len > 0)
                                ev |= POLLOUT; /* bytes waiting for this side */
                        pfds[n++] = (struct pollfd){.fd = pr->fd[s], .events = ev};
                }
        }
        return n;
}

/* Moves bytes for one pair; returns -1 when the pair should be closed. */
static int pump(struct pair *pr, const struct pollfd *pf)
{
        for (int s = 0; s < 2; s++) {
                short re = pf[s].revents;
                if (re & (POLLERR | POLLNVAL))
                        return -1;
                if ((re & (POLLIN | POLLHUP)) && pr->dir[s].len == 0) {
                        ssize_t r = read(pr->fd[s], pr->dir[s].buf, PROXY_BUF);
                        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                                return -1;
                        if (r > 0) {
                                pr->dir[s].len = (size_t)r;
                                pr->dir[s].off = 0;
                        }
                }
        }
        for (int s = 0; s < 2; s++) {
                struct pipe_dir *d = &pr->dir[1 - s]; /* bytes destined to fd[s] */
                if (d->len == 0)
                        continue;
                ssize_t w = write(pr->fd[s], d->buf + d->off, d->len - d->off);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                        return -1;
                if (w > 0)
                        d->off += (size_t)w;
                if (d->off == d->len)
                        d->len = d->off = 0;
        }
        return 0;
}

static void close_pair(struct pair *pr)
{
        close(pr->fd[0]);
        close(pr->fd[1]);
        free(pr);
}

void db_proxy_handle(struct db_proxy *p, const struct pollfd *pfds, size_t n)
{
        size_t npairs = p->npairs, k = 0;
        if (n == 0)
                return;
        /* Pairs first: accepting appends pairs that had no slot this round. */
        for (size_t i = 0; i < npairs && 1 + 2 * i + 1 < n; i++) {
                struct pair *pr = p->pairs[i];
                if (pump(pr, &pfds[1 + 2 * i]) != 0) {
                        close_pair(pr);
                        p->pairs[i] = NULL;
                }
        }
        for (size_t i = 0; i < p->npairs; i++)
                if (p->pairs[i])
                        p->pairs[k++] = p->pairs[i];
        p->npairs = k;
        if (pfds[0].revents & POLLIN)
                accept_clients(p);
}

void db_proxy_free(struct db_proxy *p)
{
        if (!p)
                return;
        for (size_t i = 0; i < p->npairs; i++)
                close_pair(p->pairs[i]);
        close(p->listen_fd);
        free(p);
}
