/* it_analysis_queue.c - the background_tasks queue against real Postgres and the dev-broker:
 * trigger -> claim -> analyse -> store; the fence (reset/complete race, completed never
 * overwritten); retries with exponential backoff honouring not_before, then failed with the
 * error history and a DLQ RejectedEvent; the relay crashing between ack and mark (republished,
 * deduplicated by the claim); cleanup counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/analysis-worker/maint.h"
#include "../../services/analysis-worker/relay.h"
#include "analysis/analysis.h"
#include "avro.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"

#include <math.h>
#include <pthread.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct fx {
        struct qz_pg *pg, *pg2;
        struct qz_avro_registry *avro;
        struct qz_kafka_producer *producer;
        const char *brokers;
        char wav[512], artist[37], suffix[16];
        char tasks_topic[64], retry_topic[64], dlq_topic[64], results_topic[64];
};

static const struct qz_analysis_config acfg = {.retry_base_ms = 300, .retry_max_ms = 5000};

static PGresult *q(struct qz_pg *pg, const char *sql, int n, const char *const *v)
{
        char err[512];
        PGresult *r = qz_pg_query(pg, sql, n, v, err, sizeof(err));
        if (!r)
                fail_msg("%s: %s", sql, err);
        return r;
}

static char *q1(struct qz_pg *pg, const char *sql, int n, const char *const *v)
{
        PGresult *r = q(pg, sql, n, v);
        char *s = PQntuples(r) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
        PQclear(r);
        return s;
}

static void insert_track(struct fx *f, const char *audio_url, char id[37])
{
        const char *v[3] = {f->artist, audio_url, "{rock}"};
        char *s = q1(f->pg,
                     "INSERT INTO tracks (title, artist_id, audio_url, genres)"
                     " VALUES ('it analysis', $1, $2, $3::text[]) RETURNING id",
                     3, v);
        snprintf(id, 37, "%s", s);
        free(s);
}

static char *task_of(struct fx *f, const char *track, const char *type)
{
        const char *v[2] = {track, type};
        return q1(f->pg,
                  "SELECT id FROM background_tasks WHERE entity_id = $1 AND task_type = $2"
                  " ORDER BY created_at DESC LIMIT 1",
                  2, v);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        char err[512];
        const char *dsn = getenv("QZ_TEST_PG_DSN"), *tmp = getenv("QZ_TEST_TMP");
        f->brokers = getenv("QZ_TEST_BROKERS");
        const char *schemas = getenv("QOQNUZ_SCHEMA_DIR");
        if (!dsn || !f->brokers || !tmp) {
                fprintf(stderr, "QZ_TEST_PG_DSN, QZ_TEST_BROKERS and QZ_TEST_TMP are required\n");
                return -1;
        }
        qz_log_init("it_analysis_queue", QZ_LOG_WARN);
        struct qz_pg_opts po = {.dsn = dsn};
        f->pg = qz_pg_new(&po, err, sizeof(err));
        f->pg2 = qz_pg_new(&po, err, sizeof(err));
        if (qz_avro_registry_load(schemas ? schemas : "schemas", &f->avro, err, sizeof(err)) != 0) {
                fprintf(stderr, "%s\n", err);
                return -1;
        }
        struct qz_kafka_producer_config pc = {.brokers = f->brokers};
        if (qz_kafka_producer_new(&pc, &f->producer, err, sizeof(err)) != 0)
                return -1;
        /* Own topics, so the relay's messages are this test's to count. */
        snprintf(f->suffix, sizeof(f->suffix), "%ld", (long)getpid());
        snprintf(f->tasks_topic, 64, "it.analysis.tasks.%s", f->suffix);
        snprintf(f->retry_topic, 64, "it.analysis.retry.%s", f->suffix);
        snprintf(f->dlq_topic, 64, "it.analysis.dlq.%s", f->suffix);
        snprintf(f->results_topic, 64, "it.analysis.results.%s", f->suffix);
        /* a 12 s click track at 120 BPM */
        snprintf(f->wav, sizeof(f->wav), "%s/it_analysis_%s.wav", tmp, f->suffix);
        SF_INFO info = {
            .samplerate = 22050, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
        SNDFILE *sf = sf_open(f->wav, SFM_WRITE, &info);
        size_t n = 22050 * 12;
        float *x = calloc(n, sizeof(float));
        for (size_t at = 0; at < n; at += 11025)
                for (size_t k = 0; k < 1000 && at + k < n; k++)
                        x[at + k] = (float)(0.8 * exp(-(double)k / 220.0) *
                                            sin(2 * M_PI * 1000.0 * (double)k / 22050.0));
        for (size_t i = 0; i < n; i++)
                x[i] += (float)(0.05 * sin(2 * M_PI * 220.0 * (double)i / 22050.0));
        sf_writef_float(sf, x, (sf_count_t)n);
        sf_close(sf);
        free(x);
        char *a =
            q1(f->pg, "INSERT INTO artists (name) VALUES ('it analysis') RETURNING id", 0, NULL);
        snprintf(f->artist, sizeof(f->artist), "%s", a);
        free(a);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        /* This test's tasks were relayed to its private topics: remove them so
         * a worker in a later test does not find published rows without a
         * message on the real topics. */
        const char *v[1] = {f->artist};
        PQclear(q(f->pg,
                  "DELETE FROM background_tasks WHERE entity_id IN"
                  " (SELECT id FROM tracks WHERE artist_id = $1)",
                  1, v));
        qz_kafka_producer_close(f->producer, 2000);
        qz_pg_free(f->pg);
        qz_pg_free(f->pg2);
        qz_avro_registry_free(f->avro);
        unlink(f->wav);
        free(f);
        return 0;
}

