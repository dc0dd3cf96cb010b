/* test_avro.c - Avro codec: canonical form and fingerprint against the spec's vectors,
 * round trips of every schema in schemas/, and rejection of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "avro.h"

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Apache Avro share/test/data/schema-tests.txt, vectors 000-033 (multi-line
 * inputs joined with spaces). has_fp: the file gives a fingerprint. */
static const struct {
        const char *id;
        const char *input;
        const char *canonical;
        bool has_fp;
        long long fp;
} spec_vectors[] = {
    {"000", "\"null\"", "\"null\"", true, 7195948357588979594LL},
    {"001", "{\"type\":\"null\"}", "\"null\"", false, 0},
    {"002", "\"boolean\"", "\"boolean\"", true, -6970731678124411036LL},
    {"003", "{\"type\":\"boolean\"}", "\"boolean\"", false, 0},
    {"004", "\"int\"", "\"int\"", true, 8247732601305521295LL},
    {"005", "{\"type\":\"int\"}", "\"int\"", false, 0},
    {"006", "\"long\"", "\"long\"", true, -3434872931120570953LL},
    {"007", "{\"type\":\"long\"}", "\"long\"", false, 0},
    {"008", "\"float\"", "\"float\"", true, 5583340709985441680LL},
    {"009", "{\"type\":\"float\"}", "\"float\"", false, 0},
    {"010", "\"double\"", "\"double\"", true, -8181574048448539266LL},
    {"011", "{\"type\":\"double\"}", "\"double\"", false, 0},
    {"012", "\"bytes\"", "\"bytes\"", true, 5746618253357095269LL},
    {"013", "{\"type\":\"bytes\"}", "\"bytes\"", false, 0},
    {"014", "\"string\"", "\"string\"", true, -8142146995180207161LL},
    {"015", "{\"type\":\"string\"}", "\"string\"", false, 0},
    {"016", "[  ]", "[]", true, -1241056759729112623LL},
    {"017", "[ \"int\"  ]", "[\"int\"]", true, -5232228896498058493LL},
    {"018", "[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]", true,
     5392556393470105090LL},
    {"019", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"020", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", true, 5916914534497305771LL},
    {"021", "{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}", true, -4616218487480524110LL},
    {"022", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"Useful info\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"023", "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"024",
     "{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", "
     "\"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"025",
     "{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], \"type\":\"record\", "
     "\"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}",
     true, 7843277075252814651LL},
    {"026",
     "{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", \"default\":\"true\"}, "
     "{\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\",\"type\":\"int\"}], "
     "\"type\":\"record\", \"name\":\"foo\" }",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},{"
     "\"name\":\"f2\",\"type\":\"int\"}]}",
     true, -4860222112080293046LL},
    {"027", "{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", true, -6342190197741309591LL},
    {"028",
     "{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"symbols\":[\"A1\", \"A2\"]}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"A2\"]}", true,
     -4448647247586288245LL},
    {"029", "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}",
     "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", true, 1756455273707447556LL},
    {"030",
     "{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"size\":32}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}", true, -3064184465700546786LL},
    {"031", "{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}",
     "{\"type\":\"array\",\"items\":\"null\"}", true, -589620603366471059LL},
    {"032", "{ \"values\":\"string\", \"type\":\"map\"}",
     "{\"type\":\"map\",\"values\":\"string\"}", true, -8732877298790414990LL},
    {"033",
     "{\"name\":\"PigValue\",\"type\":\"record\", \"fields\":[{\"name\":\"value\", "
     "\"type\":[\"null\", \"int\", \"long\", \"PigValue\"]}]}",
     "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":["
     "\"null\",\"int\",\"long\",\"PigValue\"]}]}",
     true, -1759257747318642341LL},
};

/* Our own cases for rules the spec file has no vector for (nested names,
 * namespace inheritance, null namespace, logical types, escapes). */
static const struct {
        const char *input;
        const char *canonical;
} more_vectors[] = {
    {"{\"type\":\"record\",\"name\":\"Outer\",\"namespace\":\"a.b\",\"fields\":["
     "{\"name\":\"in\",\"type\":{\"type\":\"record\",\"name\":\"Inner\",\"fields\":["
     "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"namespace\":\"c\","
     "\"symbols\":[\"X\"]}}]}},"
     "{\"name\":\"again\",\"type\":\"Inner\"},{\"name\":\"e2\",\"type\":\"c.E\"},"
     "{\"name\":\"fx\",\"type\":{\"type\":\"fixed\",\"name\":\"d.F\",\"size\":4}},"
     "{\"name\":\"f2\",\"type\":{\"type\":\"d.F\"}}]}",
     "{\"name\":\"a.b.Outer\",\"type\":\"record\",\"fields\":[{\"name\":\"in\",\"type\":"
     "{\"name\":\"a.b.Inner\",\"type\":\"record\",\"fields\":[{\"name\":\"e\",\"type\":"
     "{\"name\":\"c.E\",\"type\":\"enum\",\"symbols\":[\"X\"]}}]}},"
     "{\"name\":\"again\",\"type\":\"a.b.Inner\"},{\"name\":\"e2\",\"type\":\"c.E\"},"
     "{\"name\":\"fx\",\"type\":{\"name\":\"d.F\",\"type\":\"fixed\",\"size\":4}},"
     "{\"name\":\"f2\",\"type\":\"d.F\"}]}"},
    {"{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"qoqnuz\",\"doc\":\"d\",\"fields\":["
     "{\"name\":\"id\",\"type\":{\"type\":\"string\",\"logicalType\":\"uuid\"},\"doc\":\"x\"},"
     "{\"name\":\"t\",\"type\":[\"null\",{\"type\":\"long\",\"logicalType\":"
     "\"timestamp-millis\"}],\"default\":null},"
     "{\"name\":\"d\",\"type\":{\"type\":\"int\",\"logicalType\":\"date\"}},"
     "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"string\"},\"default\":{}}]}",
     "{\"name\":\"qoqnuz.R\",\"type\":\"record\",\"fields\":[{\"name\":\"id\",\"type\":"
     "\"string\"},{\"name\":\"t\",\"type\":[\"null\",\"long\"]},{\"name\":\"d\",\"type\":"
     "\"int\"},{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"string\"}}]}"},
    {"{\"type\":\"record\",\"name\":\"A\",\"namespace\":\"x\",\"fields\":[{\"name\":\"b\","
     "\"type\":{\"type\":\"record\",\"name\":\"B\",\"namespace\":\"\",\"fields\":["
     "{\"name\":\"c\",\"type\":{\"type\":\"fixed\",\"name\":\"C\",\"size\":2}}]}}]}",
     "{\"name\":\"x.A\",\"type\":\"record\",\"fields\":[{\"name\":\"b\",\"type\":{\"name\":"
     "\"B\",\"type\":\"record\",\"fields\":[{\"name\":\"c\",\"type\":{\"name\":\"C\","
     "\"type\":\"fixed\",\"size\":2}}]}}]}"},
    {"{\"type\":\"record\",\"name\":\"p.q.R\",\"namespace\":\"ignored\",\"fields\":["
     "{\"name\":\"s\",\"type\":{\"type\":\"enum\",\"name\":\"S\",\"symbols\":[\"A\",\"B\"]}}]}",
     "{\"name\":\"p.q.R\",\"type\":\"record\",\"fields\":[{\"name\":\"s\",\"type\":{\"name\":"
     "\"p.q.S\",\"type\":\"enum\",\"symbols\":[\"A\",\"B\"]}}]}"},
    {"{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"I\",\"namespace\":\"n\","
     "\"fields\":[{\"name\":\"v\",\"type\":{\"type\":\"map\",\"values\":{\"type\":\"array\","
     "\"items\":\"I\"}}}]}}",
     "{\"type\":\"array\",\"items\":{\"name\":\"n.I\",\"type\":\"record\",\"fields\":[{\"name\":"
     "\"v\",\"type\":{\"type\":\"map\",\"values\":{\"type\":\"array\",\"items\":\"n.I\"}}}]}}"},
    {"{ \"type\" : \"enum\", \"name\" : \"\\u0066oo\", \"symbols\" : [ \"\\u0041\" ] }",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A\"]}"},
};

static const char *const bad_schemas[] = {
    "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"Nope\"}]}",
    "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
    "{\"name\":\"a\",\"type\":\"int\"}]}",
    "{\"type\":\"record\",\"name\":\"1R\",\"fields\":[]}",
    "{\"type\":\"array\"}",
    "{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}",
    "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
    "{\"type\":\"enum\",\"name\":\"R\",\"symbols\":[\"A\"]}}]}",
    "{not json",
    "42",
};

static void test_spec_vectors(void **state)
{
        (void)state;
        size_t with_fp = 0;
        for (size_t i = 0; i < sizeof(spec_vectors) / sizeof(spec_vectors[0]); i++) {
                char err[256] = "";
                char *c = qz_avro_canonical_form(spec_vectors[i].input, err, sizeof(err));
                if (!c)
                        fail_msg("vector %s: %s", spec_vectors[i].id, err);
                if (strcmp(c, spec_vectors[i].canonical) != 0)
                        fail_msg("vector %s: got %s want %s", spec_vectors[i].id, c,
                                 spec_vectors[i].canonical);
                if (spec_vectors[i].has_fp) {
                        with_fp++;
                        assert_int_equal(qz_avro_crc64(c, strlen(c)), (uint64_t)spec_vectors[i].fp);
                }
                free(c);
        }
        assert_true(with_fp >= 20);
}

static void test_more_vectors(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(more_vectors) / sizeof(more_vectors[0]); i++) {
                char err[256] = "";
                char *c = qz_avro_canonical_form(more_vectors[i].input, err, sizeof(err));
                if (!c)
                        fail_msg("case %zu: %s", i, err);
                if (strcmp(c, more_vectors[i].canonical) != 0)
                        fail_msg("case %zu: got %s want %s", i, c, more_vectors[i].canonical);
                free(c);
        }
}

static void test_bad_schemas(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(bad_schemas) / sizeof(bad_schemas[0]); i++) {
                char err[256] = "";
                char *c = qz_avro_canonical_form(bad_schemas[i], err, sizeof(err));
                if (c)
                        fail_msg("case %zu: accepted, canonical %s", i, c);
                assert_true(err[0] != '\0');
        }
}

