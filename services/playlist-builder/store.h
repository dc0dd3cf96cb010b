/* store.h - one request's outcome, durably: the playlist (or the failure), its generation, the
 * run's progress and the playlist_ready notification, all in one transaction (one request's, or
 * a whole batch's).
 *
 * Idempotent by request_id (playlist_requests_done): a redelivered request changes nothing and
 * reports what was stored the first time, so a fan-out run counts each request once and the
 * caller can republish its PlaylistGenerated.
 *
 * Ownership: borrows the Postgres handle (one thread). */
#ifndef PL_STORE_H
#define PL_STORE_H

#include "gen.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;

struct pl_store_outcome {
        bool duplicate; /* the request was handled before: fields below are from then */
        bool ok;        /* a playlist was stored (else a failure was recorded) */
        char playlist_id[37];
        int track_count;
        int64_t generated_ms, expires_ms;
        char sqlstate[8]; /* of a failure, kept across the rollback */
        bool counted;     /* first stored now for a run: the run's progress counts it once */
};

/* Prepares the statements (again after reconnects). 0 or -1. */
int pl_store_prepare(struct qz_pg *pg, char *errstr, size_t errstr_size);

/* pl != NULL: store the playlist; else record the failure `error`. 0, or -1 (errstr; the
 * transaction was rolled back; qz_pg_sqlstate tells a lost connection). */
int pl_store_result(struct qz_pg *pg, const struct pl_request *rq, const struct pl_playlist *pl,
                    const char *error, struct pl_store_outcome *out, char *errstr,
                    size_t errstr_size);

/* The same for n requests (a consumer batch) inside the caller's open transaction, without the
 * run's progress (the caller adds 1 per outs[i].counted to the run just before committing, so the
 * run's row is locked only for the commit and instances do not queue on it), with one statement
 * per round (a round holds no request_id and no (user, type) twice; almost always one round):
 * pls[i] NULL = record the failure errors[i]. 0, or -1 (errstr, sqlstate: the transaction is
 * aborted and the caller rolls it back; no outcome is valid). */
int pl_store_batch(struct qz_pg *pg, const struct pl_request *const *rqs,
                   const struct pl_playlist *const *pls, const char *const *errors, size_t n,
                   struct pl_store_outcome *outs, char sqlstate[8], char *errstr,
                   size_t errstr_size);

/* Makes s text Postgres and JSON accept, in place and never longer: a UTF-8 sequence cut at the
 * end (snprintf into a fixed buffer cuts by bytes, and errors repeat the request's values) is
 * dropped, any other invalid byte becomes '?'. Returns s. */
char *pl_store_text_fix(char *s);

/* "{id,id,...}" for a uuid[] parameter; malloc'd, caller frees. */
char *pl_store_ids_literal(const struct pl_cand *items, size_t n);

#endif