/* Reads topic from the beginning for up to wait_ms; returns how many messages
 * carry key, and decodes the last one into *last (may be NULL). */
static int consume_key(struct fx *f, const char *topic, const char *key, int want, int wait_ms,
                       json_t **last)
{
        char err[512], group[128];
        static int seq;
        snprintf(group, sizeof(group), "it-analysis-%s-%d", f->suffix, ++seq);
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", f->brokers, err, sizeof(err));
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
        rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        int got = 0;
        for (int waited = 0; waited < wait_ms && got < want; waited += 100) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (!m->err && m->key && m->key_len == strlen(key) &&
                    memcmp(m->key, key, m->key_len) == 0) {
                        got++;
                        if (last) {
                                json_decref(*last);
                                *last = NULL;
                                qz_avro_decode_json(f->avro, m->payload, m->len, NULL, last, err,
                                                    sizeof(err));
                        }
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return got;
}

static struct relay *new_relay(struct fx *f, bool skip_mark)
{
        char err[512];
        struct relay_config rc = {.tasks_topic = f->tasks_topic,
                                  .retry_topic = f->retry_topic,
                                  .dlq_topic = f->dlq_topic,
                                  .results_topic = f->results_topic,
                                  .service = "it_analysis_queue",
                                  .republish_age_ms = 300000,
                                  .batch = 5000,
                                  .produce_timeout_ms = 10000,
                                  .fault_skip_mark = skip_mark};
        struct relay *r = relay_new(&rc, f->pg, f->producer, f->avro, NULL, err, sizeof(err));
        assert_non_null(r);
        return r;
}

/* tracks insert -> 3 tasks -> analysed -> features stored; a second claim of
 * a completed task does nothing. */
static void test_trigger_claim_store(void **state)
{
        struct fx *f = *state;
        char track[37], err[512];
        insert_track(f, f->wav, track);
        const char *v[1] = {track};
        char *n = q1(f->pg, "SELECT count(*) FROM background_tasks WHERE entity_id = $1", 1, v);
        assert_string_equal(n, "3");
        free(n);
        static const char *types[] = {"energy_analysis", "mood_detection", "genre_classification"};
        for (int i = 0; i < 3; i++) {
                char *id = task_of(f, track, types[i]);
                struct qz_analysis_outcome out;
                assert_int_equal(
                    qz_analysis_run_task(f->pg, &acfg, id, NULL, &out, err, sizeof(err)), 1);
                if (strcmp(out.status, "completed") != 0)
                        fail_msg("%s: %s %s", types[i], out.status, out.error);
                json_decref(out.result);
                /* dedup: completed is never claimed again */
                assert_int_equal(
                    qz_analysis_run_task(f->pg, &acfg, id, NULL, &out, err, sizeof(err)), 0);
                free(id);
        }
        PGresult *r = q(f->pg,
                        "SELECT f.tempo, f.loudness_lufs, f.energy, f.mood, t.mood, t.energy_level,"
                        " f.genre IS NOT NULL OR f.genre_confidence = 0, f.features->>'source'"
                        " FROM track_features f JOIN tracks t ON t.id = f.track_id"
                        " WHERE f.track_id = $1",
                        1, v);
        assert_int_equal(PQntuples(r), 1);
        double tempo = atof(PQgetvalue(r, 0, 0));
        assert_true(fabs(tempo - 120.0) / 120.0 <= 0.04);
        assert_true(atof(PQgetvalue(r, 0, 1)) < -3 && atof(PQgetvalue(r, 0, 1)) > -40);
        assert_false(PQgetisnull(r, 0, 3));
        assert_string_equal(PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4)); /* tracks.mood */
        assert_false(PQgetisnull(r, 0, 5));                            /* energy_level */
        assert_string_equal(PQgetvalue(r, 0, 6), "t");
        assert_string_equal(PQgetvalue(r, 0, 7), f->wav);
        PQclear(r);
        /* every task completed exactly once */
        char *c = q1(f->pg,
                     "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1)"
                     " FROM background_tasks WHERE entity_id = $1",
                     1, v);
        assert_string_equal(c, "3");
        free(c);
}