static void test_crc64(void **state)
{
        (void)state;
        assert_int_equal(qz_avro_crc64("", 0), 0xc15d213aa4d7a795ULL);
        assert_int_equal(qz_avro_crc64("hello world", 11), 2906301498937520992ULL);
        assert_int_equal(qz_avro_crc64("\"int\"", 5), 8247732601305521295ULL);
}

/* ---- registry-based tests ---------------------------------------------- */

#define U1 "11111111-1111-4111-8111-111111111111"
#define U2 "22222222-2222-4222-8222-222222222222"
#define U3 "33333333-3333-4333-8333-333333333333"
#define T0 "1780000000000"

/* A realistic, complete value per schema (every field present, so the
 * decoded value must equal it). Keyed by schema name = file name. */
static const struct {
        const char *schema;
        const char *value;
} samples[] = {
    {"PlayEvent", "{\"event_id\":\"" U1 "\",\"user_id\":\"" U2 "\",\"track_id\":\"" U3 "\","
                  "\"played_at\":" T0 ",\"duration_played_ms\":183000,\"completed\":true,"
                  "\"source\":\"smart_playlist\",\"device_type\":\"mobile\","
                  "\"source_playlist_id\":\"" U1 "\"}"},
    {"RejectedEvent",
     "{\"original_topic\":\"plays.v1\",\"original_partition\":7,\"original_offset\":"
     "123456789012,\"original_key\":\"dXNlci0x\",\"original_value\":\"wwEAAQID/w==\","
     "\"reason\":\"decode_error\",\"errors\":[\"field 'played_at': expected integer\","
     "\"\\u00e9t\\u00e9 \\ud83c\\udfb5\"],\"service\":\"stats-aggregator\",\"rejected_at\":" T0
     "}"},
    {"TrackEvent", "{\"op\":\"upsert\",\"track_id\":\"" U1 "\",\"title\":\"Bohemian "
                   "Rhapsody\",\"artist_id\":\"" U2 "\",\"artist_name\":\"Queen\","
                   "\"album_id\":\"" U3 "\",\"album_title\":\"A Night at the Opera\","
                   "\"duration_ms\":354000,\"genres\":[\"rock\",\"progressive rock\"],"
                   "\"popularity\":97,\"released_at\":\"1975-10-31\",\"audio_url\":"
                   "\"s3://audio/1.flac\",\"updated_at\":" T0 "}"},
    {"AnalysisTask", "{\"task_id\":\"" U1 "\",\"task_type\":\"mood_detection\","
                     "\"entity_type\":\"track\",\"entity_id\":\"" U2 "\",\"priority\":7,"
                     "\"attempt\":2,\"not_before\":" T0 "}"},
    {"TrackFeatures",
     "{\"track_id\":\"" U1 "\",\"task_type\":\"energy_analysis\",\"tempo\":128.5,"
     "\"loudness_lufs\":-9.25,\"loudness_range\":6.5,\"energy\":0.875,\"valence\":0.5,"
     "\"danceability\":0.75,\"acousticness\":0.125,\"instrumentalness\":0.0625,"
     "\"mood\":\"energetic\",\"mood_tags\":[\"upbeat\",\"party\"],\"genre\":\"house\","
     "\"genre_confidence\":0.9375,\"analyzed_at\":" T0 "}"},
    {"PlaylistRequest", "{\"request_id\":\"" U1 "\",\"user_id\":\"" U2 "\","
                        "\"playlist_type\":\"artist_radio\",\"params\":{\"artist_id\":\"" U3
                        "\",\"limit\":\"50\"},\"reason\":\"manual\",\"run_id\":null}"},
    {"PlaylistGenerated", "{\"request_id\":\"" U1 "\",\"user_id\":\"" U2 "\","
                          "\"playlist_id\":\"" U3 "\",\"playlist_type\":\"daily_mix\","
                          "\"track_count\":50,\"generated_at\":" T0 ",\"expires_at\":"
                          "1780086400000,\"run_id\":\"" U1 "\"}"},
    {"AutomationCommand", "{\"command_id\":\"" U1 "\",\"job\":\"generate-smart-playlists\","
                          "\"run_id\":\"" U2 "\",\"params\":{\"user_id\":\"" U3 "\","
                          "\"playlist_type\":\"daily_mix\"},\"issued_at\":" T0 "}"},
};

