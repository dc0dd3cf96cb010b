/* fanout.c - the generate-smart-playlists job: one PlaylistRequest per active user and type. */
#include "fanout.h"
#include "gen.h"
#include "rules.h"

#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 2000 /* requests per produce-and-wait */

size_t pl_fanout_types_for_day(int weekday, const char *out[4])
{
        size_t n = 0;
        out[n++] = "daily_mix";
        out[n++] = "new_for_you";
        if (weekday == 1) {
                out[n++] = "discovery_weekly";
                out[n++] = "forgotten_favorites";
        }
        return n;
}

void pl_fanout_request_id(const char *run_id, const char *user_id, const char *type, char out[37])
{
        char key[160];
        snprintf(key, sizeof(key), "%s/%s/%s", run_id, user_id, type);
        uint64_t a = pl_rules_hash(key, 0), b = pl_rules_hash(key, a | 1);
        snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
                 (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
                 0x8000 | ((unsigned)(b >> 48) & 0x3fff),
                 (unsigned long long)(b & 0xffffffffffffULL));
}

struct chunk {
        struct qz_kafka_record recs[CHUNK];
        unsigned char *bufs[CHUNK];
        size_t n;
};

static void chunk_clear(struct chunk *c)
{
        for (size_t i = 0; i < c->n; i++)
                free(c->bufs[i]);
        c->n = 0;
}

static int chunk_flush(const struct pl_fanout_cfg *cfg, struct chunk *c, char *errstr,
                       size_t errstr_size)
{
        int rc = 0;
        if (c->n && qz_kafka_produce_wait(cfg->producer, c->recs, c->n, 30000, errstr,
                                          errstr_size) != QZ_KAFKA_OK)
                rc = -1;
        chunk_clear(c);
        return rc;
}

int pl_fanout_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                  struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        const struct pl_fanout_cfg *cfg = opaque;
        const struct qz_avro_schema *schema = qz_avro_schema_get(cfg->avro, "PlaylistRequest");
        const char *user = json_string_value(json_object_get(params, "user_id"));
        const char *type = json_string_value(json_object_get(params, "playlist_type"));
        const char *types[4];
        size_t ntypes;
        PGresult *users = NULL;
        struct chunk *c = NULL;
        int rc = -1;
        if (user && !qz_uuid_valid(user)) {
                snprintf(errstr, errstr_size, "param user_id: not a uuid: '%s'", user);
                return -1;
        }
        if (type) {
                if (!pl_gen_type_known(type)) {
                        snprintf(errstr, errstr_size, "param playlist_type: unknown '%s'", type);
                        return -1;
                }
                types[0] = type;
                ntypes = 1;
        } else {
                int y, w, wd;
                pl_rules_iso_week(qz_time_now_ms(), &y, &w, &wd);
                ntypes = pl_fanout_types_for_day(wd, types);
        }
        char days[16];
        snprintf(days, sizeof(days), "%d", cfg->active_days);
        const char *v[] = {days, user};
        users = qz_pg_query(pg,
                            user ? "SELECT $2::uuid::text WHERE $1::int > 0"
                                 : "SELECT DISTINCT user_id::text FROM play_history WHERE "
                                   "played_at >= now() - make_interval(days => $1::int)",
                            user ? 2 : 1, v, errstr, errstr_size);
        if (!users)
                return -1;
        long total = (long)PQntuples(users) * (long)ntypes;
        char expected[24];
        snprintf(expected, sizeof(expected), "%ld", total);
        const char *ve[] = {run_id, expected};
        /* expected first: a fast builder may count a request before this job returns. */
        PGresult *upd = qz_pg_query(pg,
                                    "UPDATE automation_job_runs SET expected = $2::bigint "
                                    "WHERE run_id = $1::uuid",
                                    2, ve, errstr, errstr_size);
        if (!upd)
                goto done;
        PQclear(upd);
        if (!(c = calloc(1, sizeof(*c)))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto done;
        }
        for (int u = 0; u < PQntuples(users); u++) {
                const char *uid = PQgetvalue(users, u, 0);
                for (size_t t = 0; t < ntypes; t++) {
                        char rid[37];
                        pl_fanout_request_id(run_id, uid, types[t], rid);
                        json_t *req = json_pack("{s:s,s:s,s:s,s:{},s:s,s:s}", "request_id", rid,
                                                "user_id", uid, "playlist_type", types[t], "params",
                                                "reason", "schedule", "run_id", run_id);
                        size_t len = 0;
                        int erc = qz_avro_encode_json(schema, req, &c->bufs[c->n], &len, errstr,
                                                      errstr_size);
                        json_decref(req);
                        if (erc != 0)
                                goto done;
                        /* The key points into `users`, alive until the chunk is flushed. */
                        c->recs[c->n] =
                            (struct qz_kafka_record){.topic = cfg->requests_topic,
                                                     .partition = QZ_KAFKA_PARTITION_ANY,
                                                     .key = uid,
                                                     .key_len = strlen(uid),
                                                     .value = c->bufs[c->n],
                                                     .value_len = len};
                        if (++c->n == CHUNK && chunk_flush(cfg, c, errstr, errstr_size) != 0)
                                goto done;
                }
        }
        if (chunk_flush(cfg, c, errstr, errstr_size) != 0)
                goto done;
        res->expected = total;
        res->keep_running = total > 0;
        snprintf(res->message, sizeof(res->message), "%ld requests for %d users, %zu types", total,
                 PQntuples(users), ntypes);
        qz_log_kv(QZ_LOG_INFO, "playlist requests published", "run_id", run_id, "message",
                  res->message, NULL);
        rc = 0;
done:
        if (c)
                chunk_clear(c);
        free(c);
        PQclear(users);
        return rc;
}
