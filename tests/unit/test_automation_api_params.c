/* test_automation_api_params.c - POST smart-playlists: the playlist types' parameter gate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../services/automation-api/api_playlists.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* Runs the gate on a JSON params text (NULL = no params); returns the out map or NULL. */
static json_t *check(const char *type, const char *params, char *err, size_t n)
{
        json_t *p = params ? json_loads(params, 0, NULL) : NULL;
        if (params)
                assert_non_null(p);
        json_t *out = playlists_check_request(type, p, err, n);
        json_decref(p);
        return out;
}

static void test_accepted(void **state)
{
        (void)state;
        static const struct {
                const char *type, *params, *key, *want;
        } ok[] = {
            {"daily_mix", NULL, NULL, NULL},
            {"daily_mix", "{}", NULL, NULL},
            {"daily_mix", "{\"limit\": 25}", "limit", "25"},
            {"discovery_weekly", "{\"limit\": \"10\"}", "limit", "10"},
            {"artist_radio", "{\"artist_id\": \"7b1e9a3c-1d2f-4c5b-9a8e-0f1e2d3c4b5a\"}",
             "artist_id", "7b1e9a3c-1d2f-4c5b-9a8e-0f1e2d3c4b5a"},
            {"track_radio", "{\"track_id\": \"7b1e9a3c-1d2f-4c5b-9a8e-0f1e2d3c4b5a\"}", "track_id",
             "7b1e9a3c-1d2f-4c5b-9a8e-0f1e2d3c4b5a"},
            {"mood", "{\"mood\": \"happy\"}", "mood", "happy"},
            {"activity", "{\"activity\": \"workout\"}", "activity", "workout"},
            {"tempo", "{\"min_bpm\": 90}", "min_bpm", "90"},
            {"tempo", "{\"max_bpm\": \"140\"}", "max_bpm", "140"},
            {"tempo", "{\"min_bpm\": 120.5, \"max_bpm\": 120.5}", "min_bpm", "120.5"},
            {"genre_mix", "{\"genres\": [\"rock\", \"hip hop\"]}", "genres", "rock,hip hop"},
            {"genre_mix", "{\"genres\": \"rock, jazz\"}", "genres", "rock, jazz"},
            {"decade", "{\"decade\": 1990}", "decade", "1990"},
            {"decade", "{\"decade\": \"1980s\"}", "decade", "1980s"},
        };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                char err[512] = "";
                json_t *out = check(ok[i].type, ok[i].params, err, sizeof(err));
                if (!out)
                        fail_msg("%s %s refused: %s", ok[i].type, ok[i].params, err);
                if (ok[i].key) {
                        const char *v = json_string_value(json_object_get(out, ok[i].key));
                        if (!v || strcmp(v, ok[i].want) != 0)
                                fail_msg("%s %s: %s = %s, want %s", ok[i].type, ok[i].params,
                                         ok[i].key, v ? v : "(none)", ok[i].want);
                }
                json_decref(out);
        }
}

static void test_refused(void **state)
{
        (void)state;
        static const struct {
                const char *type, *params, *in_message;
        } bad[] = {
            {"weekly_jam", NULL, "daily_mix"},
            {NULL, NULL, "valid"},
            {"daily_mix", "[1]", "object"},
            {"daily_mix", "{\"mood\": \"x\"}", "valid params: limit"},
            {"daily_mix", "{\"limit\": 0}", "limit"},
            {"daily_mix", "{\"limit\": 501}", "limit"},
            {"daily_mix", "{\"limit\": 2.5}", "limit"},
            {"artist_radio", NULL, "needs params.artist_id"},
            {"artist_radio", "{\"artist_id\": \"nope\"}", "UUID"},
            {"track_radio", "{\"artist_id\": \"7b1e9a3c-1d2f-4c5b-9a8e-0f1e2d3c4b5a\"}",
             "valid params: track_id, limit"},
            {"mood", "{}", "needs params.mood"},
            {"mood", "{\"mood\": \"\"}", "word"},
            {"mood", "{\"mood\": {\"a\": 1}}", "string or a number"},
            {"mood", "{\"mood\": [\"a\"]}", "string or a number"},
            {"activity", "{\"activity\": \"dancing\"}", "workout"},
            {"tempo", "{\"bpm\": 120}", "min_bpm, max_bpm, limit"},
            {"tempo", "{}", "min_bpm and/or"},
            {"tempo", "{\"min_bpm\": 19}", "20 to 300"},
            {"tempo", "{\"max_bpm\": \"fast\"}", "20 to 300"},
            {"tempo", "{\"min_bpm\": 150, \"max_bpm\": 120}", "above"},
            {"genre_mix", "{}", "needs params.genres"},
            {"genre_mix", "{\"genres\": \" , ,\"}", "1-8"},
            {"genre_mix", "{\"genres\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}",
             "1-8"},
            {"genre_mix", "{\"genres\": [\"ro\\\"ck\"]}", "quotes"},
            {"genre_mix", "{\"genres\": [1]}", "list of strings"},
            {"decade", "{\"decade\": \"1995\"}", "decade like"},
            {"decade", "{\"decade\": \"1990x\"}", "decade like"},
            {"decade", "{\"decade\": 1800}", "decade like"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char err[1024] = "";
                json_t *out = check(bad[i].type, bad[i].params, err, sizeof(err));
                if (out) {
                        json_decref(out);
                        fail_msg("%s %s accepted", bad[i].type ? bad[i].type : "(null)",
                                 bad[i].params ? bad[i].params : "(none)");
                }
                if (!strstr(err, bad[i].in_message))
                        fail_msg("%s %s: message '%s' lacks '%s'",
                                 bad[i].type ? bad[i].type : "(null)",
                                 bad[i].params ? bad[i].params : "(none)", err, bad[i].in_message);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_accepted),
                                           cmocka_unit_test(test_refused)};
        return cmocka_run_group_tests(tests, NULL, NULL);
}
