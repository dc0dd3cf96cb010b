/* pg.c - a Postgres connection that reconnects by itself (libpq wrapper; see pg.h). */
#include "pg.h"
#include "clock.h"

#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum pg_state { PG_STATE_INIT, PG_STATE_UP, PG_STATE_DOWN };

struct pg_stmt {
        char *name;
        char *sql;
};

struct qz_pg {
        char *dsn;
        char *app_name;
        long statement_timeout_ms;
        long connect_timeout_s;
        long backoff_min_ms, backoff_max_ms;

        PGconn *conn;
        enum pg_state state;
        atomic_bool ready;
        long backoff_ms;         /* delay after the next failed attempt */
        int64_t next_attempt_ms; /* monotonic; 0 = now */
        char last_conn_error[256];

        struct pg_stmt *stmts;
        size_t nstmts;
        char **channels;
        size_t nchannels;

        bool in_tx;   /* between qz_pg_begin and commit/rollback */
        bool tx_lost; /* the connection died inside that transaction */
        bool in_copy;

        char sqlstate[6];
        int error_position;

        char *rowbuf; /* qz_pg_copy_row's line buffer, reused */
        size_t rowcap;
};

/* libpq messages end in a newline and may span lines; errors here are one line. */
static void copy_line(char *dst, size_t dst_size, const char *src)
{
        if (!dst_size)
                return;
        size_t n = src ? strcspn(src, "\n") : 0;
        if (n >= dst_size)
                n = dst_size - 1;
        memcpy(dst, src ? src : "", n);
        dst[n] = '\0';
}

static void set_state_code(struct qz_pg *pg, const char *code)
{
        snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", code ? code : "");
}

static void clear_error(struct qz_pg *pg)
{
        pg->sqlstate[0] = '\0';
        pg->error_position = 0;
}

static void log_state(struct qz_pg *pg, enum pg_state to, const char *why)
{
        if (pg->state == to)
                return;
        if (to == PG_STATE_UP) {
                const char *host = pg->conn ? PQhost(pg->conn) : "";
                const char *port = pg->conn ? PQport(pg->conn) : "";
                const char *db = pg->conn ? PQdb(pg->conn) : "";
                qz_log_kv(QZ_LOG_INFO,
                          pg->state == PG_STATE_DOWN ? "postgres reconnected"
                                                     : "postgres connected",
                          "dependency", "postgres", "host", host ? host : "", "port",
                          port ? port : "", "database", db ? db : "", NULL);
        } else {
                qz_log_kv(QZ_LOG_WARN,
                          pg->state == PG_STATE_UP ? "postgres connection lost"
                                                   : "postgres unreachable, retrying with backoff",
                          "dependency", "postgres", "error", why ? why : "", NULL);
        }
        pg->state = to;
}

static void drop_conn(struct qz_pg *pg, const char *why)
{
        /* why may point into the PGconn: keep it before PQfinish. */
        copy_line(pg->last_conn_error, sizeof(pg->last_conn_error), why);
        if (pg->conn) {
                PQfinish(pg->conn);
                pg->conn = NULL;
        }
        if (pg->in_tx)
                pg->tx_lost = true;
        pg->in_copy = false;
        atomic_store(&pg->ready, false);
        log_state(pg, PG_STATE_DOWN, pg->last_conn_error);
}

/* Formats the error of res (or of the connection when res has none) into errstr, records the
 * SQLSTATE, and drops the connection if it is broken so the next call reconnects at once. */
