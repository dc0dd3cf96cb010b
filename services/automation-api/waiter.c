/* waiter.c - the playlist_ready LISTEN thread and the requests waiting on it. */
#include "waiter.h"

#include "json.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

struct waiter_entry {
        char request_id[QZ_UUID_STR_LEN + 1];
        bool done, ok;
        char error[256];
        struct waiter_entry *next;
};

struct waiter {
        pthread_t thread;
        atomic_bool stop, ready;
        struct qz_pg *pg;
        pthread_mutex_t lock;
        pthread_cond_t answered; /* broadcast: few concurrent waiters */
        struct waiter_entry *entries;
};

static void deliver(struct waiter *w, const char *payload)
{
        char err[128];
        json_t *j = qz_json_parse_object(payload, strlen(payload), err, sizeof(err));
        const char *id = NULL, *status = NULL, *error = NULL;
        if (!j || qz_json_get_string(j, "request_id", true, &id, err, sizeof(err)) != 0 ||
            qz_json_get_string(j, "status", true, &status, err, sizeof(err)) != 0) {
                qz_warn("playlist_ready: ignoring a malformed notification: %s", err);
                json_decref(j);
                return;
        }
        qz_json_get_string(j, "error", false, &error, err, sizeof(err));
        pthread_mutex_lock(&w->lock);
        for (struct waiter_entry *e = w->entries; e; e = e->next) {
                if (strcasecmp(e->request_id, id) != 0)
                        continue;
                e->done = true;
                e->ok = strcmp(status, "ok") == 0;
                snprintf(e->error, sizeof(e->error), "%s",
                         error ? error : (e->ok ? "" : "playlist generation failed"));
                pthread_cond_broadcast(&w->answered);
                break;
        }
        pthread_mutex_unlock(&w->lock);
        json_decref(j);
}

static void *waiter_main(void *arg)
{
        struct waiter *w = arg;
        char err[512];
        while (!atomic_load(&w->stop)) {
                if (qz_pg_listen(w->pg, "playlist_ready", err, sizeof(err)) != 0) {
                        atomic_store(&w->ready, false);
                        usleep(500 * 1000);
                        continue;
                }
                break;
        }
        while (!atomic_load(&w->stop)) {
                PGnotify *n = NULL;
                int rc = qz_pg_notify_wait(w->pg, 200, &n, err, sizeof(err));
                atomic_store(&w->ready, rc >= 0 && qz_pg_ready(w->pg));
                if (rc == 1) {
                        deliver(w, n->extra ? n->extra : "");
                        PQfreemem(n);
                } else if (rc < 0) {
                        usleep(200 * 1000);
                }
        }
        return NULL;
}

struct waiter *waiter_start(const struct qz_pg_opts *pg_opts, char *errstr, size_t errstr_size)
{
        struct waiter *w = calloc(1, sizeof(*w));
        if (!w) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        struct qz_pg_opts po = *pg_opts;
        po.application_name = "automation-api-playlist-ready";
        if (!(w->pg = qz_pg_new(&po, errstr, errstr_size))) {
                free(w);
                return NULL;
        }
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->answered, NULL);
        if (pthread_create(&w->thread, NULL, waiter_main, w) != 0) {
                snprintf(errstr, errstr_size, "cannot start the playlist_ready thread");
                qz_pg_free(w->pg);
                free(w);
                return NULL;
        }
        return w;
}

void waiter_stop(struct waiter *w)
{
        if (!w)
                return;
        atomic_store(&w->stop, true);
        pthread_join(w->thread, NULL);
        qz_pg_free(w->pg);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->answered);
        free(w);
}

bool waiter_ready(struct waiter *w)
{
        return atomic_load(&w->ready);
}

struct waiter_entry *waiter_register(struct waiter *w, const char *request_id)
{
        struct waiter_entry *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        snprintf(e->request_id, sizeof(e->request_id), "%s", request_id);
        pthread_mutex_lock(&w->lock);
        e->next = w->entries;
        w->entries = e;
        pthread_mutex_unlock(&w->lock);
        return e;
}

static void unlink_entry(struct waiter *w, struct waiter_entry *e)
{
        for (struct waiter_entry **p = &w->entries; *p; p = &(*p)->next) {
                if (*p == e) {
                        *p = e->next;
                        break;
                }
        }
}

int waiter_wait(struct waiter *w, struct waiter_entry *e, long timeout_ms, bool *ok, char *error,
                size_t error_size)
{
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&w->lock);
        while (!e->done)
                if (pthread_cond_timedwait(&w->answered, &w->lock, &deadline) == ETIMEDOUT)
                        break;
        int rc = e->done ? 1 : 0;
        *ok = e->ok;
        snprintf(error, error_size, "%s", e->error);
        unlink_entry(w, e);
        pthread_mutex_unlock(&w->lock);
        free(e);
        return rc;
}

void waiter_cancel(struct waiter *w, struct waiter_entry *e)
{
        if (!e)
                return;
        pthread_mutex_lock(&w->lock);
        unlink_entry(w, e);
        pthread_mutex_unlock(&w->lock);
        free(e);
}
