/* catalog.h - the in-memory track catalog (id -> title, artist, album, duration, genres).
 *
 * Loaded from Postgres (tracks joined with artists and albums) at start and kept current by
 * qz_catalog_refresh, which reads only rows whose updated_at moved past the newest one seen
 * (the tracks row is the outbox of tracks.v1, so it is the same change feed, read at its
 * source). A soft-deleted track is removed. Unknown ids are simply absent.
 *
 * Not thread-safe: one thread owns a catalog. Entries returned by qz_catalog_get are borrowed
 * and valid until the next refresh. */
#ifndef QZ_CATALOG_H
#define QZ_CATALOG_H

#include <stddef.h>

struct qz_pg;
struct qz_catalog;

struct qz_catalog_track {
        char id[37];
        char *title;
        char artist_id[37];
        char *artist_name;
        char album_id[37]; /* "" when none */
        char *album_title; /* "" when none */
        long duration_ms;
        char **genres;
        size_t ngenres;
};

struct qz_catalog *qz_catalog_new(void);
void qz_catalog_free(struct qz_catalog *c);
/* Reads tracks changed since the last refresh (everything the first time). 0 or -1 (errstr;
 * the catalog keeps what it had). *changed (may be NULL) gets the number of rows read. */
int qz_catalog_refresh(struct qz_catalog *c, struct qz_pg *pg, long *changed, char *errstr,
                       size_t errstr_size);
/* id: canonical lowercase UUID text. NULL when unknown. */
const struct qz_catalog_track *qz_catalog_get(const struct qz_catalog *c, const char *id);
size_t qz_catalog_size(const struct qz_catalog *c);

#endif
