/* history.c - plays.v1 batches into play_history and user_listening_stats, idempotently, in one
 * transaction. */
#include "history.h"
#include "clock.h"
#include "counts.h"

#include "avro.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct history {
        struct qz_pg *pg;
        const struct qz_avro_schema *schema;
        const struct qz_avro_registry *avro;
        struct qz_metric *consumed, *persisted, *duplicates, *rejected, *failed, *seconds;
        struct qz_metric *unknown_tracks, *deduped;
};

struct history *history_new(struct qz_pg *pg, const struct qz_avro_registry *avro,
                            struct qz_metrics *m)
{
        struct history *h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        h->pg = pg;
        h->avro = avro;
        h->schema = qz_avro_schema_get(avro, "PlayEvent");
        h->consumed = qz_metrics_counter(m, "qz_stats_plays_consumed_total", NULL,
                                         "PlayEvents read from plays.v1");
        h->persisted = qz_metrics_counter(m, "qz_stats_plays_persisted_total", NULL,
                                          "New rows written to play_history");
        h->duplicates = qz_metrics_counter(m, "qz_stats_plays_duplicate_total", NULL,
                                           "Plays dropped because their event_id was stored");
        h->rejected = qz_metrics_counter(m, "qz_stats_plays_rejected_total", NULL,
                                         "Messages sent to the DLQ");
        h->failed = qz_metrics_counter(m, "qz_stats_batch_failures_total", NULL,
                                       "Batches that failed and will be retried");
        h->seconds = qz_metrics_histogram(m, "qz_stats_batch_seconds", NULL,
                                          "Time to make one batch durable", NULL, 0);
        h->unknown_tracks =
            qz_metrics_counter(m, "qz_stats_plays_unknown_track_total", NULL,
                               "New plays whose track_id is not (yet) in the catalog");
        h->deduped = qz_metrics_counter(
            m, "qz_stats_batches_deduped_total", NULL,
            "Batches that held a stored or repeated event_id and took the staging path");
        return h;
}

void history_free(struct history *h)
{
        free(h);
}

static int copy_uuid(const json_t *ev, const char *key, bool required, char *out, char *errstr,
                     size_t errstr_size)
{
        const char *s = NULL;
        int rc = qz_json_get_uuid(ev, key, required, &s, errstr, errstr_size);
        if (rc < 0)
                return -1;
        if (rc == 0)
                memcpy(out, s, QZ_UUID_STR_LEN + 1);
        return rc;
}

int history_row_from_event(const json_t *ev, struct history_row *row, char *errstr,
                           size_t errstr_size)
{
        int64_t played_at, duration;
        bool completed;
        memset(row, 0, sizeof(*row));
        if (copy_uuid(ev, "event_id", true, row->event_id, errstr, errstr_size) != 0 ||
            copy_uuid(ev, "user_id", true, row->user_id, errstr, errstr_size) != 0 ||
            copy_uuid(ev, "track_id", true, row->track_id, errstr, errstr_size) != 0 ||
            copy_uuid(ev, "source_playlist_id", false, row->playlist, errstr, errstr_size) < 0 ||
            qz_json_get_int(ev, "played_at", true, &played_at, errstr, errstr_size) != 0 ||
            qz_json_get_int(ev, "duration_played_ms", true, &duration, errstr, errstr_size) != 0 ||
            qz_json_get_bool(ev, "completed", true, &completed, errstr, errstr_size) != 0 ||
            qz_json_get_string(ev, "source", true, &row->source, errstr, errstr_size) != 0 ||
            qz_json_get_string(ev, "device_type", true, &row->device_type, errstr, errstr_size) !=
                0)
                return -1;
        /* Another producer may not have validated: keep what Postgres would refuse
         * out of the batch, or one bad play would stall the partition. */
        if (duration < 0 || duration > 2147483647) {
                snprintf(errstr, errstr_size, "field 'duration_played_ms' out of range");
                return -1;
        }
        if (qz_time_format(played_at, row->played_at, sizeof(row->played_at)) != 0) {
                snprintf(errstr, errstr_size, "field 'played_at' out of range");
                return -1;
        }
        snprintf(row->duration, sizeof(row->duration), "%lld", (long long)duration);
        row->played_ms = played_at;
        row->duration_ms = duration;
        row->completed = completed ? "t" : "f";
        const char *v[9] = {
            row->event_id,  row->user_id,     row->track_id,
            row->played_at, row->duration,    row->completed,
            row->source,    row->device_type, row->playlist[0] ? row->playlist : NULL};
        memcpy(row->values, v, sizeof(v));
        return 0;
}