static void fail_result(struct qz_pg *pg, const PGresult *res, char *errstr, size_t errstr_size)
{
        const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
        char msg[512];

        if (primary)
                copy_line(msg, sizeof(msg), primary);
        else if (res && PQresultErrorMessage(res)[0])
                copy_line(msg, sizeof(msg), PQresultErrorMessage(res));
        else if (pg->conn)
                copy_line(msg, sizeof(msg), PQerrorMessage(pg->conn));
        else
                copy_line(msg, sizeof(msg), "no connection");
        if (!msg[0] && res)
                snprintf(msg, sizeof(msg), "unexpected result %s",
                         PQresStatus(PQresultStatus(res)));

        bool broken = !pg->conn || PQstatus(pg->conn) == CONNECTION_BAD;
        if (!code || !*code)
                code = broken ? "08006" : "XX000";
        set_state_code(pg, code);
        pg->error_position = pos ? atoi(pos) : 0;

        char det[256] = "";
        if (detail)
                copy_line(det, sizeof(det), detail);
        if (det[0])
                snprintf(errstr, errstr_size, "postgres: %s: %s (SQLSTATE %s)", msg, det,
                         pg->sqlstate);
        else
                snprintf(errstr, errstr_size, "postgres: %s (SQLSTATE %s)", msg, pg->sqlstate);

        if (broken || qz_pg_sqlstate_is_connection(pg->sqlstate)) {
                drop_conn(pg, msg);
                pg->next_attempt_ms = 0; /* a lost connection is retried at once */
        }
}

/* A PGresult that is not what the caller needs: error out and free it. */
static int check_result(struct qz_pg *pg, PGresult *res, char *errstr, size_t errstr_size)
{
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
                return 0;
        fail_result(pg, res, errstr, errstr_size);
        PQclear(res);
        return -1;
}

static int session_exec(struct qz_pg *pg, const char *sql, char *errstr, size_t errstr_size)
{
        PGresult *res = PQexec(pg->conn, sql);
        if (check_result(pg, res, errstr, errstr_size) != 0)
                return -1;
        PQclear(res);
        return 0;
}

static int listen_now(struct qz_pg *pg, const char *channel, char *errstr, size_t errstr_size)
{
        char *ident = PQescapeIdentifier(pg->conn, channel, strlen(channel));
        if (!ident) {
                fail_result(pg, NULL, errstr, errstr_size);
                return -1;
        }
        size_t n = strlen(ident) + sizeof("LISTEN ");
        char *sql = malloc(n);
        int rc = -1;
        if (sql) {
                snprintf(sql, n, "LISTEN %s", ident);
                rc = session_exec(pg, sql, errstr, errstr_size);
        } else {
                snprintf(errstr, errstr_size, "postgres: out of memory");
        }
        free(sql);
        PQfreemem(ident);
        return rc;
}

/* Server notices (NOTICE, WARNING, and the FATAL of a terminated backend) go to our log
 * instead of libpq's default stderr printing. */
