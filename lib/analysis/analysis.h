/* analysis.h - audio analysis (decode, features, mood, genre) and the background-task queue
 * operations shared by analysis-worker and automation-api.
 *
 * Two halves:
 *
 * 1. Pure analysis (decode.c, features.c, derive.c, genre.c): an audio file
 *    path or http(s) URL is fetched (libcurl, size and time limits), decoded
 *    with libsndfile (at most max_seconds), mixed to mono and reduced to about
 *    22 kHz; then tempo (aubio), EBU R128 loudness (libebur128, on the
 *    original channels), spectral features (FFTW), key/mode (chroma against
 *    key profiles) and the derived 0-1 heuristics. docs/analysis.md states
 *    each feature's range, method and measured accuracy.
 *
 * 2. Task operations on background_tasks (tasks.c, run.c): claim the most
 *    urgent due pending task (pending -> processing, attempts+1), analyse it,
 *    and store result + track_features + tracks.mood/energy_level + completed
 *    in one transaction fenced by (status = processing, attempts = claimed
 *    attempt), so a task reset or reclaimed meanwhile is never overwritten and
 *    a completed task is never touched again. Failures go back to pending with
 *    exponential backoff (not_before) or to failed after max_attempts;
 *    permanent errors (no audio, undecodable, silent) fail at once.
 *
 * Errors: 0/-1 (or a count) with a human errstr, as everywhere.
 * Ownership: json_t results belong to the caller (json_decref). A struct
 * qz_pg is used by one thread at a time (pg.h). Thread-safe otherwise. */
#ifndef QZ_ANALYSIS_H
#define QZ_ANALYSIS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qz_pg;

/* ---- limits and policy ------------------------------------------------ */

struct qz_analysis_config {
        int max_seconds;       /* decode at most this much audio; 0 = 60 */
        long fetch_timeout_ms; /* whole http(s) transfer; 0 = 20000 */
        long fetch_max_bytes;  /* http(s) body and local file size cap; 0 = 200 MiB */
        long retry_base_ms;    /* backoff after attempt n: base * 2^(n-1); 0 = 10000 */
        long retry_max_ms;     /* backoff cap; 0 = 600000 */
        int genre_k;           /* kNN neighbours; 0 = 7 */
        int genre_max_refs;    /* labelled tracks loaded for kNN; 0 = 2000 */
        const char *tmp_dir;   /* for downloads; NULL = $TMPDIR or /tmp */
        /* The worker's token discipline (services/analysis-worker/worker.h):
         * an unnamed claim takes only tasks already published, so every
         * published message still finds a task; false (the API) = any. */
        bool claim_published_only;
};

/* ---- features --------------------------------------------------------- */

enum { QZ_ANALYSIS_MAX_TAGS = 4, QZ_ANALYSIS_GENRE_DIMS = 9 };

struct qz_analysis_features {
        double seconds;         /* audio analysed (<= max_seconds) */
        double file_seconds;    /* whole file, from its header */
        int sample_rate;        /* of the analysed mono signal */
        double tempo_bpm;       /* aubio "default" beat tracker; 0 when none found */
        double beat_confidence; /* aubio's confidence, 0-1 */
        double loudness_lufs;   /* EBU R128 integrated; -70 floor */
        double loudness_range;  /* EBU R128 LRA, LU */
        double rms_db;          /* dBFS of the mono signal */
        double onset_rate;      /* onsets per second (aubio "hfc") */
        double centroid_hz;     /* mean spectral centroid */
        double rolloff_hz;      /* mean 85 % rolloff */
        double flatness;        /* mean spectral flatness, 0 (tonal) - 1 (noise) */
        double zcr;             /* zero crossings per sample */
        double low_ratio;       /* share of spectral energy below 200 Hz */
        double pulse_clarity;   /* autocorrelation peak of the onset envelope, 0-1 */
        int key;                /* 0 = C ... 11 = B */
        bool minor;
        double mode_confidence; /* 0-1, margin between the best major and minor profile */
        /* derived, 0-1 (heuristics: docs/analysis.md) */
        double energy, valence, danceability, acousticness, instrumentalness;
        const char *mood; /* static string: happy, energetic, tense, sad, calm */
        const char *mood_tags[QZ_ANALYSIS_MAX_TAGS];
        size_t n_mood_tags;
        double mood_confidence;
};

/* Where an error leaves a task: retry later, or give up at once. */
enum qz_analysis_err { QZ_ANALYSIS_TRANSIENT = 0, QZ_ANALYSIS_PERMANENT = 1 };

/* Decodes src (a path, file:// URL or http(s) URL) into a malloc'd mono
 * float buffer (*mono, *n samples at *rate), at most max_seconds, and
 * measures EBU R128 loudness on the original channels. *klass tells
 * permanent from transient failures (network errors are transient). */
int qz_analysis_decode(const char *src, const struct qz_analysis_config *cfg, float **mono,
                       size_t *n, int *rate, struct qz_analysis_features *f,
                       enum qz_analysis_err *klass, char *errstr, size_t errstr_size);
/* Low-level features of a mono signal (tempo, spectral, key, onsets) plus the
 * derived ones; loudness fields are computed here only when f->loudness_lufs
 * is 0 (the decode path already set them). */
int qz_analysis_signal(const float *x, size_t n, int rate, struct qz_analysis_features *f,
                       char *errstr, size_t errstr_size);