static const char *schema_dir(char *buf, size_t size)
{
        const char *root = getenv("QZ_TEST_ROOT");
        if (!root || !*root)
                return "schemas";
        snprintf(buf, size, "%s/schemas", root);
        return buf;
}

static int setup_registry(void **state)
{
        char dir[1024], err[256] = "";
        struct qz_avro_registry *r = NULL;
        if (qz_avro_registry_load(schema_dir(dir, sizeof(dir)), &r, err, sizeof(err)) < 0) {
                fprintf(stderr, "registry load: %s\n", err);
                return -1;
        }
        *state = r;
        return 0;
}

static int teardown_registry(void **state)
{
        qz_avro_registry_free(*state);
        return 0;
}

static const char *sample_for(const char *schema)
{
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
                if (strcmp(samples[i].schema, schema) == 0)
                        return samples[i].value;
        return NULL;
}

static json_t *load(const char *text)
{
        json_error_t jerr;
        json_t *j = json_loads(text, 0, &jerr);
        if (!j)
                fail_msg("bad test JSON: %s: %s", jerr.text, text);
        return j;
}

static void encode_ok(const struct qz_avro_schema *s, const char *text, unsigned char **out,
                      size_t *len)
{
        char err[256] = "";
        json_t *v = load(text);
        if (qz_avro_encode_json(s, v, out, len, err, sizeof(err)) < 0)
                fail_msg("%s: encode: %s", qz_avro_schema_name(s), err);
        json_decref(v);
}

