/* pg.h - a Postgres connection that reconnects by itself, with prepared statements, transactions,
 * COPY and LISTEN helpers over libpq.
 *
 * A struct qz_pg is created unconnected and connects on first use. When Postgres is unreachable
 * that is not a configuration error: the call fails with a connection SQLSTATE (class 08), the
 * state change is logged once by name ("postgres unreachable" / "postgres connected"),
 * qz_pg_ready() reports false, and later calls retry with exponential backoff (until the next
 * attempt is due, calls fail at once without touching the network). A connection lost mid-use is
 * retried on the very next call. Statements registered with qz_pg_prepare() and channels
 * registered with qz_pg_listen() are prepared / listened again on every new connection.
 *
 * Errors: every function that can fail returns 0/-1 (or NULL) and writes a one-line message
 * "postgres: <message> (SQLSTATE xxxxx)" into errstr; qz_pg_sqlstate() returns the code of the
 * last failure so a caller can tell a lost connection (qz_pg_sqlstate_is_connection) from a
 * constraint violation (23xxx) and decide whether to retry. Nothing is retried automatically:
 * after a connection error the unit of work may or may not have been applied, so the caller
 * (who knows whether it is idempotent) repeats it.
 *
 * Transactions: use qz_pg_begin/commit/rollback, not raw "BEGIN" text. If the connection is lost
 * inside a transaction, every call except qz_pg_rollback fails (SQLSTATE 08006) until the caller
 * rolls back, so the rest of a half-lost transaction never runs in autocommit.
 *
 * Ownership: a PGresult returned by qz_pg_query* belongs to the caller, who frees it with
 * PQclear(). A PGnotify from qz_pg_notify_wait is freed with PQfreemem(). qz_pg copies every
 * string it is given (opts, statement text, channel names). qz_pg_conn() lends the raw PGconn;
 * it stays owned by qz_pg and is invalid after any later qz_pg call that reconnects.
 *
 * Threads: one struct qz_pg per thread. Only qz_pg_ready() may be called from another thread
 * (e.g. the HTTP thread answering /readyz); it reads a flag the owning thread keeps current. Call
 * qz_pg_ping() from the owning loop when idle so a dead connection is noticed and replaced. */
#ifndef QZ_PG_H
#define QZ_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct qz_pg;

struct qz_pg_opts {
        const char *dsn;              /* libpq URI or key=value string; required */
        const char *application_name; /* shown in pg_stat_activity; NULL keeps the DSN's */
        long statement_timeout_ms;    /* 0: server default */
        long connect_timeout_s;       /* 0: 5 */
        long backoff_min_ms;          /* first retry delay after a failed connect; 0: 250 */
        long backoff_max_ms;          /* delay doubles up to this; 0: 30000 */
};

/* Creates an unconnected handle. Fails (NULL, errstr) only on a malformed DSN or out of memory:
 * both are configuration errors. */
struct qz_pg *qz_pg_new(const struct qz_pg_opts *opts, char *errstr, size_t errstr_size);
/* Closes the connection and frees everything; NULL is fine. */
void qz_pg_free(struct qz_pg *pg);

/* Makes sure a connection is up (connecting now if the backoff allows). 0 or -1. */
int qz_pg_connect(struct qz_pg *pg, char *errstr, size_t errstr_size);
/* qz_pg_connect plus one round trip: notices a connection that died while idle. 0 or -1. */
int qz_pg_ping(struct qz_pg *pg, char *errstr, size_t errstr_size);
/* True while connected and the last use succeeded at the connection level. Any thread. */
bool qz_pg_ready(const struct qz_pg *pg);
/* The raw connection (NULL when down), lent: see Ownership above. */
PGconn *qz_pg_conn(struct qz_pg *pg);

/* SQLSTATE of the last failure ("" after a success). Connection failures without a server
 * code report "08001" (could not connect) or "08006" (connection lost). */
const char *qz_pg_sqlstate(const struct qz_pg *pg);
/* 1-based character position in the statement text of the last error, 0 when unknown. */
int qz_pg_error_position(const struct qz_pg *pg);
/* True for codes meaning "the connection is gone" (class 08, 57P01-57P03): retry later. */
bool qz_pg_sqlstate_is_connection(const char *sqlstate);

