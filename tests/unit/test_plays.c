/* test_plays.c - play-ingestor body parsing and per-item validation, table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/play-ingestor/trackset.h"
#include "../../services/play-ingestor/playenc.h"
#include "../../services/play-ingestor/plays.h"
#include "avro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1780000000000LL /* 2026-05-28 */
#define U1  "11111111-1111-4111-8111-111111111111"
#define T1  "22222222-2222-4222-8222-222222222222"
#define BASE                                                                                       \
        "\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":1000,"              \
        "\"source\":\"album\",\"device_type\":\"mobile\""

static const struct plays_rules rules = {
    .now_ms = NOW, .max_future_ms = 300000, .horizon_ms = 30LL * 86400000, .max_items = 3};

static const struct {
        const char *item;
        const char *error; /* substring of the expected error; NULL = valid */
} cases[] = {
    {"{" BASE "}", NULL},
    {"{" BASE ",\"completed\":true,\"played_at\":\"2026-05-28T20:26:00Z\"}", NULL},
    {"{" BASE ",\"source_playlist_id\":\"" T1 "\"}", NULL},
    {"{" BASE ",\"event_id\":\"AAAAAAAA-1111-4111-8111-111111111111\"}", NULL},
    {"{" BASE ",\"color\":\"red\"}", "unknown field 'color'"},
    {"{\"track_id\":\"" T1 "\",\"duration_played_ms\":1,\"source\":\"a\",\"device_type\":\"b\"}",
     "user_id"},
    {"{" BASE ",\"event_id\":\"nope\"}", "event_id"},
    {"{" BASE ",\"completed\":\"yes\"}", "completed"},
    {"{" BASE ",\"played_at\":\"yesterday\"}", "played_at"},
    {"{" BASE ",\"played_at\":\"2030-01-01T00:00:00Z\"}", "future"},
    {"{" BASE ",\"played_at\":\"2020-01-01T00:00:00Z\"}", "horizon"},
    {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":-5,"
     "\"source\":\"album\",\"device_type\":\"mobile\"}",
     "duration_played_ms"},
    {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":1.5,"
     "\"source\":\"album\",\"device_type\":\"mobile\"}",
     "duration_played_ms"},
    {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":1,"
     "\"source\":\"Album Page\",\"device_type\":\"mobile\"}",
     "source"},
    {"[1]", "JSON object"},
};

static void test_items_table(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char err[256] = "";
                json_error_t jerr;
                json_t *item = json_loads(cases[i].item, 0, &jerr);
                assert_non_null(item);
                json_t *ev = plays_validate(item, &rules, err, sizeof(err));
                if (!cases[i].error) {
                        if (!ev)
                                fail_msg("case %zu: unexpected error %s", i, err);
                } else {
                        assert_null(ev);
                        if (!strstr(err, cases[i].error))
                                fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].error);
                }
                json_decref(ev);
                json_decref(item);
        }
}

static void test_event_fields(void **state)
{
        (void)state;
        char err[256];
        json_t *item = json_loads("{" BASE ",\"event_id\":\"AAAAAAAA-1111-4111-8111-111111111111\","
                                  "\"played_at\":\"2026-05-28T20:26:00.250+01:00\"}",
                                  0, NULL);
        json_t *ev = plays_validate(item, &rules, err, sizeof(err));
        assert_non_null(ev);
        assert_string_equal(json_string_value(json_object_get(ev, "event_id")),
                            "aaaaaaaa-1111-4111-8111-111111111111");
        assert_int_equal(json_integer_value(json_object_get(ev, "played_at")),
                         1779996360250LL); /* 19:26:00.250Z */
        assert_false(json_is_true(json_object_get(ev, "completed")));
        assert_true(json_is_null(json_object_get(ev, "source_playlist_id")));
        json_decref(ev);
        json_decref(item);

        /* absent event_id and played_at: generated id, now */
        item = json_loads("{" BASE "}", 0, NULL);
        ev = plays_validate(item, &rules, err, sizeof(err));
        assert_non_null(ev);
        assert_int_equal(strlen(json_string_value(json_object_get(ev, "event_id"))), 36);
        assert_int_equal(json_integer_value(json_object_get(ev, "played_at")), NOW);
        json_decref(ev);
        json_decref(item);
}

