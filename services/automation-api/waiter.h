/* waiter.h - waits for the playlist-builder's pg_notify('playlist_ready', …) by request_id.
 *
 * One thread LISTENs on channel playlist_ready with its own connection and
 * hands each notification ({"request_id", "status": "ok"|"error", "error"})
 * to the request waiting for that id. A request registers *before* it
 * publishes its PlaylistRequest, so an answer cannot arrive unseen.
 * Notifications for ids nobody here waits for (another replica's) are
 * dropped. If the connection drops, notifications sent meanwhile are lost and
 * the waiters time out (504); the request itself still completes.
 * Thread-safe. */
#ifndef API_WAITER_H
#define API_WAITER_H

#include "pg.h"

#include <stdbool.h>
#include <stddef.h>

struct waiter;
struct waiter_entry;

struct waiter *waiter_start(const struct qz_pg_opts *pg_opts, char *errstr, size_t errstr_size);
void waiter_stop(struct waiter *w);
/* The LISTEN connection is up (a POST would be answered 503 otherwise). */
bool waiter_ready(struct waiter *w);

struct waiter_entry *waiter_register(struct waiter *w, const char *request_id);
/* Waits up to timeout_ms. Returns 1 with *ok and error (the builder's message,
 * copied into error[0..error_size)) filled, or 0 on timeout. Then unregisters
 * and frees the entry. */
int waiter_wait(struct waiter *w, struct waiter_entry *e, long timeout_ms, bool *ok, char *error,
                size_t error_size);
/* Unregisters without waiting (the publish failed). */
void waiter_cancel(struct waiter *w, struct waiter_entry *e);

#endif