/* Registers a named prepared statement (parameter types inferred or cast in the SQL: $1::uuid)
 * and prepares it now when connected; it is prepared again after every reconnect. A name
 * already registered fails. */
int qz_pg_prepare(struct qz_pg *pg, const char *name, const char *sql, char *errstr,
                  size_t errstr_size);

/* One statement with text parameters (values[i] NULL = SQL NULL), text results. Returns a
 * PGRES_TUPLES_OK or PGRES_COMMAND_OK result (caller PQclear()s it), or NULL with errstr. */
PGresult *qz_pg_query(struct qz_pg *pg, const char *sql, int nparams, const char *const *values,
                      char *errstr, size_t errstr_size);
/* The same with a statement registered by qz_pg_prepare. */
PGresult *qz_pg_query_prepared(struct qz_pg *pg, const char *name, int nparams,
                               const char *const *values, char *errstr, size_t errstr_size);
/* The same with per-parameter formats (formats[i] 1 = binary, lengths[i] its byte length;
 * formats NULL = all text): for large arrays whose text form would cost the server a parse per
 * element. Text results. */
PGresult *qz_pg_query_prepared_fmt(struct qz_pg *pg, const char *name, int nparams,
                                   const char *const *values, const int *lengths,
                                   const int *formats, char *errstr, size_t errstr_size);
/* Runs sql (may hold several statements; no parameters) and discards the results. 0 or -1. */
int qz_pg_exec(struct qz_pg *pg, const char *sql, char *errstr, size_t errstr_size);
/* A prepared statement whose result is not needed; *affected (may be NULL) gets the row
 * count of INSERT/UPDATE/DELETE. 0 or -1. */
int qz_pg_exec_prepared(struct qz_pg *pg, const char *name, int nparams, const char *const *values,
                        long *affected, char *errstr, size_t errstr_size);

/* Transactions. begin connects if needed. A failed commit ends the transaction too.
 * rollback on a lost connection succeeds (the server already discarded the work). */
int qz_pg_begin(struct qz_pg *pg, char *errstr, size_t errstr_size);
int qz_pg_commit(struct qz_pg *pg, char *errstr, size_t errstr_size);
int qz_pg_rollback(struct qz_pg *pg, char *errstr, size_t errstr_size);

/* COPY … FROM STDIN in text format: begin with the COPY statement, then put rows, then end
 * (which reports the rows stored in *rows, may be NULL). After a failed put, call
 * qz_pg_copy_abort, which is also how to give up (nothing is stored). */
int qz_pg_copy_begin(struct qz_pg *pg, const char *copy_sql, char *errstr, size_t errstr_size);
/* Raw, already-formatted data (any number of whole or partial lines). */
int qz_pg_copy_put(struct qz_pg *pg, const char *data, size_t len, char *errstr,
                   size_t errstr_size);
/* One row of ncols values, escaped here; a NULL value is SQL NULL. */
int qz_pg_copy_row(struct qz_pg *pg, int ncols, const char *const *values, char *errstr,
                   size_t errstr_size);
int qz_pg_copy_end(struct qz_pg *pg, long *rows, char *errstr, size_t errstr_size);
void qz_pg_copy_abort(struct qz_pg *pg, const char *reason);
/* Escapes in[0..in_len) for a COPY text-format field (backslash, tab, newline, CR, \b \f \v)
 * into out, NUL-terminated, truncated to out_size like snprintf. Returns the length the whole
 * escaped value needs (without the NUL). */
size_t qz_pg_copy_escape(char *out, size_t out_size, const char *in, size_t in_len);

/* LISTEN on channel now and after every reconnect. */
int qz_pg_listen(struct qz_pg *pg, const char *channel, char *errstr, size_t errstr_size);
/* Waits up to timeout_ms for a notification on the listened channels. Returns 1 with *out
 * (PQfreemem it), 0 on timeout, -1 on error (connection lost: LISTENs are restored on
 * reconnect, but notifications sent meanwhile are lost, so re-check state after an error). */
int qz_pg_notify_wait(struct qz_pg *pg, int timeout_ms, PGnotify **out, char *errstr,
                      size_t errstr_size);

#endif