struct race {
        struct fx *f;
        struct qz_analysis_task t;
        json_t *res, *feat;
        int store_rc;
        long reset_n;
};

static void *race_store(void *opaque)
{
        struct race *r = opaque;
        char err[512];
        r->store_rc = qz_analysis_store(r->f->pg, &r->t, r->res, r->feat, err, sizeof(err));
        return NULL;
}

static void *race_reset(void *opaque)
{
        struct race *r = opaque;
        char err[512];
        qz_analysis_reset_stuck(r->f->pg2, 0, &r->reset_n, err, sizeof(err));
        return NULL;
}

/* The stuck reset racing a completing task: either the completion wins (and
 * the row stays completed through any later reset) or the reset wins (and the
 * late completion writes nothing). Never completed -> pending. */
static void test_reset_complete_race(void **state)
{
        struct fx *f = *state;
        char track[37], err[512];
        enum qz_analysis_err k;
        insert_track(f, f->wav, track);
        char *id = task_of(f, track, "energy_analysis");
        struct race r = {.f = f};
        assert_int_equal(qz_analysis_claim(f->pg, id, NULL, false, &r.t, err, sizeof(err)), 1);
        assert_int_equal(
            qz_analysis_compute(f->pg, &r.t, &acfg, &r.res, &r.feat, &k, err, sizeof(err)), 0);
        char *rel = q1(f->pg,
                       "UPDATE background_tasks SET status = 'pending', attempts = 0"
                       " WHERE id = $1 RETURNING id",
                       1, (const char *[]){id});
        free(rel);
        int won_store = 0, won_reset = 0;
        for (int i = 0; i < 40; i++) {
                const char *v[1] = {id};
                PQclear(q(f->pg,
                          "UPDATE background_tasks SET status = 'pending', completed_at = NULL,"
                          " result = NULL WHERE id = $1",
                          1, v));
                assert_int_equal(qz_analysis_claim(f->pg, id, NULL, false, &r.t, err, sizeof(err)),
                                 1);
                pthread_t a, b;
                pthread_create(&a, NULL, race_store, &r);
                pthread_create(&b, NULL, race_reset, &r);
                pthread_join(a, NULL);
                pthread_join(b, NULL);
                char *st = q1(f->pg, "SELECT status FROM background_tasks WHERE id = $1", 1, v);
                if (r.store_rc == 0) {
                        won_store++;
                        assert_string_equal(st, "completed");
                        /* a later reset leaves it completed */
                        long n = 0;
                        assert_int_equal(qz_analysis_reset_stuck(f->pg2, 0, &n, err, sizeof(err)),
                                         0);
                        char *st2 =
                            q1(f->pg, "SELECT status FROM background_tasks WHERE id = $1", 1, v);
                        assert_string_equal(st2, "completed");
                        free(st2);
                } else {
                        assert_int_equal(r.store_rc, 1);
                        won_reset++;
                        assert_string_equal(st, "pending");
                }
                free(st);
                /* attempts grows with every claim: keep it below max */
                PQclear(q(f->pg, "UPDATE background_tasks SET attempts = 0 WHERE id = $1", 1, v));
        }
        print_message("race: completion won %d, reset won %d\n", won_store, won_reset);
        assert_int_equal(won_store + won_reset, 40);
        json_decref(r.res);
        json_decref(r.feat);
        free(id);
}

