/* control.c - the dev-broker's line-based control port for fault tests.
 *
 * One command per line, one answer line per command ("ok" / "error: ..."),
 * see db_control_exec(). Replies are short, so they are written with a plain
 * write(); a client that does not read its answers is simply disconnected. */
#include "devbroker.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTROL_MAX_CLIENTS 32
#define CONTROL_LINE_MAX    1024

struct client {
        int fd;
        char line[CONTROL_LINE_MAX];
        size_t len;
};

struct db_control {
        int listen_fd;
        struct db_cluster *cluster;
        struct client *clients[CONTROL_MAX_CLIENTS];
        size_t nclients;
};

int db_control_new(int listen_fd, struct db_cluster *c, struct db_control **out)
{
        struct db_control *ctl = calloc(1, sizeof(*ctl));
        if (!ctl)
                return -1;
        ctl->listen_fd = listen_fd;
        ctl->cluster = c;
        *out = ctl;
        return 0;
}

size_t db_control_fill(struct db_control *ctl, struct pollfd *pfds, size_t max)
{
        size_t n = 0;
        if (n < max)
                pfds[n++] = (struct pollfd){.fd = ctl->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < ctl->nclients && n < max; i++)
                pfds[n++] = (struct pollfd){.fd = ctl->clients[i]->fd, .events = POLLIN};
        return n;
}

static int reply_line(int fd, const char *reply)
{
        char out[CONTROL_LINE_MAX + 2];
        size_t len = strlen(reply);
        if (len > CONTROL_LINE_MAX)
                len = CONTROL_LINE_MAX;
        memcpy(out, reply, len);
        out[len++] = '\n';
        return write(fd, out, len) == (ssize_t)len ? 0 : -1;
}

/* Reads what is there and runs every complete line; -1 closes the client. */
static int serve(struct db_control *ctl, struct client *cl)
{
        char buf[CONTROL_LINE_MAX];
        ssize_t r = read(cl->fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                return -1;
        for (ssize_t i = 0; i < r; i++) {
                if (buf[i] != '\n') {
                        if (cl->len + 1 >= sizeof(cl->line)) {
                                reply_line(cl->fd, "error: line too long");
                                return -1;
                        }
                        cl->line[cl->len++] = buf[i];
                        continue;
                }
                char reply[CONTROL_LINE_MAX];
                if (cl->len > 0 && cl->line[cl->len - 1] == '\r')
                        cl->len--;
                cl->line[cl->len] = '\0';
                cl->len = 0;
                if (cl->line[0] == '\0')
                        continue;
                db_control_exec(ctl->cluster, cl->line, reply, sizeof(reply));
                if (strncmp(reply, "error", 5) == 0)
                        qz_log_kv(QZ_LOG_WARN, "control command refused", "command", cl->line,
                                  "reply", reply, NULL);
                if (reply_line(cl->fd, reply) != 0)
                        return -1;
        }
        return 0;
}

void db_control_handle(struct db_control *ctl, const struct pollfd *pfds, size_t n)
{
        size_t nclients = ctl->nclients, k = 0;
        if (n == 0)
                return;
        for (size_t i = 0; i < nclients && i + 1 < n; i++) {
                if (pfds[i + 1].revents && serve(ctl, ctl->clients[i]) != 0) {
                        close(ctl->clients[i]->fd);
                        free(ctl->clients[i]);
                        ctl->clients[i] = NULL;
                }
        }
        for (size_t i = 0; i < ctl->nclients; i++)
                if (ctl->clients[i])
                        ctl->clients[k++] = ctl->clients[i];
        ctl->nclients = k;
        if (!(pfds[0].revents & POLLIN))
                return;
        for (;;) {
                int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                struct client *cl = calloc(1, sizeof(*cl));
                if (ctl->nclients == CONTROL_MAX_CLIENTS || !cl) {
                        free(cl);
                        close(fd);
                        continue;
                }
                cl->fd = fd;
                ctl->clients[ctl->nclients++] = cl;
        }
}

void db_control_free(struct db_control *ctl)
{
        if (!ctl)
                return;
        for (size_t i = 0; i < ctl->nclients; i++) {
                close(ctl->clients[i]->fd);
                free(ctl->clients[i]);
        }
        close(ctl->listen_fd);
        free(ctl);
}
