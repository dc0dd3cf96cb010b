/* outbox.c - tracks rows with published_at NULL onto tracks.v1 as TrackEvents, marked after the
 * ack. */
#include "outbox.h"
#include "prodref.h"

#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH       500
#define ACK_WAIT_MS 15000

struct outbox {
        pthread_t thread;
        atomic_bool stop;
        struct qz_pg *pg;
        const char *topic;
        long sweep_ms;
        struct prodref *producer; /* borrowed; taken per sweep */
        const struct qz_avro_registry *avro;
        struct qz_metric *published, *errors;
};

/* Columns: the TrackEvent as JSON (built by Postgres), track id. */
static const char *claim_sql =
    "SELECT json_build_object("
    " 'op', CASE WHEN t.deleted_at IS NULL THEN 'upsert' ELSE 'delete' END,"
    " 'track_id', t.id, 'title', t.title, 'artist_id', t.artist_id, 'artist_name', ar.name,"
    " 'album_id', t.album_id, 'album_title', al.title, 'duration_ms', t.duration_ms,"
    " 'genres', to_json(t.genres), 'popularity', t.popularity,"
    " 'released_at', to_char(t.released_at, 'YYYY-MM-DD'), 'audio_url', t.audio_url,"
    " 'updated_at', (extract(epoch FROM coalesce(t.deleted_at, t.updated_at)) * 1000)::bigint"
    ")::text, t.id "
    "FROM tracks t JOIN artists ar ON ar.id = t.artist_id "
    "LEFT JOIN albums al ON al.id = t.album_id "
    "WHERE t.published_at IS NULL ORDER BY t.updated_at LIMIT 500 FOR UPDATE OF t SKIP LOCKED";

static int sweep_batch(struct qz_pg *pg, const char *topic, struct qz_kafka_producer *producer,
                       const struct qz_avro_schema *schema, int *claimed, long *acked, char *errstr,
                       size_t errstr_size)
{
        PGresult *res = NULL, *upd = NULL;
        struct qz_kafka_record *recs = NULL;
        unsigned char **bufs = NULL;
        char *ids = NULL;
        int n = 0, rc = -1;
        char e2[128];
        *claimed = 0;
        *acked = 0;
        if (qz_pg_begin(pg, errstr, errstr_size) != 0)
                return -1;
        if (!(res = qz_pg_query(pg, claim_sql, 0, NULL, errstr, errstr_size)))
                goto fail;
        n = PQntuples(res);
        *claimed = n;
        if (n == 0) {
                rc = 0;
                goto fail; /* nothing to publish: just end the transaction */
        }
        recs = calloc((size_t)n, sizeof(*recs));
        bufs = calloc((size_t)n, sizeof(*bufs));
        ids = malloc((size_t)n * (QZ_UUID_STR_LEN + 1) + 3);
        if (!recs || !bufs || !ids) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        for (int i = 0; i < n; i++) {
                char jerr[256];
                size_t len;
                json_t *ev = qz_json_parse_object(
                    PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0), jerr, sizeof(jerr));
                if (!ev ||
                    qz_avro_encode_json(schema, ev, &bufs[i], &len, jerr, sizeof(jerr)) != 0) {
                        json_decref(ev);
                        snprintf(errstr, errstr_size, "track %s: cannot encode: %s",
                                 PQgetvalue(res, i, 1), jerr);
                        goto fail;
                }
                json_decref(ev);
                const char *id = PQgetvalue(res, i, 1);
                recs[i] = (struct qz_kafka_record){.topic = topic,
                                                   .partition = QZ_KAFKA_PARTITION_ANY,
                                                   .key = id,
                                                   .key_len = strlen(id),
                                                   .value = bufs[i],
                                                   .value_len = len};
        }
        enum qz_kafka_status st =
            qz_kafka_produce_wait(producer, recs, (size_t)n, ACK_WAIT_MS, errstr, errstr_size);
        /* Mark exactly the acknowledged ones; the others stay NULL for the next sweep. */
        char *p = ids;
        *p++ = '{';
        for (int i = 0; i < n; i++) {
                if (recs[i].err != 0)
                        continue;
                p += sprintf(p, "%s%s", *acked ? "," : "", PQgetvalue(res, i, 1));
                (*acked)++;
        }
        *p++ = '}';
        *p = '\0';
        if (*acked > 0) {
                const char *v[] = {ids};
                upd = qz_pg_query(
                    pg, "UPDATE tracks SET published_at = now() WHERE id = ANY($1::uuid[])", 1, v,
                    errstr, errstr_size);
                if (!upd)
                        goto fail;
        }
        if (qz_pg_commit(pg, errstr, errstr_size) != 0)
                goto out;
        rc = st == QZ_KAFKA_OK ? 0 : -1;
        if (rc != 0) {
                snprintf(e2, sizeof(e2), "%s", errstr);
                snprintf(errstr, errstr_size, "tracks.v1: %ld of %d acknowledged: %s", *acked, n,
                         e2);
        }
        goto out;
