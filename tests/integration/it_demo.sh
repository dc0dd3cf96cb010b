#!/usr/bin/env bash
# it_demo.sh - qoqnuzctl demo against a migrated Postgres: catalog rows + trigger tasks, valid WAV
# files, bulk plays that respect the data rules, and idempotent reruns.
# Needs QZ_TEST_PG_DSN (migrated, may hold other tests' rows) and QZ_TEST_BIN.
set -uo pipefail

fail() { echo "it_demo: FAIL: $*" >&2; exit 1; }
[ -n "${QZ_TEST_PG_DSN:-}" ] || fail "QZ_TEST_PG_DSN is not set"
[ -n "${QZ_TEST_BIN:-}" ] || fail "QZ_TEST_BIN is not set"
CTL=$QZ_TEST_BIN/qoqnuzctl
[ -x "$CTL" ] || fail "$CTL not built"
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)
[ -n "$PSQL" ] || fail "psql not found"

TMP=$(mktemp -d /tmp/it_demo.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
DB=it_demo_$$
sql() { "$PSQL" "$1" -v ON_ERROR_STOP=1 -Atqc "$2"; }

# A database of our own, migrated, so counts are exact whatever other tests do.
ADMIN_DSN=${QZ_TEST_PG_DSN%/*}/postgres
sql "$ADMIN_DSN" "CREATE DATABASE $DB" || fail "cannot create database $DB"
trap 'sql "$ADMIN_DSN" "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$TMP"' EXIT
DSN=${QZ_TEST_PG_DSN%/*}/$DB
QOQNUZ_PG_DSN=$DSN QOQNUZ_SQL_DIR=${QZ_TEST_ROOT:-.}/sql "$CTL" migrate >"$TMP/migrate.log" 2>&1 ||
  { cat "$TMP/migrate.log" >&2; fail "migrate failed"; }

export QOQNUZ_PG_DSN=$DSN QOQNUZ_MEDIA_DIR=$TMP/media
ARGS=(--users 50 --artists 25 --tracks 300 --plays 6000 --days 120 --seed 7 --audio 5)

"$CTL" demo "${ARGS[@]}" --catalog-only >"$TMP/out1" 2>"$TMP/err1" || { cat "$TMP/err1" >&2; fail "catalog-only run failed"; }
"$CTL" demo "${ARGS[@]}" --bulk --plays-only >"$TMP/out2" 2>"$TMP/err2" || { cat "$TMP/err2" >&2; fail "bulk run failed"; }
grep -q "reconcile" "$TMP/out2" || fail "--bulk did not say that the reconcile jobs must run"

counts() {
  sql "$DSN" "SELECT (SELECT count(*) FROM artists), (SELECT count(*) FROM tracks), (SELECT count(*) FROM users),
      (SELECT count(*) FROM play_history), (SELECT count(*) FROM background_tasks),
      (SELECT count(*) FROM tracks WHERE audio_url IS NOT NULL),
      (SELECT md5(string_agg(event_id::text || played_at::text || track_id::text, ',' ORDER BY event_id)) FROM play_history)"
}
first=$(counts)
IFS='|' read -r artists tracks users plays tasks with_audio _ <<<"$first"
[ "$artists" = 25 ] || fail "artists: $artists, want 25"
[ "$tracks" = 300 ] || fail "tracks: $tracks, want 300"
[ "$users" = 50 ] || fail "users: $users, want 50"
[ "$plays" = 6000 ] || fail "plays: $plays, want 6000"
[ "$tasks" = 900 ] || fail "background_tasks: $tasks, want 3 per track (900)"
[ "$with_audio" = 5 ] || fail "tracks with audio_url: $with_audio, want 5"

# The data rules the playlist generators rely on.
check() { # check NAME SQL (must print t)
  [ "$(sql "$DSN" "$2")" = t ] || fail "$1"
}
check "a play before its track's release" \
  "SELECT NOT EXISTS (SELECT 1 FROM play_history p JOIN tracks t ON t.id = p.track_id WHERE p.played_at < t.released_at)"
check "duration_played_ms above the track's duration" \
  "SELECT NOT EXISTS (SELECT 1 FROM play_history p JOIN tracks t ON t.id = p.track_id WHERE p.duration_played_ms > t.duration_ms)"
check "a play outside the 120-day span or in the future" \
  "SELECT min(played_at) > now() - interval '122 days' AND max(played_at) <= now() FROM play_history"
check "a play of an unknown user or track" \
  "SELECT NOT EXISTS (SELECT 1 FROM play_history p WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.user_id)
                                                   OR NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = p.track_id))"
check "completed share not near 80%" \
  "SELECT avg(completed::int) BETWEEN 0.7 AND 0.9 FROM play_history"
check "sources/devices outside the vocabulary" \
  "SELECT bool_and(source IN ('album','playlist','radio','search','smart_playlist')
              AND device_type IN ('mobile','desktop','web','smart_speaker')) FROM play_history"
check "track durations outside 2-7 min" \
  "SELECT bool_and(duration_ms BETWEEN 120000 AND 420000 AND popularity BETWEEN 0 AND 100) FROM tracks"
check "no releases in the last 90 days (discovery_weekly/new_for_you need some)" \
  "SELECT count(*) >= 10 FROM tracks WHERE released_at > current_date - 90"
check "no forgotten favorites (3+ plays, none in 60 days)" \
  "SELECT count(*) >= 5 FROM (SELECT 1 FROM play_history GROUP BY user_id, track_id
                              HAVING count(*) >= 3 AND max(played_at) < now() - interval '60 days') f"
check "users do not have distinct tastes (top genre under 40% of their plays)" \
  "SELECT avg(share) > 0.4 FROM (SELECT user_id, max(c)::float / sum(c) AS share FROM
     (SELECT p.user_id, t.genres[1] g, count(*) c FROM play_history p JOIN tracks t ON t.id = p.track_id GROUP BY 1, 2) x
   GROUP BY 1) y"
check "fewer than 20 genres" "SELECT count(DISTINCT g) = 20 FROM tracks, unnest(genres) g"
check "published_at set by the loader (the relay's job)" \
  "SELECT bool_and(published_at IS NULL) FROM tracks"

# The WAV files: valid 16-bit mono 22050 Hz PCM, 8-15 s, at the paths in tracks.audio_url.
sql "$DSN" "SELECT audio_url FROM tracks WHERE audio_url IS NOT NULL" >"$TMP/paths"
/usr/bin/python3 - "$TMP/paths" <<'EOF' || fail "bad WAV files"
import sys, wave, os, struct
paths = [l.strip() for l in open(sys.argv[1]) if l.strip()]
assert len(paths) == 5, paths
for p in paths:
    assert os.path.isabs(p), p
    with wave.open(p) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050), p
        n = w.getnframes()
        assert 8 * 22050 <= n <= 15 * 22050 + 1, (p, n)
        x = struct.unpack("<%dh" % n, w.readframes(n))
        assert max(abs(v) for v in x) > 3000, "silent file " + p
EOF

# Reruns add nothing: same ids, same plays.
"$CTL" demo "${ARGS[@]}" --bulk >"$TMP/out3" 2>"$TMP/err3" || { cat "$TMP/err3" >&2; fail "rerun failed"; }
second=$(counts)
[ "$first" = "$second" ] || fail "rerun changed the data: $first -> $second"
grep -q "(0 new)" "$TMP/out3" || fail "rerun reported new plays: $(cat "$TMP/out3")"

# Bad flags are usage errors (exit 2).
"$CTL" demo --users abc >/dev/null 2>&1
[ $? = 2 ] || fail "--users abc did not exit 2"
"$CTL" demo --catalog-only --plays-only >/dev/null 2>&1
[ $? = 2 ] || fail "--catalog-only --plays-only did not exit 2"

echo "it_demo: ok"