static void test_bodies(void **state)
{
        (void)state;
        struct plays_batch b;
        char err[256];
        const char *arr = "[{" BASE "},{\"x\":1},{" BASE "}]";
        assert_int_equal(plays_parse(arr, strlen(arr), false, &rules, &b, err, sizeof(err)), 0);
        assert_int_equal(b.n, 3);
        assert_true(b.items[0].ok);
        assert_false(b.items[1].ok);
        assert_non_null(strstr(b.items[1].error, "unknown field 'x'"));
        assert_true(b.items[2].ok);
        plays_batch_free(&b);

        const char *nd = "{" BASE "}\n\n{not json}\r\n{" BASE "}";
        assert_int_equal(plays_parse(nd, strlen(nd), true, &rules, &b, err, sizeof(err)), 0);
        assert_int_equal(b.n, 3);
        assert_false(b.items[1].ok);
        assert_non_null(strstr(b.items[1].error, "invalid JSON"));
        plays_batch_free(&b);

        const char *too_many = "[{" BASE "},{" BASE "},{" BASE "},{" BASE "}]";
        assert_int_equal(
            plays_parse(too_many, strlen(too_many), false, &rules, &b, err, sizeof(err)), -2);
        assert_non_null(strstr(err, "too many"));

        static const char *bad[] = {"", "[]", "42", "{", "\"str\""};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(
                    plays_parse(bad[i], strlen(bad[i]), false, &rules, &b, err, sizeof(err)), -1);
        assert_int_equal(plays_parse("\n\n", 2, true, &rules, &b, err, sizeof(err)), -1);
}

/* Each rule names its own metric reason. */
static void test_reasons(void **state)
{
        (void)state;
        static const struct {
                const char *item, *reason;
        } rs[] = {
            {"[]", "not_object"},
            {"{" BASE ",\"color\":1}", "unknown_field"},
            {"{" BASE ",\"event_id\":\"x\"}", "event_id"},
            {"{\"track_id\":\"" T1 "\",\"duration_played_ms\":1,\"source\":\"a\","
             "\"device_type\":\"b\"}",
             "user_id"},
            {"{\"user_id\":\"" U1 "\",\"track_id\":7,\"duration_played_ms\":1,"
             "\"source\":\"a\",\"device_type\":\"b\"}",
             "track_id"},
            {"{" BASE ",\"played_at\":\"2026-13-01T00:00:00Z\"}", "played_at"},
            {"{" BASE ",\"played_at\":\"2030-01-01T00:00:00Z\"}", "played_at_future"},
            {"{" BASE ",\"played_at\":\"2000-01-01T00:00:00Z\"}", "played_at_too_old"},
            {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":"
             "86400001,\"source\":\"a\",\"device_type\":\"b\"}",
             "duration_played_ms"},
            {"{" BASE ",\"completed\":1}", "completed"},
            {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":1,"
             "\"source\":\"\",\"device_type\":\"b\"}",
             "source"},
            {"{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":1,"
             "\"source\":\"a\",\"device_type\":\"TV\"}",
             "device_type"},
            {"{" BASE ",\"source_playlist_id\":\"abc\"}", "source_playlist_id"},
        };
        for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
                char err[256] = "";
                const char *reason = NULL;
                json_t *item = json_loads(rs[i].item, JSON_DECODE_ANY, NULL);
                assert_non_null(item);
                json_t *ev = plays_validate_reason(item, &rules, &reason, err, sizeof(err));
                if (ev || !reason || strcmp(reason, rs[i].reason) != 0)
                        fail_msg("case %zu: reason %s, expected %s (%s)", i,
                                 reason ? reason : "(none)", rs[i].reason, err);
                json_decref(item);
        }
        /* an unparsable NDJSON line is "invalid_json" */
        struct plays_batch b;
        char err[256];
        assert_int_equal(plays_parse("{oops}", 6, true, &rules, &b, err, sizeof(err)), 0);
        assert_string_equal(b.items[0].reason, "invalid_json");
        plays_batch_free(&b);
}

/* The scanner (plays_parse) and the jansson reference answer alike, whether the
 * scanner takes a body or hands it over. */