fail:
        qz_pg_rollback(pg, e2, sizeof(e2));
out:
        PQclear(res);
        PQclear(upd);
        for (int i = 0; bufs && i < n; i++)
                free(bufs[i]);
        free(bufs);
        free(recs);
        free(ids);
        return rc;
}

int outbox_sweep(struct qz_pg *pg, const char *topic, struct qz_kafka_producer *producer,
                 const struct qz_avro_registry *avro, long *published, char *errstr,
                 size_t errstr_size)
{
        const struct qz_avro_schema *schema = qz_avro_schema_get(avro, "TrackEvent");
        *published = 0;
        if (!schema) {
                snprintf(errstr, errstr_size, "schema qoqnuz.TrackEvent not found");
                return -1;
        }
        int claimed;
        do {
                long acked;
                int rc =
                    sweep_batch(pg, topic, producer, schema, &claimed, &acked, errstr, errstr_size);
                *published += acked;
                if (rc != 0)
                        return -1;
        } while (claimed == BATCH);
        return 0;
}

static void *outbox_main(void *arg)
{
        struct outbox *o = arg;
        char err[512];
        bool failing = false;
        qz_pg_listen(o->pg, "tracks_outbox", err, sizeof(err));
        while (!atomic_load(&o->stop)) {
                long n = 0;
                int rc = outbox_sweep(o->pg, o->topic, prodref_get(o->producer), o->avro, &n, err,
                                      sizeof(err));
                prodref_put(o->producer);
                if (rc != 0) {
                        qz_metric_inc(o->errors);
                        if (!failing)
                                qz_warn("tracks relay: %s (retrying)", err);
                        failing = true;
                } else if (failing) {
                        qz_info("tracks relay recovered");
                        failing = false;
                }
                qz_metric_add(o->published, (double)n);
                PGnotify *note = NULL;
                int w = qz_pg_notify_wait(o->pg, (int)o->sweep_ms, &note, err, sizeof(err));
                while (w == 1) {
                        PQfreemem(note);
                        note = NULL;
                        w = qz_pg_notify_wait(o->pg, 0, &note, err, sizeof(err));
                }
                if (w < 0 || failing)
                        for (int i = 0; i < 10 && !atomic_load(&o->stop); i++)
                                usleep((useconds_t)o->sweep_ms * 100);
        }
        return NULL;
}

struct outbox *outbox_start(const struct qz_pg_opts *pg_opts, const char *topic, long sweep_ms,
                            struct prodref *producer, const struct qz_avro_registry *avro,
                            struct qz_metrics *metrics, char *errstr, size_t errstr_size)
{
        struct outbox *o = calloc(1, sizeof(*o));
        if (!o) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        struct qz_pg_opts po = *pg_opts;
        po.application_name = "automation-api-tracks-relay";
        if (!(o->pg = qz_pg_new(&po, errstr, errstr_size))) {
                free(o);
                return NULL;
        }
        o->topic = topic;
        o->sweep_ms = sweep_ms;
        o->producer = producer;
        o->avro = avro;
        o->published = qz_metrics_counter(metrics, "qz_api_track_events_published_total", NULL,
                                          "TrackEvents acknowledged on tracks.v1");
        o->errors = qz_metrics_counter(metrics, "qz_api_tracks_relay_errors_total", NULL,
                                       "tracks.v1 relay sweeps that failed (retried)");
        if (pthread_create(&o->thread, NULL, outbox_main, o) != 0) {
                snprintf(errstr, errstr_size, "cannot start the tracks relay thread");
                qz_pg_free(o->pg);
                free(o);
                return NULL;
        }
        return o;
}

void outbox_stop(struct outbox *o)
{
        if (!o)
                return;
        atomic_store(&o->stop, true);
        pthread_join(o->thread, NULL);
        qz_pg_free(o->pg);
        free(o);
}
