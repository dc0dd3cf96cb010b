/* gen.h - builds one playlist for a request: loads candidate pools with SQL, applies the rules.
 *
 * Every type (the guide's four and the parameterised generators) is a list of candidate pools
 * read from Postgres "as of" a time (so the offline evaluation can build from the past), then
 * rules.c picks, dedups and spaces artists. docs/playlist-builder.md states each type's exact
 * rule, its fallback and what happens without track_features.
 *
 * Ownership: pl_gen borrows the Postgres handle (one thread) and the config strings; a built
 * playlist owns its items and metadata (pl_playlist_free). */
#ifndef PL_GEN_H
#define PL_GEN_H

#include "rules.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;

struct pl_gen_cfg {
        long target;               /* tracks per playlist (request param "limit" may lower/raise) */
        long max_target;           /* upper bound for "limit" */
        double recency_days;       /* recency decay constant: a play d days old weighs exp(-d/x) */
        double content_weight;     /* content similarity's weight against CF's 1.0 */
        const char *variants;      /* A/B: "cf:100" or "cf:50,guide:50" */
        const char *ab_salt;       /* changes the assignment for a new experiment */
        const char *force_variant; /* NULL; the evaluation builds every variant for every user */
        /* pl_gen_build_batch: the most plays one shared load reads (its rows, ~300 bytes each,
         * are bounded by its users' plays); 0 = PL_GEN_LOAD_MAX_PLAYS. */
        long long load_max_plays;
};

#define PL_GEN_LOAD_MAX_PLAYS 1000000LL

struct pl_request {
        const char *request_id;
        const char *user_id;
        const char *playlist_type;
        const char *reason;
        const char *run_id;   /* NULL when manual */
        const json_t *params; /* object of strings; NULL = {} */
};

struct pl_playlist {
        struct pl_cand *items;
        size_t n;
        json_t *metadata;
        int64_t generated_ms, expires_ms;
        char variant[32];
};

struct pl_gen;

struct pl_gen *pl_gen_new(struct qz_pg *pg, const struct pl_gen_cfg *cfg, char *errstr,
                          size_t errstr_size);
void pl_gen_free(struct pl_gen *g);

/* Builds rq's playlist as of now_ms. 0 = built (possibly empty, the reason in metadata);
 * 1 = bad request (unknown type, unknown user, bad params: errstr says which, for the
 * requester); -1 = transient failure (Postgres): retry later. */
int pl_gen_build(struct pl_gen *g, const struct pl_request *rq, int64_t now_ms,
                 struct pl_playlist *out, char *errstr, size_t errstr_size);
void pl_playlist_free(struct pl_playlist *p);

/* Builds many requests as of one now_ms (a consumer batch): the scheduled four types from the
 * catalog held in memory (catalog.c: reloaded when it changed) and their users' plays, loaded
 * by groups of users of at most cfg.load_max_plays plays together (one group, one query, when
 * the batch's users are under it; a user over it is a group alone), every other type as
 * pl_gen_build does. Each result is exactly what pl_gen_build returns for that request:
 * res[i].rc 0 / 1 / -1 with res[i].err, res[i].pl. Returns 0, or -1 (errstr) when the shared
 * loading failed (transient): nothing was built (what a group built before is freed). */
struct pl_gen_result {
        int rc;
        struct pl_playlist pl;
        char err[512];
        char sqlstate[8]; /* rc -1: the SQLSTATE of this request's failure ("" = not Postgres) */
};
int pl_gen_build_batch(struct pl_gen *g, const struct pl_request *const *rqs, size_t n,
                       int64_t now_ms, struct pl_gen_result *res, char *errstr, size_t errstr_size);

/* The guide's four plus the parameterised generators. */
bool pl_gen_type_known(const char *type);
/* Time to live of a type's playlist in ms (24 h daily, 7 d weekly). */
int64_t pl_gen_ttl_ms(const char *type);

/* Activity presets for the "activity" type (also used by docs/tests). 0 or -1 when unknown. */
struct pl_feature_ranges {
        double e_lo, e_hi, t_lo, t_hi, v_lo, v_hi, d_lo, i_lo; /* NaN = no bound */
};
int pl_gen_activity_ranges(const char *activity, struct pl_feature_ranges *r);

#endif