static void roundtrip(const struct qz_avro_registry *r, const struct qz_avro_schema *s,
                      const char *in, const char *want)
{
        unsigned char *buf = NULL;
        size_t len = 0;
        char err[256] = "";
        const struct qz_avro_schema *got_schema = NULL;
        json_t *got = NULL, *expect = load(want);

        encode_ok(s, in, &buf, &len);
        assert_true(len > 10);
        assert_int_equal(buf[0], 0xc3);
        assert_int_equal(buf[1], 0x01);
        uint64_t fp = 0;
        for (int i = 0; i < 8; i++)
                fp |= (uint64_t)buf[2 + i] << (8 * i);
        assert_int_equal(fp, qz_avro_schema_fingerprint(s));
        if (qz_avro_decode_json(r, buf, len, &got_schema, &got, err, sizeof(err)) < 0)
                fail_msg("%s: decode: %s", qz_avro_schema_name(s), err);
        assert_ptr_equal(got_schema, s);
        if (!json_equal(got, expect)) {
                char *a = json_dumps(got, JSON_SORT_KEYS), *b = json_dumps(expect, JSON_SORT_KEYS);
                fail_msg("%s: round trip\n got  %s\n want %s", qz_avro_schema_name(s), a, b);
        }
        json_decref(got);
        json_decref(expect);
        free(buf);
}