static void notice_receiver_cb(void *arg, const PGresult *res)
{
        (void)arg;
        const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        char msg[512];
        copy_line(msg, sizeof(msg), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        bool loud = sev && (strcmp(sev, "WARNING") == 0 || strcmp(sev, "FATAL") == 0 ||
                            strcmp(sev, "PANIC") == 0);
        qz_log_kv(loud ? QZ_LOG_WARN : QZ_LOG_DEBUG, "postgres notice", "dependency", "postgres",
                  "severity", sev ? sev : "", "sqlstate", code ? code : "", "message", msg, NULL);
}

/* Everything a fresh connection needs before the caller may use it. */
static int setup_session(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        PQsetNoticeReceiver(pg->conn, notice_receiver_cb, NULL);
        if (pg->statement_timeout_ms > 0) {
                char sql[64];
                snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", pg->statement_timeout_ms);
                if (session_exec(pg, sql, errstr, errstr_size) != 0)
                        return -1;
        }
        for (size_t i = 0; i < pg->nstmts; i++) {
                PGresult *res = PQprepare(pg->conn, pg->stmts[i].name, pg->stmts[i].sql, 0, NULL);
                if (check_result(pg, res, errstr, errstr_size) != 0) {
                        size_t len = strlen(errstr);
                        snprintf(errstr + len, errstr_size > len ? errstr_size - len : 0,
                                 " preparing %s", pg->stmts[i].name);
                        return -1;
                }
                PQclear(res);
        }
        for (size_t i = 0; i < pg->nchannels; i++)
                if (listen_now(pg, pg->channels[i], errstr, errstr_size) != 0)
                        return -1;
        return 0;
}

static void schedule_retry(struct qz_pg *pg)
{
        pg->next_attempt_ms = qz_clock_mono_ms() + pg->backoff_ms;
        pg->backoff_ms *= 2;
        if (pg->backoff_ms > pg->backoff_max_ms)
                pg->backoff_ms = pg->backoff_max_ms;
}

/* Connects if needed; honours the backoff; refuses to run into a lost transaction. */
static int ensure(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        if (pg->tx_lost) {
                set_state_code(pg, "08006");
                snprintf(errstr, errstr_size,
                         "postgres: connection lost inside a transaction; roll back first "
                         "(SQLSTATE 08006)");
                return -1;
        }
        if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
                return 0;
        if (pg->conn)
                drop_conn(pg, PQerrorMessage(pg->conn));

        int64_t now = qz_clock_mono_ms();
        if (now < pg->next_attempt_ms) {
                set_state_code(pg, "08001");
                snprintf(errstr, errstr_size,
                         "postgres: not connected: %s; next attempt in %lld ms (SQLSTATE 08001)",
                         pg->last_conn_error, (long long)(pg->next_attempt_ms - now));
                return -1;
        }

        char timeout[24];
        snprintf(timeout, sizeof(timeout), "%ld", pg->connect_timeout_s);
        /* dbname first: expanded as the DSN; the keywords after it override the DSN's. */
        const char *keys[8] = {"dbname",          "connect_timeout",     "keepalives",
                               "keepalives_idle", "keepalives_interval", "keepalives_count"};
        const char *vals[8] = {pg->dsn, timeout, "1", "30", "10", "3"};
        int n = 6;
        if (pg->app_name) {
                keys[n] = "application_name";
                vals[n++] = pg->app_name;
        }
        keys[n] = NULL;
        vals[n] = NULL;

        pg->conn = PQconnectdbParams(keys, vals, 1);
        if (!pg->conn || PQstatus(pg->conn) != CONNECTION_OK) {
                char msg[256];
                copy_line(msg, sizeof(msg), pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
                drop_conn(pg, msg);
                schedule_retry(pg);
                set_state_code(pg, "08001");
                snprintf(errstr, errstr_size, "postgres: could not connect: %s (SQLSTATE 08001)",
                         msg);
                return -1;
        }
        if (setup_session(pg, errstr, errstr_size) != 0) {
                drop_conn(pg, errstr);
                schedule_retry(pg);
                return -1;
        }
        pg->backoff_ms = pg->backoff_min_ms;
        pg->next_attempt_ms = 0;
        pg->last_conn_error[0] = '\0';
        atomic_store(&pg->ready, true);
        log_state(pg, PG_STATE_UP, NULL);
        return 0;
}

static char *dup_str(const char *s)
{
        return s ? strdup(s) : NULL;
}

struct qz_pg *qz_pg_new(const struct qz_pg_opts *opts, char *errstr, size_t errstr_size)
{
        struct qz_pg *pg = NULL;
        char *err = NULL;
        PQconninfoOption *parsed = NULL;

        if (!opts || !opts->dsn) {
                snprintf(errstr, errstr_size, "postgres: no DSN given");
                goto fail;
        }
        parsed = PQconninfoParse(opts->dsn, &err);
        if (!parsed) {
                char msg[256];
                copy_line(msg, sizeof(msg), err ? err : "out of memory");
                snprintf(errstr, errstr_size, "postgres: bad DSN: %s", msg);
                goto fail;
        }
        PQconninfoFree(parsed);
        parsed = NULL;

        pg = calloc(1, sizeof(*pg));
        if (!pg)
                goto oom;
        pg->dsn = dup_str(opts->dsn);
        pg->app_name = dup_str(opts->application_name);
        if (!pg->dsn || (opts->application_name && !pg->app_name))
                goto oom;
        pg->statement_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
        pg->connect_timeout_s = opts->connect_timeout_s > 0 ? opts->connect_timeout_s : 5;
        pg->backoff_min_ms = opts->backoff_min_ms > 0 ? opts->backoff_min_ms : 250;
        pg->backoff_max_ms = opts->backoff_max_ms > 0 ? opts->backoff_max_ms : 30000;
        if (pg->backoff_max_ms < pg->backoff_min_ms)
                pg->backoff_max_ms = pg->backoff_min_ms;
        pg->backoff_ms = pg->backoff_min_ms;
        pg->state = PG_STATE_INIT;
        atomic_init(&pg->ready, false);
        return pg;
oom:
        snprintf(errstr, errstr_size, "postgres: out of memory");
fail:
        PQfreemem(err);
        qz_pg_free(pg);
        return NULL;
}

void qz_pg_free(struct qz_pg *pg)
{
        if (!pg)
                return;
        if (pg->conn)
                PQfinish(pg->conn);
        for (size_t i = 0; i < pg->nstmts; i++) {
                free(pg->stmts[i].name);
                free(pg->stmts[i].sql);
        }
        free(pg->stmts);
        for (size_t i = 0; i < pg->nchannels; i++)
                free(pg->channels[i]);
        free(pg->channels);
        free(pg->rowbuf);
        free(pg->dsn);
        free(pg->app_name);
        free(pg);
}

int qz_pg_connect(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        if (ensure(pg, errstr, errstr_size) != 0)
                return -1;
        clear_error(pg);
        return 0;
}

int qz_pg_ping(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        if (pg->in_copy) /* the connection is busy streaming; it is alive */
                return 0;
        return qz_pg_exec(pg, "", errstr, errstr_size);
}

bool qz_pg_ready(const struct qz_pg *pg)
{
        return atomic_load(&pg->ready);
}

PGconn *qz_pg_conn(struct qz_pg *pg)
{
        return pg->conn;
}

const char *qz_pg_sqlstate(const struct qz_pg *pg)
{
        return pg->sqlstate;
}

int qz_pg_error_position(const struct qz_pg *pg)
{
        return pg->error_position;
}

bool qz_pg_sqlstate_is_connection(const char *s)
{
        if (!s)
                return false;
        return strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
               strcmp(s, "57P03") == 0;
}

int qz_pg_prepare(struct qz_pg *pg, const char *name, const char *sql, char *errstr,
                  size_t errstr_size)
{
        struct pg_stmt st = {NULL, NULL};

        for (size_t i = 0; i < pg->nstmts; i++) {
                if (strcmp(pg->stmts[i].name, name) == 0) {
                        snprintf(errstr, errstr_size, "postgres: statement %s is already prepared",
                                 name);
                        return -1;
                }
        }
        /* Prepare now when connected, so a bad statement is reported to the caller here
         * rather than as a failed reconnect later. */
        if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK && !pg->in_copy) {
                PGresult *res = PQprepare(pg->conn, name, sql, 0, NULL);
                if (check_result(pg, res, errstr, errstr_size) != 0)
                        return -1;
                PQclear(res);
        }
        st.name = strdup(name);
        st.sql = strdup(sql);
        struct pg_stmt *grown =
            st.name && st.sql ? realloc(pg->stmts, (pg->nstmts + 1) * sizeof(*grown)) : NULL;
        if (!grown)
                goto fail;
        pg->stmts = grown;
        pg->stmts[pg->nstmts++] = st;
        clear_error(pg);
        return 0;
fail:
        free(st.name);
        free(st.sql);
        snprintf(errstr, errstr_size, "postgres: out of memory");
        return -1;
}

static PGresult *finish_query(struct qz_pg *pg, PGresult *res, char *errstr, size_t errstr_size)
{
        if (check_result(pg, res, errstr, errstr_size) != 0)
                return NULL;
        clear_error(pg);
        return res;
}

static int not_in_copy(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        if (!pg->in_copy)
                return 0;
        set_state_code(pg, "55000");
        snprintf(errstr, errstr_size, "postgres: a COPY is in progress (SQLSTATE 55000)");
        return -1;
}

PGresult *qz_pg_query(struct qz_pg *pg, const char *sql, int nparams, const char *const *values,
                      char *errstr, size_t errstr_size)
{
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return NULL;
        PGresult *res = PQexecParams(pg->conn, sql, nparams, NULL, values, NULL, NULL, 0);
        return finish_query(pg, res, errstr, errstr_size);
}

PGresult *qz_pg_query_prepared(struct qz_pg *pg, const char *name, int nparams,
                               const char *const *values, char *errstr, size_t errstr_size)
{
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return NULL;
        PGresult *res = PQexecPrepared(pg->conn, name, nparams, values, NULL, NULL, 0);
        return finish_query(pg, res, errstr, errstr_size);
}

PGresult *qz_pg_query_prepared_fmt(struct qz_pg *pg, const char *name, int nparams,
                                   const char *const *values, const int *lengths,
                                   const int *formats, char *errstr, size_t errstr_size)
{
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return NULL;
        PGresult *res = PQexecPrepared(pg->conn, name, nparams, values, lengths, formats, 0);
        return finish_query(pg, res, errstr, errstr_size);
}

int qz_pg_exec(struct qz_pg *pg, const char *sql, char *errstr, size_t errstr_size)
{
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return -1;
        PGresult *res = PQexec(pg->conn, sql);
        if (!finish_query(pg, res, errstr, errstr_size))
                return -1;
        PQclear(res);
        return 0;
}

int qz_pg_exec_prepared(struct qz_pg *pg, const char *name, int nparams, const char *const *values,
                        long *affected, char *errstr, size_t errstr_size)
{
        PGresult *res = qz_pg_query_prepared(pg, name, nparams, values, errstr, errstr_size);
        if (!res)
                return -1;
        if (affected)
                *affected = atol(PQcmdTuples(res));
        PQclear(res);
        return 0;
}

int qz_pg_begin(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        if (pg->in_tx) {
                set_state_code(pg, "25001");
                snprintf(errstr, errstr_size,
                         "postgres: a transaction is already open (SQLSTATE 25001)");
                return -1;
        }
        if (qz_pg_exec(pg, "BEGIN", errstr, errstr_size) != 0)
                return -1;
        pg->in_tx = true;
        return 0;
}

int qz_pg_commit(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        int rc = -1;
        if (!pg->in_tx) {
                set_state_code(pg, "25P01");
                snprintf(errstr, errstr_size,
                         "postgres: no transaction to commit (SQLSTATE 25P01)");
                return -1;
        }
        if (pg->tx_lost || !pg->conn) {
                set_state_code(pg, "08006");
                snprintf(errstr, errstr_size,
                         "postgres: connection lost inside the transaction; nothing was committed "
                         "(SQLSTATE 08006)");
        } else {
                PGresult *res = PQexec(pg->conn, "COMMIT");
                if (finish_query(pg, res, errstr, errstr_size)) {
                        /* COMMIT of an aborted transaction answers ROLLBACK, not an error. */
                        if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
                                set_state_code(pg, "40000");
                                snprintf(errstr, errstr_size,
                                         "postgres: transaction was aborted by an earlier error "
                                         "and rolled back (SQLSTATE 40000)");
                        } else {
                                rc = 0;
                        }
                        PQclear(res);
                }
        }
        pg->in_tx = false;
        pg->tx_lost = false;
        return rc;
}

