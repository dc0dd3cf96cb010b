/* trackset.c - the set of known track ids, to count plays of tracks the catalog lacks. */
#include "trackset.h"

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the set ---------------------------------------------------------- */

struct key {
        uint64_t hi, lo; /* hi == lo == 0 marks an empty slot (the nil UUID is never a track) */
};

struct trackids {
        struct key *slots;
        size_t mask, n;
};

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        c = (char)(c | 0x20);
        return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "8-4-4-4-12" hex -> 128 bits; -1 when it is not that shape. */
static int parse_uuid(const char *s, struct key *k)
{
        uint64_t w[2] = {0, 0};
        int digits = 0;
        for (int i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return -1;
                        continue;
                }
                int v = hexval(s[i]);
                if (v < 0)
                        return -1;
                w[digits / 16] = (w[digits / 16] << 4) | (uint64_t)v;
                digits++;
        }
        if (s[36] != '\0')
                return -1;
        k->hi = w[0];
        k->lo = w[1];
        return 0;
}

static size_t slot_of(const struct key *k, size_t mask)
{
        uint64_t h = (k->hi ^ (k->lo * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
        return (size_t)(h >> 17) & mask;
}

struct trackids *trackids_new(size_t expected)
{
        size_t cap = 16;
        while (cap < expected * 2)
                cap <<= 1;
        struct trackids *s = calloc(1, sizeof(*s));
        if (!s || !(s->slots = calloc(cap, sizeof(struct key)))) {
                free(s);
                return NULL;
        }
        s->mask = cap - 1;
        return s;
}

int trackids_add(struct trackids *s, const char *id)
{
        struct key k;
        if (parse_uuid(id, &k) != 0 || (k.hi == 0 && k.lo == 0))
                return -1;
        if ((s->n + 1) * 2 > s->mask + 1) {
                /* keep the load at most 1/2 */
                struct trackids *g = trackids_new((s->mask + 1));
                if (!g)
                        return -1;
                for (size_t i = 0; i <= s->mask; i++) {
                        struct key *e = &s->slots[i];
                        if (!e->hi && !e->lo)
                                continue;
                        size_t j = slot_of(e, g->mask);
                        while (g->slots[j].hi || g->slots[j].lo)
                                j = (j + 1) & g->mask;
                        g->slots[j] = *e;
                }
                free(s->slots);
                s->slots = g->slots;
                s->mask = g->mask;
                free(g);
        }
        size_t j = slot_of(&k, s->mask);
        while (s->slots[j].hi || s->slots[j].lo) {
                if (s->slots[j].hi == k.hi && s->slots[j].lo == k.lo)
                        return 0;
                j = (j + 1) & s->mask;
        }
        s->slots[j] = k;
        s->n++;
        return 0;
}

int trackids_has(const struct trackids *s, const char *id)
{
        struct key k;
        if (parse_uuid(id, &k) != 0)
                return 0;
        size_t j = slot_of(&k, s->mask);
        while (s->slots[j].hi || s->slots[j].lo) {
                if (s->slots[j].hi == k.hi && s->slots[j].lo == k.lo)
                        return 1;
                j = (j + 1) & s->mask;
        }
        return 0;
}

size_t trackids_size(const struct trackids *s)
{
        return s->n;
}

void trackids_free(struct trackids *s)
{
        if (!s)
                return;
        free(s->slots);
        free(s);
}

/* ---- the loader ------------------------------------------------------- */

struct trackset {
        long refresh_s;
        struct qz_pg *pg; /* the loader thread's */
        pthread_t thread;
        pthread_mutex_t mu; /* guards stop, with cv */
        pthread_cond_t cv;
        bool stop;
        pthread_rwlock_t lock; /* guards set */
        struct trackids *set;
        struct qz_metric *m_size, *m_loaded_at, *m_failures;
};

static int load(struct trackset *c, char *errstr, size_t errstr_size)
{
        PGresult *r = qz_pg_query(c->pg, "SELECT id::text FROM tracks WHERE deleted_at IS NULL", 0,
                                  NULL, errstr, errstr_size);
        if (!r)
                return -1;
        int n = PQntuples(r);
        struct trackids *s = trackids_new((size_t)n);
        if (!s) {
                PQclear(r);
                snprintf(errstr, errstr_size, "out of memory for %d track ids", n);
                return -1;
        }
        for (int i = 0; i < n; i++)
                trackids_add(s, PQgetvalue(r, i, 0));
        PQclear(r);

        pthread_rwlock_wrlock(&c->lock);
        struct trackids *old = c->set;
        c->set = s;
        pthread_rwlock_unlock(&c->lock);
        trackids_free(old);
        qz_metric_set(c->m_size, (double)n);
        qz_metric_set(c->m_loaded_at, (double)time(NULL));
        return 0;
}

static void *loader_thread(void *arg)
{
        struct trackset *c = arg;
        bool failing = false;
        char err[512];
        pthread_mutex_lock(&c->mu);
        while (!c->stop) {
                pthread_mutex_unlock(&c->mu);
                if (load(c, err, sizeof(err)) != 0) {
                        qz_metric_inc(c->m_failures);
                        if (!failing) /* log the change of state, not every retry */
                                qz_warn("track catalog not refreshed (plays are still accepted; "
                                        "unknown-track counts use the last set): %s",
                                        err);
                        failing = true;
                } else if (failing) {
                        qz_info("track catalog refreshed again");
                        failing = false;
                }
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += c->refresh_s;
                pthread_mutex_lock(&c->mu);
                while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
                        ;
        }
        pthread_mutex_unlock(&c->mu);
        return NULL;
}

struct trackset *trackset_new(const struct trackset_config *cfg, struct qz_metrics *metrics,
                              char *errstr, size_t errstr_size)
{
        struct trackset *c = calloc(1, sizeof(*c));
        if (!c) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        /* Short timeouts: a dead Postgres must not hold shutdown for long. */
        struct qz_pg_opts po = {.dsn = cfg->pg_dsn,
                                .application_name = "play-ingestor catalog",
                                .statement_timeout_ms = 30000,
                                .connect_timeout_s = 2,
                                .backoff_min_ms = 1,
                                .backoff_max_ms = 1};
        c->pg = qz_pg_new(&po, errstr, errstr_size);
        if (!c->pg) {
                free(c);
                return NULL;
        }
        c->refresh_s = cfg->refresh_s;
        pthread_mutex_init(&c->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_rwlock_init(&c->lock, NULL);
        c->m_size = qz_metrics_gauge(metrics, "qz_ingest_catalog_tracks", NULL,
                                     "Track ids in the known-track set");
        c->m_loaded_at = qz_metrics_gauge(metrics, "qz_ingest_catalog_loaded_timestamp_seconds",
                                          NULL, "When the known-track set was last loaded");
        c->m_failures = qz_metrics_counter(metrics, "qz_ingest_catalog_load_failures_total", NULL,
                                           "Failed loads of the known-track set");
        if (pthread_create(&c->thread, NULL, loader_thread, c) != 0) {
                snprintf(errstr, errstr_size, "cannot start the catalog thread");
                qz_pg_free(c->pg);
                free(c);
                return NULL;
        }
        return c;
}

void trackset_free(struct trackset *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
        qz_pg_free(c->pg);
        trackids_free(c->set);
        pthread_rwlock_destroy(&c->lock);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
}

enum trackset_answer trackset_lookup(struct trackset *c, const char *track_id)
{
        enum trackset_answer a = TRACKSET_UNCHECKED;
        pthread_rwlock_rdlock(&c->lock);
        if (c->set)
                a = trackids_has(c->set, track_id) ? TRACKSET_KNOWN : TRACKSET_UNKNOWN;
        pthread_rwlock_unlock(&c->lock);
        return a;
}