static void assert_same_parse(const char *body, bool ndjson)
{
        struct plays_batch a, b;
        char ea[256] = "", eb[256] = "";
        int ra = plays_parse(body, strlen(body), ndjson, &rules, &a, ea, sizeof(ea));
        int rb = plays_parse_reference(body, strlen(body), ndjson, &rules, &b, eb, sizeof(eb));
        if (ra != rb)
                fail_msg("%s: rc %d vs %d (%s / %s)", body, ra, rb, ea, eb);
        if (ra != 0) {
                assert_string_equal(ea, eb);
                return;
        }
        assert_int_equal(a.n, b.n);
        for (size_t i = 0; i < a.n; i++) {
                struct plays_item *x = &a.items[i], *y = &b.items[i];
                if (x->ok != y->ok)
                        fail_msg("%s: item %zu ok %d vs %d", body, i, x->ok, y->ok);
                if (!x->ok) {
                        assert_string_equal(x->error, y->error);
                        assert_string_equal(x->reason, y->reason);
                        continue;
                }
                assert_int_equal(x->play.event_id_generated, y->play.event_id_generated);
                if (x->play.event_id_generated)
                        memcpy(x->play.event_id, y->play.event_id, sizeof(x->play.event_id));
                assert_memory_equal(&x->play, &y->play, sizeof(x->play));
        }
        plays_batch_free(&a);
        plays_batch_free(&b);
}

static void test_scanner_matches_reference(void **state)
{
        (void)state;
        static const char *json[] = {
            "{" BASE "}",
            " \t\r\n[ {" BASE "} ,\n{ " BASE " , \"completed\" : true } ]\n",
            "{" BASE ",\"event_id\":\"AAAAAAAA-1111-4111-8111-111111111111\",\"completed\":false,"
            "\"played_at\":\"2026-05-28T20:26:00.250+01:00\",\"source_playlist_id\":\"" T1 "\"}",
            "{" BASE ",\"event_id\":null,\"played_at\":null,\"completed\":null,"
            "\"source_playlist_id\":null}",
            "{" BASE ",\"completed\":null,\"completed\":true}",
            "{" BASE ",\"completed\":true,\"completed\":null}",
            "{" BASE ",\"completed\":true,\"completed\":false}",
            "{\"user_id\":null," BASE "}",
            "{" BASE ",\"user_id\":null}",
            "{" BASE ",\"source\":\"\\u0061lbum\"}",
            "{" BASE ",\"source\":\"alb\\\"um\"}",
            "{" BASE ",\"duration_played_ms\":1.0}",
            "{" BASE ",\"duration_played_ms\":1e3}",
            "{" BASE ",\"duration_played_ms\":-0}",
            "{" BASE ",\"duration_played_ms\":0}",
            "{" BASE ",\"duration_played_ms\":01}",
            "{" BASE ",\"duration_played_ms\":86400001}",
            "{" BASE ",\"duration_played_ms\":123456789012345678901234}",
            "{" BASE ",\"completed\":truex}",
            "{" BASE ",\"completed\":1}",
            "{" BASE ",\"x\":{\"y\":[1,2]}}",
            "{" BASE "} x",
            "{" BASE "}{}",
            "[{" BASE "},]",
            "[{" BASE "},{}]",
            "[{" BASE "},42]",
            "[{" BASE "},{" BASE ",\"played_at\":\"2036-01-01T00:00:00Z\"}]",
            "[{" BASE "},{" BASE ",\"played_at\":\"2016-01-01T00:00:00Z\"}]",
            "[{" BASE "},{" BASE ",\"played_at\":\"yesterday\"}]",
            "{" BASE ",\"device_type\":\"TV\"}",
            "{" BASE ",\"source\":\"caf\xc3\xa9\"}",
            "\xef\xbb\xbf{" BASE "}",
            "[{" BASE "},{" BASE "},{" BASE "}]",
            "[{" BASE "},{" BASE "},{" BASE "},{" BASE "}]",
            "{" BASE ",\"user_id\":\"" U1 "\"}",
            "{}",
            "[]",
            "",
            "{" BASE,
        };
        for (size_t i = 0; i < sizeof(json) / sizeof(json[0]); i++) {
                assert_same_parse(json[i], false);
                assert_same_parse(json[i], true);
        }
        assert_same_parse("{" BASE "}\n\n {" BASE "} \r\n\v{" BASE "}", true);
        assert_same_parse("{" BASE "}\n[{" BASE "}]", true);
}