/* Decodes msgs into rows; rejected messages are marked for the DLQ. */
static size_t decode_batch(struct history *h, const struct qz_kafka_msg *msgs, size_t n,
                           struct qz_kafka_batch *batch, struct history_row *rows, json_t **events)
{
        size_t nrows = 0;
        char err[256];
        for (size_t i = 0; i < n; i++) {
                const struct qz_avro_schema *s = NULL;
                json_t *ev = NULL;
                const char *why = NULL;
                if (qz_avro_decode_json(h->avro, msgs[i].value, msgs[i].value_len, &s, &ev, err,
                                        sizeof(err)) != 0) {
                        why = "undecodable";
                } else if (s != h->schema) {
                        snprintf(err, sizeof(err), "expected qoqnuz.PlayEvent, got %s",
                                 qz_avro_schema_name(s));
                        why = "wrong_schema";
                } else if (history_row_from_event(ev, &rows[nrows], err, sizeof(err)) != 0) {
                        why = "invalid";
                }
                if (why) {
                        const char *errs[] = {err};
                        qz_warn("plays.v1 partition %d offset %lld to the DLQ: %s: %s",
                                (int)msgs[i].partition, (long long)msgs[i].offset, why, err);
                        qz_kafka_batch_reject(batch, i, why, errs, 1);
                        qz_metric_inc(h->rejected);
                        json_decref(ev);
                        continue;
                }
                events[nrows++] = ev; /* rows point into ev: keep it alive */
        }
        return nrows;
}

int history_partitions_literal(const struct qz_kafka_msg *msgs, size_t n, char *out,
                               size_t out_size)
{
        /* 24 partitions in production; a bitmap of the first 1024 covers any test setup. */
        unsigned char seen[1024 / 8] = {0};
        size_t len = 0;
        int w = snprintf(out, out_size, "{");
        if (w < 0 || (size_t)w >= out_size)
                return -1;
        len = (size_t)w;
        for (size_t i = 0; i < n; i++) {
                int32_t p = msgs[i].partition;
                if (p < 0 || p >= 1024)
                        return -1;
                if (seen[p / 8] & (1u << (p % 8)))
                        continue;
                seen[p / 8] |= (unsigned char)(1u << (p % 8));
        }
        for (int p = 0; p < 1024; p++) {
                if (!(seen[p / 8] & (1u << (p % 8))))
                        continue;
                w = snprintf(out + len, out_size - len, "%s%d", len > 1 ? "," : "", p);
                if (w < 0 || (size_t)w >= out_size - len)
                        return -1;
                len += (size_t)w;
        }
        w = snprintf(out + len, out_size - len, "}");
        return w < 0 || (size_t)w >= out_size - len ? -1 : 0;
}

/* COPY of the rows into table (play_history or play_stage). 0 or -1; on -1 the COPY is over. */
static int copy_rows(struct qz_pg *pg, const char *table, const struct history_row *rows,
                     size_t nrows, char *err, size_t err_size)
{
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "COPY %s (event_id, user_id, track_id, played_at, duration_played_ms, "
                 "completed, source, device_type, source_playlist_id) FROM STDIN",
                 table);
        if (qz_pg_copy_begin(pg, sql, err, err_size) != 0)
                return -1;
        for (size_t i = 0; i < nrows; i++) {
                if (qz_pg_copy_row(pg, 9, rows[i].values, err, err_size) != 0) {
                        qz_pg_copy_abort(pg, "row failed");
                        return -1;
                }
        }
        return qz_pg_copy_end(pg, NULL, err, err_size);
}

