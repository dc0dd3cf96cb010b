/* bench_avro.c - PlayEvent through our codec vs avro-c's bare value write.
 *
 * Baseline: avro-c's generic value API fills and writes a PlayEvent body into
 * a memory buffer (what any avro-c user pays). Ours: qz_avro_encode_json from a
 * jansson value (field checks, uuid checks, single-object header, malloc'd
 * result), then qz_avro_decode_json back (bounds-checked pass + avro-c read).
 * Both run in this process, same record, same iteration count. */
#include "avro.h"

#include <avro/basics.h>
#include <avro/generic.h>
#include <avro/io.h>
#include <avro/schema.h>
#include <avro/value.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *play(void)
{
        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:s, s:s, s:n}", "event_id",
                         "8884e8a9-ccb7-41b0-a92c-ab675ea2bc18", "user_id",
                         "11111111-1111-4111-8111-111111111111", "track_id",
                         "22222222-2222-4222-8222-222222222222", "played_at",
                         (json_int_t)1780000000000LL, "duration_played_ms", (json_int_t)180000,
                         "completed", 1, "source", "album", "device_type", "mobile",
                         "source_playlist_id");
}

static char *slurp(const char *path)
{
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
        }
        if (buf)
                buf[n] = '\0';
        fclose(f);
        return buf;
}

static double baseline(const char *schema_path, long iters)
{
        char *json = slurp(schema_path);
        avro_schema_t schema;
        if (!json || avro_schema_from_json_length(json, strlen(json), &schema) != 0) {
                fprintf(stderr, "bench_avro: cannot load %s\n", schema_path);
                exit(1);
        }
        avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
        char buf[512];
        double t0 = now_s();
        for (long i = 0; i < iters; i++) {
                avro_value_t v, f, branch;
                avro_generic_value_new(iface, &v);
                avro_value_get_by_name(&v, "event_id", &f, NULL);
                avro_value_set_string(&f, "8884e8a9-ccb7-41b0-a92c-ab675ea2bc18");
                avro_value_get_by_name(&v, "user_id", &f, NULL);
                avro_value_set_string(&f, "11111111-1111-4111-8111-111111111111");
                avro_value_get_by_name(&v, "track_id", &f, NULL);
                avro_value_set_string(&f, "22222222-2222-4222-8222-222222222222");
                avro_value_get_by_name(&v, "played_at", &f, NULL);
                avro_value_set_long(&f, 1780000000000LL);
                avro_value_get_by_name(&v, "duration_played_ms", &f, NULL);
                avro_value_set_long(&f, 180000);
                avro_value_get_by_name(&v, "completed", &f, NULL);
                avro_value_set_boolean(&f, 1);
                avro_value_get_by_name(&v, "source", &f, NULL);
                avro_value_set_string(&f, "album");
                avro_value_get_by_name(&v, "device_type", &f, NULL);
                avro_value_set_string(&f, "mobile");
                avro_value_get_by_name(&v, "source_playlist_id", &f, NULL);
                avro_value_set_branch(&f, 0, &branch);
                avro_value_set_null(&branch);
                avro_writer_t w = avro_writer_memory(buf, sizeof(buf));
                if (avro_value_write(w, &v) != 0) {
                        fprintf(stderr, "bench_avro: baseline write failed\n");
                        exit(1);
                }
                avro_writer_free(w);
                avro_value_decref(&v);
        }
        double t = now_s() - t0;
        avro_value_iface_decref(iface);
        avro_schema_decref(schema);
        free(json);
        return t;
}

int main(int argc, char **argv)
{
        long iters = argc > 1 ? atol(argv[1]) : 200000;
        const char *dir = getenv("QOQNUZ_SCHEMA_DIR") ? getenv("QOQNUZ_SCHEMA_DIR") : "schemas";
        struct qz_avro_registry *r;
        char err[256], path[512];
        if (qz_avro_registry_load(dir, &r, err, sizeof(err)) != 0) {
                fprintf(stderr, "bench_avro: %s\n", err);
                return 1;
        }
        const struct qz_avro_schema *s = qz_avro_schema_get(r, "PlayEvent");
        json_t *v = play();
        snprintf(path, sizeof(path), "%s/PlayEvent.avsc", dir);

        double tb = baseline(path, iters);

        double t0 = now_s();
        for (long i = 0; i < iters; i++) {
                unsigned char *out;
                size_t len;
                if (qz_avro_encode_json(s, v, &out, &len, err, sizeof(err)) != 0) {
                        fprintf(stderr, "bench_avro: %s\n", err);
                        return 1;
                }
                free(out);
        }
        double te = now_s() - t0;

        unsigned char *msg;
        size_t len;
        qz_avro_encode_json(s, v, &msg, &len, err, sizeof(err));
        t0 = now_s();
        for (long i = 0; i < iters; i++) {
                json_t *d;
                if (qz_avro_decode_json(r, msg, len, NULL, &d, err, sizeof(err)) != 0) {
                        fprintf(stderr, "bench_avro: %s\n", err);
                        return 1;
                }
                json_decref(d);
        }
        double td = now_s() - t0;

        printf("bench_avro: PlayEvent, %ld iterations, %zu bytes single-object\n", iters, len);
        printf("  baseline avro-c value write : %8.0f msgs/s (%.2f us/msg)\n", iters / tb,
               tb * 1e6 / iters);
        printf(
            "  qz encode (json -> bytes)   : %8.0f msgs/s (%.2f us/msg)  ratio vs baseline %.2fx "
            "slower\n",
            iters / te, te * 1e6 / iters, te / tb);
        printf(
            "  qz decode (bytes -> json)   : %8.0f msgs/s (%.2f us/msg)  ratio vs baseline %.2fx "
            "slower\n",
            iters / td, td * 1e6 / iters, td / tb);
        free(msg);
        json_decref(v);
        qz_avro_registry_free(r);
        return 0;
}
