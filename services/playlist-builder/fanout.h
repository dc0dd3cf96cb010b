/* fanout.h - the generate-smart-playlists job: one PlaylistRequest per active user and type.
 *
 * Active = a play in the last 90 days. Types by the UTC weekday of the run: daily_mix and
 * new_for_you every day, discovery_weekly and forgotten_favorites on Mondays too. Params
 * user_id and/or playlist_type narrow the run (generate_daily_mix(user)). The run's expected is
 * set before the first request is published, and the run stays running: each request adds one
 * to processed in the transaction that stores its playlist (store.c), and the run succeeds when
 * processed reaches expected.
 *
 * Request ids are derived from (run_id, user, type), so a command redelivered after a crash
 * republishes the same requests and the builders count each once.
 *
 * Ownership: the config is borrowed and must outlive the jobs runner. */
#ifndef PL_FANOUT_H
#define PL_FANOUT_H

#include "jobs.h"

#include <stddef.h>

struct qz_kafka_producer;
struct qz_avro_registry;

struct pl_fanout_cfg {
        struct qz_kafka_producer *producer;
        const struct qz_avro_registry *avro;
        const char *requests_topic;
        int active_days;
};

int pl_fanout_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                  struct qz_job_result *res, char *errstr, size_t errstr_size);

/* The scheduled types of a weekday (1 = Monday .. 7); returns how many (<= 4). */
size_t pl_fanout_types_for_day(int weekday, const char *out[4]);
/* A version-4-shaped UUID from a hash of (run_id, user_id, type). */
void pl_fanout_request_id(const char *run_id, const char *user_id, const char *type, char out[37]);

#endif
