/* trackset.h - the set of known track ids, to count plays of tracks the catalog lacks.
 *
 * A play of an unknown track_id is accepted (the catalog may lag behind the
 * player, and a play may arrive before its track row); it is only counted. The
 * set is loaded from Postgres (`tracks` rows not deleted) by a background
 * thread at start and reloaded every refresh interval. Postgres being down
 * never touches the request path: lookups keep using the last set loaded
 * (or, before the first load, report "unchecked"), and the thread retries at
 * the next interval. So an outage only makes the metric less accurate.
 *
 * Threads: trackset_lookup() from any thread (a read lock around one hash
 * probe); the loader thread is the only user of its Postgres handle.
 * Ownership: trackset_new() copies the DSN; the metrics registry is borrowed. */
#ifndef TRACKSET_H
#define TRACKSET_H

#include <stddef.h>

struct qz_metrics;
struct trackset;

enum trackset_answer { TRACKSET_UNCHECKED = -1, TRACKSET_UNKNOWN = 0, TRACKSET_KNOWN = 1 };

struct trackset_config {
        const char *pg_dsn;
        long refresh_s; /* reload interval */
};

/* Creates the catalog and starts its loader thread (which loads at once).
 * NULL with errstr on a malformed DSN or when the thread cannot start. */
struct trackset *trackset_new(const struct trackset_config *cfg, struct qz_metrics *metrics,
                              char *errstr, size_t errstr_size);
/* Stops the loader (waits for a load in progress, bounded by the connect and
 * statement timeouts) and frees. NULL is a no-op. */
void trackset_free(struct trackset *c);
/* Is this track id (a UUID string, either case) in the last set loaded? */
enum trackset_answer trackset_lookup(struct trackset *c, const char *track_id);

/* The set itself, exposed for unit tests: open addressing over 128-bit ids. */
struct trackids;
struct trackids *trackids_new(size_t expected);
/* 0, or -1 when id is not a UUID. */
int trackids_add(struct trackids *s, const char *id);
int trackids_has(const struct trackids *s, const char *id);
size_t trackids_size(const struct trackids *s);
void trackids_free(struct trackids *s);

#endif