static void test_roundtrip_every_schema(void **state)
{
        const struct qz_avro_registry *r = *state;
        char dir[1024];
        DIR *d = opendir(schema_dir(dir, sizeof(dir)));
        struct dirent *de;
        size_t seen = 0;
        assert_non_null(d);
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                char name[256];
                if (n <= 5 || strcmp(de->d_name + n - 5, ".avsc") != 0)
                        continue;
                snprintf(name, sizeof(name), "%.*s", (int)(n - 5), de->d_name);
                const struct qz_avro_schema *s = qz_avro_schema_get(r, name);
                const char *sample = sample_for(name);
                if (!s)
                        fail_msg("%s: not in the registry (file name must be the record name)",
                                 name);
                if (!sample)
                        fail_msg("%s: no sample value in test_avro.c", name);
                /* Canonical form: full name, no logical types or docs. */
                char full[300];
                snprintf(full, sizeof(full), "{\"name\":\"qoqnuz.%s\",\"type\":\"record\"", name);
                assert_true(strncmp(qz_avro_schema_canonical(s), full, strlen(full)) == 0);
                assert_null(strstr(qz_avro_schema_canonical(s), "logicalType"));
                assert_null(strstr(qz_avro_schema_canonical(s), "doc"));
                const char *c = qz_avro_schema_canonical(s);
                assert_int_equal(qz_avro_schema_fingerprint(s), qz_avro_crc64(c, strlen(c)));
                roundtrip(r, s, sample, sample);
                seen++;
        }
        closedir(d);
        assert_int_equal(seen, sizeof(samples) / sizeof(samples[0]));
}