/* Transient failures: back to pending with not_before = now + 300 ms * 2^(n-1);
 * not claimable before that; relayed to the retry topic; after 3 attempts
 * failed with the three errors, relayed to the DLQ as a RejectedEvent. */
static void test_retries_backoff_dlq(void **state)
{
        struct fx *f = *state;
        char track[37], err[512];
        insert_track(f, "http://127.0.0.1:1/unreachable.wav", track);
        char *id = task_of(f, track, "energy_analysis");
        const char *v[1] = {id};
        struct relay *rl = new_relay(f, false);
        for (int attempt = 1; attempt <= 3; attempt++) {
                struct qz_analysis_outcome out;
                assert_int_equal(
                    qz_analysis_run_task(f->pg, &acfg, id, NULL, &out, err, sizeof(err)), 1);
                assert_int_equal(out.task.attempts, attempt);
                if (attempt < 3) {
                        assert_string_equal(out.status, "pending");
                        char *ms = q1(f->pg,
                                      "SELECT (extract(epoch FROM not_before - now()) * 1000)::int"
                                      " FROM background_tasks WHERE id = $1",
                                      1, v);
                        long expect = 300L << (attempt - 1), got = atol(ms);
                        free(ms);
                        assert_true(got <= expect && got > expect - 250);
                        /* not due yet: neither claimable nor relayed */
                        assert_int_equal(
                            qz_analysis_run_task(f->pg, &acfg, id, NULL, &out, err, sizeof(err)),
                            0);
                        usleep((useconds_t)(expect + 50) * 1000);
                        long sent = 0;
                        assert_int_equal(relay_tasks_once(rl, &sent, err, sizeof(err)), 0);
                        assert_true(sent >= 1);
                } else {
                        assert_string_equal(out.status, "failed");
                }
        }
        assert_int_equal(consume_key(f, f->retry_topic, track, 2, 15000, NULL), 2);
        char *em = q1(f->pg, "SELECT error_message FROM background_tasks WHERE id = $1", 1, v);
        assert_non_null(strstr(em, "attempt 1: "));
        assert_non_null(strstr(em, "attempt 3: "));
        free(em);
        long sent = 0;
        assert_int_equal(relay_outcomes_once(rl, &sent, err, sizeof(err)), 0);
        assert_true(sent >= 1);
        json_t *ev = NULL;
        assert_int_equal(consume_key(f, f->dlq_topic, track, 1, 15000, &ev), 1);
        assert_non_null(ev);
        assert_string_equal(json_string_value(json_object_get(ev, "reason")), "max_attempts");
        assert_int_equal(json_array_size(json_object_get(ev, "errors")), 3);
        json_decref(ev);
        relay_free(rl);
        free(id);
}

/* The relay dies after the broker acked but before published_at was set: the
 * rows go out again, and the claim dedupes (each task runs once). */
