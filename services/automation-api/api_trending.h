/* api_trending.h - GET/POST /api/automation/trending: charts from Redis (Postgres snapshot as
 * fallback).
 *
 * GET (public) reads the ranker's Redis keys (docs/redis-keys.md:
 * qoqnuz:trending:global or :genre:<g>, one :track:<id> hash per row, :meta),
 * and answers the guide's shape. When Redis is unreachable, or holds no
 * chart yet (no :meta), it answers from the trending_tracks snapshot in
 * Postgres instead (header X-Trending-Source says which). A rendered answer
 * is reused for trending_cache_ms (the charts move every few seconds at
 * most), which is what lets one core serve tens of thousands of reads.
 * POST (admin) queues calculate-trending and waits up to trending_wait_ms
 * for the run to finish. */
#ifndef API_TRENDING_H
#define API_TRENDING_H

#include "api.h"

struct trending_cache *trending_cache_new(void);
void trending_cache_free(struct trending_cache *c);

void api_trending_get_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                         void *opaque);
void api_trending_post_cb(const struct qz_http_request *req, struct qz_http_response *resp,
                          void *opaque);

/* Waits up to wait_ms for run_id to reach succeeded/failed; fills status
 * (16 bytes) and message. 0, or -1 with errstr on a database error. Shared
 * with the trigger endpoint. */
struct qz_pg;
int api_wait_run(struct qz_pg *pg, const char *run_id, long wait_ms, char *status, char *message,
                 size_t message_size, char *errstr, size_t errstr_size);

#endif