static void test_defaults_and_lookup(void **state)
{
        const struct qz_avro_registry *r = *state;
        const struct qz_avro_schema *s = qz_avro_schema_get(r, "PlayEvent");
        assert_non_null(s);
        assert_ptr_equal(qz_avro_schema_get(r, "qoqnuz.PlayEvent"), s);
        assert_string_equal(qz_avro_schema_name(s), "qoqnuz.PlayEvent");
        assert_null(qz_avro_schema_get(r, "NoSuchEvent"));
        assert_null(qz_avro_schema_get(r, "other.PlayEvent"));

        /* Omitted optional fields come back as their defaults. */
        roundtrip(r, s,
                  "{\"event_id\":\"" U1 "\",\"user_id\":\"" U2 "\",\"track_id\":\"" U3 "\","
                  "\"played_at\":0,\"duration_played_ms\":-1,\"completed\":false,"
                  "\"source\":\"\",\"device_type\":\"web\"}",
                  "{\"event_id\":\"" U1 "\",\"user_id\":\"" U2 "\",\"track_id\":\"" U3 "\","
                  "\"played_at\":0,\"duration_played_ms\":-1,\"completed\":false,"
                  "\"source\":\"\",\"device_type\":\"web\",\"source_playlist_id\":null}");
        roundtrip(r, qz_avro_schema_get(r, "TrackFeatures"),
                  "{\"track_id\":\"" U1 "\",\"energy\":1,\"analyzed_at\":9223372036854775807}",
                  "{\"track_id\":\"" U1 "\",\"task_type\":null,\"tempo\":null,"
                  "\"loudness_lufs\":null,\"loudness_range\":null,\"energy\":1.0,"
                  "\"valence\":null,\"danceability\":null,\"acousticness\":null,"
                  "\"instrumentalness\":null,\"mood\":null,\"mood_tags\":[],\"genre\":null,"
                  "\"genre_confidence\":null,\"analyzed_at\":9223372036854775807}");
        roundtrip(r, qz_avro_schema_get(r, "RejectedEvent"),
                  "{\"original_topic\":\"t\",\"original_partition\":-2147483648,"
                  "\"original_offset\":-9223372036854775808,\"original_value\":\"\","
                  "\"reason\":\"r\",\"service\":\"s\",\"rejected_at\":1}",
                  "{\"original_topic\":\"t\",\"original_partition\":-2147483648,"
                  "\"original_offset\":-9223372036854775808,\"original_key\":null,"
                  "\"original_value\":\"\",\"reason\":\"r\",\"errors\":null,\"service\":\"s\","
                  "\"rejected_at\":1}");
}

static const char *const PLAY_BASE = "\"event_id\":\"" U1 "\",\"user_id\":\"" U2 "\","
                                     "\"track_id\":\"" U3 "\",\"duration_played_ms\":1,"
                                     "\"completed\":true,\"source\":\"a\",\"device_type\":\"b\"";

static void test_encode_errors(void **state)
{
        const struct qz_avro_registry *r = *state;
        static const struct {
                const char *schema, *value_fmt, *error;
        } cases[] = {
            {"PlayEvent", "{%s}", "field 'played_at': missing"},
            {"PlayEvent", "{%s,\"played_at\":\"2026-01-01\"}",
             "field 'played_at': expected integer"},
            {"PlayEvent", "{%s,\"played_at\":1.5}", "field 'played_at': expected integer"},
            {"PlayEvent", "{%s,\"played_at\":1,\"bogus\":1}", "field 'bogus': unknown member"},
            {"PlayEvent", "{%s,\"played_at\":1,\"source_playlist_id\":5}",
             "field 'source_playlist_id': expected null or string"},
            {"PlayEvent", "{%s,\"played_at\":1,\"source_playlist_id\":\"not-a-uuid\"}",
             "field 'source_playlist_id': expected uuid string"},
            {"PlayEvent", "[%.0s1]", "value: expected object"},
            {"TrackEvent",
             "{%s\"op\":\"upsert\",\"track_id\":\"" U1 "\",\"title\":\"t\",\"artist_id\":\"" U2
             "\",\"artist_name\":\"a\",\"duration_ms\":1,\"genres\":[\"a\",7],"
             "\"popularity\":1,\"updated_at\":1}",
             "field 'genres[1]': expected string"},
            {"TrackEvent",
             "{%s\"op\":\"upsert\",\"track_id\":\"" U1 "\",\"title\":\"t\",\"artist_id\":\"" U2
             "\",\"artist_name\":\"a\",\"duration_ms\":4294967296,\"genres\":[],"
             "\"popularity\":1,\"updated_at\":1}",
             "field 'duration_ms': expected integer in int32 range"},
            {"AutomationCommand",
             "{%s\"command_id\":\"" U1 "\",\"job\":\"j\",\"run_id\":\"" U2 "\","
             "\"params\":{\"a\":1},\"issued_at\":1}",
             "field 'params.a': expected string"},
            {"RejectedEvent",
             "{%s\"original_topic\":\"t\",\"original_partition\":1,\"original_offset\":1,"
             "\"original_value\":\"not base64!\",\"reason\":\"r\",\"service\":\"s\","
             "\"rejected_at\":1}",
             "field 'original_value': expected base64 string"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char text[1024], err[256] = "";
                unsigned char *out = (unsigned char *)"x";
                size_t len = 99;
                const struct qz_avro_schema *s = qz_avro_schema_get(r, cases[i].schema);
                assert_non_null(s);
                snprintf(text, sizeof(text), cases[i].value_fmt,
                         strcmp(cases[i].schema, "PlayEvent") == 0 ? PLAY_BASE : "");
                json_t *v = load(text);
                if (qz_avro_encode_json(s, v, &out, &len, err, sizeof(err)) == 0)
                        fail_msg("case %zu: encoded %s", i, text);
                assert_null(out);
                assert_int_equal(len, 0);
                if (cases[i].error && !strstr(err, cases[i].error))
                        fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].error);
                assert_true(err[0] != '\0');
                json_decref(v);
        }
}