/* Loudness of interleaved float frames (for tests and the decode path). */
int qz_analysis_loudness(const float *frames, size_t nframes, int channels, int rate, double *lufs,
                         double *lra, char *errstr, size_t errstr_size);
/* The derived heuristics from the low-level features (fills energy ...
 * mood_confidence). Pure. */
void qz_analysis_derive(struct qz_analysis_features *f);
/* decode + signal: the whole analysis of one file. */
int qz_analysis_file(const char *src, const struct qz_analysis_config *cfg,
                     struct qz_analysis_features *f, enum qz_analysis_err *klass, char *errstr,
                     size_t errstr_size);
/* All features as a JSON object (track_features.features). New reference. */
json_t *qz_analysis_features_json(const struct qz_analysis_features *f);

/* ---- genre: weighted kNN over standardized feature vectors ----------- */

/* The vector kNN compares, from a features JSON object (as stored in
 * track_features.features). 0, or -1 when a member is missing. */
int qz_analysis_genre_vector(const json_t *features, double v[QZ_ANALYSIS_GENRE_DIMS]);

struct qz_analysis_labelled {
        double v[QZ_ANALYSIS_GENRE_DIMS];
        const char *genre;
};

/* Weighted vote of the k nearest refs (weight 1/(d+eps)); *genre points into
 * refs, *confidence is the winner's share of the vote. -1 when n == 0. */
int qz_analysis_genre_knn(const double v[QZ_ANALYSIS_GENRE_DIMS],
                          const struct qz_analysis_labelled *refs, size_t n, int k,
                          const char **genre, double *confidence);

/* ---- task operations (background_tasks) ------------------------------ */

struct qz_analysis_task {
        char id[37], task_type[64], entity_type[32], entity_id[37];
        int priority, attempts, max_attempts;
};

/* Claims one due pending task (the given task_id, waiting for its row lock;
 * or when NULL the most urgent unlocked one: priority desc, created_at;
 * published_only: only rows with published_at set; task_type NULL = any).
 * 1 claimed (*t filled), 0 nothing to claim, -1 error. */
int qz_analysis_claim(struct qz_pg *pg, const char *task_id, const char *task_type,
                      bool published_only, struct qz_analysis_task *t, char *errstr,
                      size_t errstr_size);

/* Stores a result: result JSON, the task type's track_features columns
 * (features JSON merged), tracks.mood / energy_level, completed_at, in one
 * transaction, only while the claim is still ours. 0 stored, 1 the claim
 * was lost (reset or reclaimed: nothing written), -1 error (rolled back). */
int qz_analysis_store(struct qz_pg *pg, const struct qz_analysis_task *t, const json_t *result,
                      const json_t *features, char *errstr, size_t errstr_size);

/* Records a failed attempt: back to pending with not_before = now + backoff,
 * or failed (completed_at set) when permanent or attempts >= max_attempts.
 * The error is appended to error_message ("attempt N: msg", one per line).
 * *failed (may be NULL) tells which. 0, 1 claim lost, -1 error. */
int qz_analysis_fail(struct qz_pg *pg, const struct qz_analysis_task *t,
                     const struct qz_analysis_config *cfg, enum qz_analysis_err klass,
                     const char *error, bool *failed, char *errstr, size_t errstr_size);

/* Backoff before the retry that follows attempt n (n >= 1), in ms. Pure. */
long qz_analysis_backoff_ms(const struct qz_analysis_config *cfg, int attempt);

/* Analyses the task's track for its task_type and builds the result JSON
 * (*result) and the features JSON (*features), new references. */
int qz_analysis_compute(struct qz_pg *pg, const struct qz_analysis_task *t,
                        const struct qz_analysis_config *cfg, json_t **result, json_t **features,
                        enum qz_analysis_err *klass, char *errstr, size_t errstr_size);

struct qz_analysis_outcome {
        struct qz_analysis_task task;
        const char *status; /* "completed", "pending" (will retry), "failed", "lost" */
        json_t *result;     /* completed: the stored result (caller decrefs); else NULL */
        char error[512];    /* pending/failed: why */
        double seconds;     /* wall time of compute + store */
};

/* Claims (task_id, or the most urgent task of task_type / any), computes,
 * stores or records the failure: the whole life of one attempt, used by the
 * worker and by POST /api/automation/worker. 1 one task handled (*out
 * filled), 0 nothing pending, -1 a database error (the claim, if any, stays
 * processing and is recovered by the stuck-task reset). */
int qz_analysis_run_task(struct qz_pg *pg, const struct qz_analysis_config *cfg,
                         const char *task_id, const char *task_type,
                         struct qz_analysis_outcome *out, char *errstr, size_t errstr_size);

/* Maintenance (the analysis-worker's jobs). */
/* processing with started_at older than older_than_ms -> pending, unpublished
 * (the relay republishes them). *count = rows reset. */
int qz_analysis_reset_stuck(struct qz_pg *pg, long older_than_ms, long *count, char *errstr,
                            size_t errstr_size);
/* Deletes completed tasks finished more than completed_ms ago and failed ones
 * more than failed_ms ago. */
int qz_analysis_cleanup(struct qz_pg *pg, long completed_ms, long failed_ms, long *completed,
                        long *failed, char *errstr, size_t errstr_size);

#endif