static void test_relay_crash_dedup(void **state)
{
        struct fx *f = *state;
        char track[37], err[512];
        insert_track(f, f->wav, track);
        struct relay *crash = new_relay(f, true), *ok = new_relay(f, false);
        long sent = 0;
        assert_int_equal(relay_tasks_once(crash, &sent, err, sizeof(err)), 0);
        assert_true(sent >= 3);
        const char *v[1] = {track};
        char *unpub = q1(f->pg,
                         "SELECT count(*) FROM background_tasks WHERE entity_id = $1"
                         " AND published_at IS NULL",
                         1, v);
        assert_string_equal(unpub, "3");
        free(unpub);
        assert_int_equal(relay_tasks_once(ok, &sent, err, sizeof(err)), 0);
        assert_true(sent >= 3);
        /* every message of this track: 3 tasks x 2 sends */
        int claims = 0, messages = 0;
        char group[96];
        snprintf(group, sizeof(group), "it-analysis-dedup-%s", f->suffix);
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", f->brokers, err, sizeof(err));
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, f->tasks_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        for (int waited = 0; waited < 20000 && messages < 6; waited += 100) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                json_t *task = NULL;
                if (!m->err && m->key_len == 36 && memcmp(m->key, track, 36) == 0 &&
                    qz_avro_decode_json(f->avro, m->payload, m->len, NULL, &task, err,
                                        sizeof(err)) == 0) {
                        messages++;
                        struct qz_analysis_outcome out;
                        int rc = qz_analysis_run_task(
                            f->pg, &acfg, json_string_value(json_object_get(task, "task_id")), NULL,
                            &out, err, sizeof(err));
                        assert_true(rc >= 0);
                        if (rc == 1) {
                                claims++;
                                assert_string_equal(out.status, "completed");
                                json_decref(out.result);
                        }
                }
                json_decref(task);
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        assert_int_equal(messages, 6);
        assert_int_equal(claims, 3);
        char *c = q1(f->pg,
                     "SELECT count(*) FROM background_tasks WHERE entity_id = $1"
                     " AND status = 'completed' AND attempts = 1",
                     1, v);
        assert_string_equal(c, "3");
        free(c);
        /* the outcomes go to the results topic */
        assert_int_equal(relay_outcomes_once(ok, &sent, err, sizeof(err)), 0);
        json_t *tf = NULL;
        assert_int_equal(consume_key(f, f->results_topic, track, 3, 15000, &tf), 3);
        assert_string_equal(json_string_value(json_object_get(tf, "track_id")), track);
        json_decref(tf);
        relay_free(crash);
        relay_free(ok);
}

/* Cleanup deletes completed > 7 d and failed > 30 d, and counts them. */
static void test_cleanup_counts(void **state)
{
        struct fx *f = *state;
        char a[37], b[37], err[512];
        insert_track(f, NULL, a);
        insert_track(f, NULL, b);
        const char *va[1] = {a}, *vb[1] = {b};
        PQclear(q(f->pg,
                  "UPDATE background_tasks SET status = 'completed', completed_at = now() -"
                  " CASE task_type WHEN 'mood_detection' THEN interval '8 days'"
                  " WHEN 'energy_analysis' THEN interval '1 day' ELSE interval '10 days' END"
                  " WHERE entity_id = $1",
                  1, va));
        PQclear(q(f->pg,
                  "UPDATE background_tasks SET status = 'failed', completed_at = now() -"
                  " CASE task_type WHEN 'mood_detection' THEN interval '31 days'"
                  " ELSE interval '10 days' END WHERE entity_id = $1",
                  1, vb));
        struct maint_config mc = {
            .stuck_ms = 1800000, .completed_ms = 7L * 86400000, .failed_ms = 30L * 86400000};
        struct qz_job_result res = {.expected = -1};
        assert_int_equal(maint_cleanup_job(&mc, f->pg, "run", NULL, &res, err, sizeof(err)), 0);
        print_message("%s\n", res.message);
        assert_int_equal(res.processed, 3); /* 2 completed (8 d, 10 d) + 1 failed (31 d) */
        assert_non_null(strstr(res.message, "deleted 2 completed"));
        assert_non_null(strstr(res.message, "and 1 failed"));
        char *left = q1(f->pg, "SELECT count(*) FROM background_tasks WHERE entity_id IN ($1, $2)",
                        2, (const char *[]){a, b});
        assert_string_equal(left, "3");
        free(left);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_trigger_claim_store), cmocka_unit_test(test_reset_complete_race),
            cmocka_unit_test(test_retries_backoff_dlq), cmocka_unit_test(test_relay_crash_dedup),
            cmocka_unit_test(test_cleanup_counts),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