static void decode_fails(const struct qz_avro_registry *r, const unsigned char *buf, size_t len,
                         const char *want)
{
        char err[256] = "";
        json_t *out = (json_t *)1;
        if (qz_avro_decode_json(r, buf, len, NULL, &out, err, sizeof(err)) == 0)
                fail_msg("decoded %zu bytes, wanted failure '%s'", len, want ? want : "");
        assert_null(out);
        if (want && !strstr(err, want))
                fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_decode_errors(void **state)
{
        const struct qz_avro_registry *r = *state;
        for (size_t k = 0; k < sizeof(samples) / sizeof(samples[0]); k++) {
                unsigned char *buf = NULL, *copy;
                size_t len = 0;
                encode_ok(qz_avro_schema_get(r, samples[k].schema), samples[k].value, &buf, &len);
                copy = malloc(len + 1);
                assert_non_null(copy);

                memcpy(copy, buf, len);
                copy[0] = 0xc2;
                decode_fails(r, copy, len, "bad magic");
                memcpy(copy, buf, len);
                copy[1] = 0x00;
                decode_fails(r, copy, len, "bad magic");
                memcpy(copy, buf, len);
                copy[5] ^= 0x40;
                decode_fails(r, copy, len, "unknown schema fingerprint");
                /* Every proper prefix is an error (malloc'd exactly, so ASan
                 * catches any read past the end). */
                for (size_t l = 0; l < len; l++) {
                        unsigned char *pre = malloc(l ? l : 1);
                        assert_non_null(pre);
                        memcpy(pre, buf, l);
                        decode_fails(r, pre, l, l < 2 ? "bad magic" : NULL);
                        free(pre);
                }
                memcpy(copy, buf, len);
                copy[len] = 0;
                decode_fails(r, copy, len + 1, "trailing");
                free(copy);
                free(buf);
        }
}

static void test_decode_hostile(void **state)
{
        const struct qz_avro_registry *r = *state;
        const struct qz_avro_schema *s = qz_avro_schema_get(r, "RejectedEvent");
        unsigned char buf[64] = {0xc3, 0x01};
        uint64_t fp = qz_avro_schema_fingerprint(s);
        for (int i = 0; i < 8; i++)
                buf[2 + i] = (unsigned char)(fp >> (8 * i));

        /* original_topic with a huge length prefix. */
        memcpy(buf + 10, "\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10);
        decode_fails(r, buf, 20, "field 'original_topic'");
        /* negative length (-1 zigzag = 0x01). */
        buf[10] = 0x01;
        decode_fails(r, buf, 11, "negative length");
        /* varint longer than 10 bytes. */
        memset(buf + 10, 0xff, 12);
        decode_fails(r, buf, 22, "varint too long");
        /* union index out of range in original_key. */
        memcpy(buf + 10, "\x02t\x02\x02\x06", 5);
        decode_fails(r, buf, 15, "field 'original_key': index out of range");
        /* string that is not UTF-8. */
        memcpy(buf + 10, "\x02\xff", 2);
        decode_fails(r, buf, 12, NULL);

        /* A uuid field that is not a uuid (hand-edited valid encoding). */
        unsigned char *pe = NULL;
        size_t pelen = 0;
        encode_ok(qz_avro_schema_get(r, "PlayEvent"), sample_for("PlayEvent"), &pe, &pelen);
        pe[11] = 'z'; /* first character of event_id */
        decode_fails(r, pe, pelen, "field 'event_id': not a uuid string");
        free(pe);

        /* Random mutations of valid encodings never crash. */
        unsigned int seed = 12345;
        for (size_t k = 0; k < sizeof(samples) / sizeof(samples[0]); k++) {
                unsigned char *enc = NULL;
                size_t len = 0;
                encode_ok(qz_avro_schema_get(r, samples[k].schema), samples[k].value, &enc, &len);
                for (int iter = 0; iter < 3000; iter++) {
                        unsigned char *m = malloc(len);
                        char err[256];
                        json_t *out = NULL;
                        assert_non_null(m);
                        memcpy(m, enc, len);
                        int flips = 1 + rand_r(&seed) % 4;
                        for (int f = 0; f < flips; f++) {
                                size_t pos = 10 + (size_t)rand_r(&seed) % (len - 10);
                                m[pos] = (unsigned char)rand_r(&seed);
                        }
                        size_t mlen = iter % 3 == 0 ? 10 + (size_t)rand_r(&seed) % (len - 9) : len;
                        if (qz_avro_decode_json(r, m, mlen, NULL, &out, err, sizeof(err)) == 0) {
                                assert_non_null(out);
                                json_decref(out);
                        } else {
                                assert_null(out);
                        }
                        free(m);
                }
                free(enc);
        }
}

struct thread_arg {
        const struct qz_avro_registry *r;
        int failures;
};

static void *worker(void *p)
{
        struct thread_arg *a = p;
        for (int i = 0; i < 500; i++) {
                const char *name = samples[i % (sizeof(samples) / sizeof(samples[0]))].schema;
                const struct qz_avro_schema *s = qz_avro_schema_get(a->r, name);
                json_error_t jerr;
                json_t *v = json_loads(sample_for(name), 0, &jerr), *back = NULL;
                unsigned char *buf = NULL;
                size_t len = 0;
                char err[256];
                if (!v || qz_avro_encode_json(s, v, &buf, &len, err, sizeof(err)) < 0 ||
                    qz_avro_decode_json(a->r, buf, len, NULL, &back, err, sizeof(err)) < 0 ||
                    !json_equal(v, back))
                        a->failures++;
                json_decref(v);
                json_decref(back);
                free(buf);
        }
        return NULL;
}

static void test_threads(void **state)
{
        pthread_t t[8];
        struct thread_arg a[8];
        for (int i = 0; i < 8; i++) {
                a[i] = (struct thread_arg){.r = *state};
                assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(a[i].failures, 0);
        }
}

static void test_load_errors(void **state)
{
        (void)state;
        char err[256] = "";
        struct qz_avro_registry *r = (struct qz_avro_registry *)1;
        assert_int_equal(qz_avro_registry_load("/nonexistent-qz-dir", &r, err, sizeof(err)), -1);
        assert_null(r);
        assert_non_null(strstr(err, "/nonexistent-qz-dir"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_spec_vectors),
            cmocka_unit_test(test_more_vectors),
            cmocka_unit_test(test_bad_schemas),
            cmocka_unit_test(test_crc64),
            cmocka_unit_test(test_load_errors),
            cmocka_unit_test_setup_teardown(test_roundtrip_every_schema, setup_registry,
                                            teardown_registry),
            cmocka_unit_test_setup_teardown(test_defaults_and_lookup, setup_registry,
                                            teardown_registry),
            cmocka_unit_test_setup_teardown(test_encode_errors, setup_registry, teardown_registry),
            cmocka_unit_test_setup_teardown(test_decode_errors, setup_registry, teardown_registry),
            cmocka_unit_test_setup_teardown(test_decode_hostile, setup_registry, teardown_registry),
            cmocka_unit_test_setup_teardown(test_threads, setup_registry, teardown_registry),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