/* COPY of the batch's sums into the two stage tables listening_stats_apply reads. */
static int copy_counts(struct qz_pg *pg, const struct counts *c, char *err, size_t err_size)
{
        char line[1024];
        if (qz_pg_copy_begin(pg, "COPY stats_stage_pairs (user_id, track_id, plays) FROM STDIN",
                             err, err_size) != 0)
                return -1;
        for (size_t i = 0; i < c->npairs; i++) {
                int w = snprintf(line, sizeof(line), "%s\t%s\t%lld\n", c->pairs[i].user_id,
                                 c->pairs[i].track_id, c->pairs[i].plays);
                if (qz_pg_copy_put(pg, line, (size_t)w, err, err_size) != 0) {
                        qz_pg_copy_abort(pg, "row failed");
                        return -1;
                }
        }
        if (qz_pg_copy_end(pg, NULL, err, err_size) != 0)
                return -1;
        /* user_play_totals' column order: user_id, plays, ms, h00..h23, d0..d6 */
        if (qz_pg_copy_begin(pg, "COPY stats_stage_users FROM STDIN", err, err_size) != 0)
                return -1;
        for (size_t i = 0; i < c->nusers; i++) {
                const struct counts_user *u = &c->users[i];
                int w = snprintf(line, sizeof(line), "%s\t%lld\t%lld", u->user_id, u->plays, u->ms);
                for (int k = 0; k < 24; k++)
                        w += snprintf(line + w, sizeof(line) - (size_t)w, "\t%lld", u->hour[k]);
                for (int k = 0; k < 7; k++)
                        w += snprintf(line + w, sizeof(line) - (size_t)w, "\t%lld", u->day[k]);
                line[w++] = '\n';
                if (qz_pg_copy_put(pg, line, (size_t)w, err, err_size) != 0) {
                        qz_pg_copy_abort(pg, "row failed");
                        return -1;
                }
        }
        return qz_pg_copy_end(pg, NULL, err, err_size);
}

/* The direct path inside the open transaction, after the savepoint: 1 stored, 0 the COPY
 * into play_history failed other than by a lost connection (the caller rolls back to the
 * savepoint and dedups), -1 error. */
static int store_direct(struct qz_pg *pg, struct history_row *rows, size_t nrows,
                        struct history_stored *out, char *err, size_t err_size)
{
        struct counts c;
        PGresult *res = NULL;
        if (copy_rows(pg, "play_history", rows, nrows, err, err_size) != 0)
                return qz_pg_sqlstate_is_connection(qz_pg_sqlstate(pg)) ? -1 : 0;
        if (counts_build(rows, nrows, &c, err, err_size) != 0)
                return -1;
        int rc = -1;
        if (copy_counts(pg, &c, err, err_size) != 0)
                goto done;
        /* not prepared: it reads the session's temp tables */
        res = qz_pg_query(pg, "SELECT unknown_tracks FROM listening_stats_apply()", 0, NULL, err,
                          err_size);
        if (!res)
                goto done;
        if (PQntuples(res) != 1) {
                snprintf(err, err_size, "listening_stats_apply returned %d rows", PQntuples(res));
                goto done;
        }
        out->inserted = (long)nrows;
        out->unknown = atol(PQgetvalue(res, 0, 0));
        rc = 1;
done:
        PQclear(res);
        counts_free(&c);
        return rc;
}

/* The staging path: every row through play_stage and ON CONFLICT (event_id) DO NOTHING. */
static int store_dedup(struct qz_pg *pg, struct history_row *rows, size_t nrows,
                       const char *partitions, struct history_stored *out, char *err,
                       size_t err_size)
{
        if (copy_rows(pg, "play_stage", rows, nrows, err, err_size) != 0)
                return -1;
        const char *params[1] = {partitions};
        PGresult *res = qz_pg_query(
            pg, "SELECT new_plays, unknown_tracks FROM listening_stats_ingest($1::int[])", 1,
            params, err, err_size);
        if (!res)
                return -1;
        if (PQntuples(res) != 1) {
                snprintf(err, err_size, "listening_stats_ingest returned %d rows", PQntuples(res));
                PQclear(res);
                return -1;
        }
        out->inserted = atol(PQgetvalue(res, 0, 0));
        out->unknown = atol(PQgetvalue(res, 0, 1));
        out->deduped = true;
        PQclear(res);
        return 0;
}