int qz_pg_rollback(struct qz_pg *pg, char *errstr, size_t errstr_size)
{
        /* Also covers a transaction opened with raw "BEGIN" text. */
        PGTransactionStatusType ts = pg->conn ? PQtransactionStatus(pg->conn) : PQTRANS_UNKNOWN;
        bool had_conn = !pg->tx_lost && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR);
        pg->in_tx = false;
        pg->tx_lost = false;
        if (!had_conn) {
                clear_error(pg);
                return 0;
        }
        PGresult *res = PQexec(pg->conn, "ROLLBACK");
        if (!finish_query(pg, res, errstr, errstr_size)) {
                /* A connection that died during the rollback took the work with it. */
                return qz_pg_sqlstate_is_connection(pg->sqlstate) ? 0 : -1;
        }
        PQclear(res);
        return 0;
}

int qz_pg_copy_begin(struct qz_pg *pg, const char *copy_sql, char *errstr, size_t errstr_size)
{
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return -1;
        PGresult *res = PQexec(pg->conn, copy_sql);
        if (PQresultStatus(res) != PGRES_COPY_IN) {
                if (PQresultStatus(res) == PGRES_COMMAND_OK ||
                    PQresultStatus(res) == PGRES_TUPLES_OK) {
                        set_state_code(pg, "42601");
                        snprintf(errstr, errstr_size,
                                 "postgres: not a COPY … FROM STDIN statement (SQLSTATE 42601)");
                        PQclear(res);
                        return -1;
                }
                fail_result(pg, res, errstr, errstr_size);
                PQclear(res);
                return -1;
        }
        PQclear(res);
        pg->in_copy = true;
        clear_error(pg);
        return 0;
}

