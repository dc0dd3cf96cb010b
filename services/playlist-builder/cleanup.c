/* cleanup.c - the cleanup-expired-playlists job. */
#include "cleanup.h"

#include "pg.h"

#include <stdio.h>
#include <stdlib.h>

int pl_cleanup_job(void *opaque, struct qz_pg *pg, const char *run_id, const json_t *params,
                   struct qz_job_result *res, char *errstr, size_t errstr_size)
{
        (void)opaque;
        (void)run_id;
        (void)params;
        static const char *const sql[] = {
            "DELETE FROM smart_playlists WHERE expires_at <= now()",
            /* parenthesised: one literal split over two lines, not a missing comma */
            ("DELETE FROM smart_playlist_generations "
             "WHERE generated_at < now() - interval '90 days'"),
            "DELETE FROM playlist_requests_done WHERE done_at < now() - interval '7 days'",
        };
        long n[3];
        for (int i = 0; i < 3; i++) {
                PGresult *r = qz_pg_query(pg, sql[i], 0, NULL, errstr, errstr_size);
                if (!r)
                        return -1;
                n[i] = atol(PQcmdTuples(r));
                PQclear(r);
        }
        res->processed = n[0];
        snprintf(res->message, sizeof(res->message),
                 "deleted %ld expired playlists, %ld old generations, %ld request log rows", n[0],
                 n[1], n[2]);
        return 0;
}