int history_store(struct qz_pg *pg, struct history_row *rows, size_t nrows, const char *partitions,
                  struct history_stored *out, char *err, size_t err_size)
{
        PGresult *res = NULL;
        memset(out, 0, sizeof(*out));
        if (qz_pg_begin(pg, err, err_size) != 0)
                return -1;
        /* Session-local tables: recreated after a reconnect, emptied at commit. */
        if (qz_pg_exec(pg,
                       "CREATE TEMP TABLE IF NOT EXISTS play_stage "
                       "(LIKE play_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
                       "CREATE TEMP TABLE IF NOT EXISTS stats_stage_pairs "
                       "(LIKE user_track_plays) ON COMMIT DELETE ROWS;"
                       "CREATE TEMP TABLE IF NOT EXISTS stats_stage_users "
                       "(LIKE user_play_totals) ON COMMIT DELETE ROWS",
                       err, err_size) != 0)
                goto fail_tx;
        /* The partition locks first, before any row is written: two owners of a partition
         * during a rebalance then never wait on each other's play_history rows while holding
         * their own (which would deadlock). */
        const char *params[1] = {partitions};
        res = qz_pg_query(pg,
                          "SELECT count(pg_advisory_xact_lock(20510, l)) "
                          "FROM (SELECT l FROM unnest($1::int[]) l ORDER BY l) p",
                          1, params, err, err_size);
        if (!res)
                goto fail_tx;
        PQclear(res);
        res = NULL;
        if (qz_pg_exec(pg, "SAVEPOINT direct", err, err_size) != 0)
                goto fail_tx;
        int direct = store_direct(pg, rows, nrows, out, err, err_size);
        if (direct < 0)
                goto fail_tx;
        if (direct == 0) {
                /* a play of the batch is stored already or repeated in it (redelivery) */
                qz_debug("direct COPY refused (%s): dedup path", err);
                if (qz_pg_exec(pg, "ROLLBACK TO SAVEPOINT direct", err, err_size) != 0 ||
                    store_dedup(pg, rows, nrows, partitions, out, err, err_size) != 0)
                        goto fail_tx;
        }
        if (qz_pg_commit(pg, err, err_size) != 0)
                return -1;
        return 0;
fail_tx:
        PQclear(res);
        qz_pg_rollback(pg, NULL, 0);
        return -1;
}

int history_batch_cb(void *opaque, const struct qz_kafka_msg *msgs, size_t n,
                     struct qz_kafka_batch *batch)
{
        struct history *h = opaque;
        struct history_row *rows = calloc(n, sizeof(*rows));
        json_t **events = calloc(n, sizeof(*events));
        int rc = -1;
        struct history_stored st = {0};
        char parts[4096], err[512];
        int64_t t0 = qz_clock_mono_ns();
        if (!rows || !events)
                goto done;
        size_t nrows = decode_batch(h, msgs, n, batch, rows, events);
        if (history_partitions_literal(msgs, n, parts, sizeof(parts)) != 0) {
                qz_error("partition number out of range in a plays batch");
                goto done;
        }
        if (nrows > 0 && history_store(h->pg, rows, nrows, parts, &st, err, sizeof(err)) != 0) {
                qz_warn("storing %zu plays failed, will retry: %s", nrows, err);
                qz_metric_inc(h->failed);
                goto done;
        }
        qz_metric_add(h->unknown_tracks, (double)st.unknown);
        qz_metric_add(h->consumed, (double)n);
        qz_metric_add(h->persisted, (double)st.inserted);
        qz_metric_add(h->duplicates, (double)((long)nrows - st.inserted));
        if (st.deduped)
                qz_metric_inc(h->deduped);
        qz_metric_observe(h->seconds, (double)(qz_clock_mono_ns() - t0) / 1e9);
        qz_debug("stored %ld new plays of %zu", st.inserted, n);
        rc = 0;
done:
        for (size_t i = 0; events && i < n; i++)
                json_decref(events[i]);
        free(events);
        free(rows);
        return rc;
}