int qz_pg_copy_put(struct qz_pg *pg, const char *data, size_t len, char *errstr, size_t errstr_size)
{
        if (!pg->in_copy || !pg->conn) {
                set_state_code(pg, pg->conn ? "55000" : "08006");
                snprintf(errstr, errstr_size, "postgres: no COPY in progress (SQLSTATE %s)",
                         pg->sqlstate);
                return -1;
        }
        /* PQputCopyData takes an int length; feed big buffers in slices. */
        while (len > 0) {
                int n = len > (1u << 30) ? (1 << 30) : (int)len;
                if (PQputCopyData(pg->conn, data, n) != 1) {
                        fail_result(pg, NULL, errstr, errstr_size);
                        return -1;
                }
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

size_t qz_pg_copy_escape(char *out, size_t out_size, const char *in, size_t in_len)
{
        size_t need = 0;
        for (size_t i = 0; i < in_len; i++) {
                char esc = 0;
                switch (in[i]) {
                case '\\':
                        esc = '\\';
                        break;
                case '\t':
                        esc = 't';
                        break;
                case '\n':
                        esc = 'n';
                        break;
                case '\r':
                        esc = 'r';
                        break;
                case '\b':
                        esc = 'b';
                        break;
                case '\f':
                        esc = 'f';
                        break;
                case '\v':
                        esc = 'v';
                        break;
                default:
                        break;
                }
                if (esc) {
                        if (need + 2 < out_size) {
                                out[need] = '\\';
                                out[need + 1] = esc;
                        }
                        need += 2;
                } else {
                        if (need + 1 < out_size)
                                out[need] = in[i];
                        need++;
                }
        }
        if (out_size)
                out[need < out_size ? need : out_size - 1] = '\0';
        /* An escape pair cut by the end of out leaves one stray byte before the NUL when
         * truncating; callers size out from the return value, as with snprintf. */
        return need;
}

static int grow_rowbuf(struct qz_pg *pg, size_t need)
{
        if (need <= pg->rowcap)
                return 0;
        size_t cap = pg->rowcap ? pg->rowcap : 256;
        while (cap < need)
                cap *= 2;
        char *p = realloc(pg->rowbuf, cap);
        if (!p)
                return -1;
        pg->rowbuf = p;
        pg->rowcap = cap;
        return 0;
}

int qz_pg_copy_row(struct qz_pg *pg, int ncols, const char *const *values, char *errstr,
                   size_t errstr_size)
{
        size_t len = 0;
        for (int c = 0; c < ncols; c++) {
                const char *v = values[c];
                size_t need = v ? qz_pg_copy_escape(NULL, 0, v, strlen(v)) : 2;
                if (grow_rowbuf(pg, len + need + 2) != 0) { /* + separator/newline, NUL */
                        snprintf(errstr, errstr_size, "postgres: out of memory");
                        return -1;
                }
                if (v)
                        qz_pg_copy_escape(pg->rowbuf + len, need + 1, v, strlen(v));
                else
                        memcpy(pg->rowbuf + len, "\\N", 2);
                len += need;
                pg->rowbuf[len++] = c + 1 < ncols ? '\t' : '\n';
        }
        if (ncols == 0) {
                if (grow_rowbuf(pg, 1) != 0) {
                        snprintf(errstr, errstr_size, "postgres: out of memory");
                        return -1;
                }
                pg->rowbuf[len++] = '\n';
        }
        return qz_pg_copy_put(pg, pg->rowbuf, len, errstr, errstr_size);
}

/* Reads every result left after a COPY; the first error wins. */
static int drain_copy(struct qz_pg *pg, long *rows, char *errstr, size_t errstr_size)
{
        PGresult *res;
        int rc = 0;
        bool seen = false;
        while (pg->conn && (res = PQgetResult(pg->conn)) != NULL) {
                if (!seen && rc == 0) {
                        seen = true;
                        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                                if (rows)
                                        *rows = atol(PQcmdTuples(res));
                        } else {
                                fail_result(pg, res, errstr, errstr_size);
                                rc = -1;
                        }
                }
                PQclear(res);
        }
        if (!seen && rc == 0) {
                fail_result(pg, NULL, errstr, errstr_size);
                rc = -1;
        }
        return rc;
}

int qz_pg_copy_end(struct qz_pg *pg, long *rows, char *errstr, size_t errstr_size)
{
        if (!pg->in_copy || !pg->conn) {
                set_state_code(pg, pg->conn ? "55000" : "08006");
                snprintf(errstr, errstr_size, "postgres: no COPY in progress (SQLSTATE %s)",
                         pg->sqlstate);
                return -1;
        }
        pg->in_copy = false;
        if (PQputCopyEnd(pg->conn, NULL) != 1) {
                fail_result(pg, NULL, errstr, errstr_size);
                return -1;
        }
        if (drain_copy(pg, rows, errstr, errstr_size) != 0)
                return -1;
        clear_error(pg);
        return 0;
}

void qz_pg_copy_abort(struct qz_pg *pg, const char *reason)
{
        char ignore[256];
        if (!pg->in_copy || !pg->conn) {
                pg->in_copy = false;
                return;
        }
        pg->in_copy = false;
        if (PQputCopyEnd(pg->conn, reason ? reason : "aborted by client") == 1)
                drain_copy(pg, NULL, ignore, sizeof(ignore)); /* the expected error */
}

int qz_pg_listen(struct qz_pg *pg, const char *channel, char *errstr, size_t errstr_size)
{
        char *copy = strdup(channel);
        char **grown = copy ? realloc(pg->channels, (pg->nchannels + 1) * sizeof(*grown)) : NULL;
        if (!grown) {
                free(copy);
                snprintf(errstr, errstr_size, "postgres: out of memory");
                return -1;
        }
        pg->channels = grown;
        pg->channels[pg->nchannels++] = copy;
        /* Registered first: if Postgres is down now, the next connect listens. */
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return -1;
        if (listen_now(pg, channel, errstr, errstr_size) != 0)
                return -1;
        clear_error(pg);
        return 0;
}

int qz_pg_notify_wait(struct qz_pg *pg, int timeout_ms, PGnotify **out, char *errstr,
                      size_t errstr_size)
{
        *out = NULL;
        if (not_in_copy(pg, errstr, errstr_size) != 0 || ensure(pg, errstr, errstr_size) != 0)
                return -1;
        int64_t deadline = qz_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
        for (;;) {
                if (!PQconsumeInput(pg->conn)) {
                        fail_result(pg, NULL, errstr, errstr_size);
                        return -1;
                }
                PGnotify *n = PQnotifies(pg->conn);
                if (n) {
                        *out = n;
                        clear_error(pg);
                        return 1;
                }
                int64_t left = deadline - qz_clock_mono_ms();
                if (left <= 0)
                        return 0;
                struct pollfd pfd = {.fd = PQsocket(pg->conn), .events = POLLIN};
                int r = poll(&pfd, 1, (int)left);
                if (r < 0 && errno != EINTR) {
                        set_state_code(pg, "58000");
                        snprintf(errstr, errstr_size, "postgres: poll: %s (SQLSTATE 58000)",
                                 strerror(errno));
                        return -1;
                }
                if (r < 0) /* EINTR: let the caller look at its stop flag */
                        return 0;
        }
}