static struct qz_avro_registry *load_registry(void)
{
        char dir[1024], err[256];
        const char *root = getenv("QZ_TEST_ROOT");
        snprintf(dir, sizeof(dir), "%s/schemas", root && *root ? root : ".");
        struct qz_avro_registry *r = NULL;
        if (qz_avro_registry_load(dir, &r, err, sizeof(err)) != 0)
                fail_msg("schemas: %s", err);
        return r;
}

/* The hot-path encoder writes exactly what the generic codec writes. */
static void test_playenc_matches_avro(void **state)
{
        (void)state;
        struct qz_avro_registry *r = load_registry();
        const struct qz_avro_schema *s = qz_avro_schema_get(r, "PlayEvent");
        assert_non_null(s);
        static const char *items[] = {
            "{" BASE "}",
            "{" BASE ",\"completed\":true,\"played_at\":\"2026-05-28T20:26:00.123Z\","
            "\"source_playlist_id\":\"" T1 "\"}",
            "{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":0,"
            "\"source\":\"smart_playlist\",\"device_type\":\"abcdefghijklmnopqrstuvwxyz012345\","
            "\"played_at\":\"2026-05-20T00:00:00Z\"}",
            "{\"user_id\":\"" U1 "\",\"track_id\":\"" T1 "\",\"duration_played_ms\":86400000,"
            "\"source\":\"a\",\"device_type\":\"b\"}",
        };
        for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
                char err[256];
                json_t *item = json_loads(items[i], 0, NULL);
                struct play p;
                const char *reason;
                assert_int_equal(plays_check(item, &rules, &p, &reason, err, sizeof(err)), 0);
                json_t *ev = plays_to_json(&p);
                assert_non_null(ev);
                unsigned char *want = NULL, got[512];
                size_t want_len = 0;
                assert_int_equal(qz_avro_encode_json(s, ev, &want, &want_len, err, sizeof(err)), 0);
                size_t n = playenc_encode(qz_avro_schema_fingerprint(s), &p, got, sizeof(got));
                assert_int_equal(n, want_len);
                assert_memory_equal(got, want, n);
                assert_true(n <= PLAYENC_MAX(4 * 36 + 2 * 32));
                /* too small a buffer is refused, not overrun */
                assert_int_equal(playenc_encode(qz_avro_schema_fingerprint(s), &p, got, n - 1), 0);
                free(want);
                json_decref(ev);
                json_decref(item);
        }
        qz_avro_registry_free(r);
}

static void test_trackids(void **state)
{
        (void)state;
        struct trackids *s = trackids_new(2);
        char id[40];
        for (int i = 1; i <= 5000; i++) {
                snprintf(id, sizeof(id), "%08x-0000-4000-8000-%012x", i * 7919, i);
                assert_int_equal(trackids_add(s, id), 0);
        }
        assert_int_equal(trackids_add(s, "00001EEF-0000-4000-8000-000000000001"), 0); /* dup */
        assert_int_equal(trackids_size(s), 5000);
        for (int i = 1; i <= 5000; i++) {
                snprintf(id, sizeof(id), "%08X-0000-4000-8000-%012X", i * 7919, i); /* any case */
                assert_true(trackids_has(s, id));
                snprintf(id, sizeof(id), "%08x-0000-4000-8000-%012x", i * 7919, i + 1);
                assert_false(trackids_has(s, id));
        }
        assert_int_equal(trackids_add(s, "not-a-uuid"), -1);
        assert_false(trackids_has(s, "not-a-uuid"));
        assert_false(trackids_has(s, "00000000-0000-0000-0000-000000000000"));
        trackids_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_items_table),
            cmocka_unit_test(test_event_fields),
            cmocka_unit_test(test_bodies),
            cmocka_unit_test(test_reasons),
            cmocka_unit_test(test_scanner_matches_reference),
            cmocka_unit_test(test_playenc_matches_avro),
            cmocka_unit_test(test_trackids),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
