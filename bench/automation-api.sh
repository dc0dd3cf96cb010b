#!/usr/bin/env bash
# automation-api.sh - bench/api: GET /api/automation/trending?limit=50 and GET smart-playlists.
# Target (issue 9): trending >= 20,000 req/s with p99 < 5 ms on 2 cores, against the naive
# path measured in the same run (every answer built from a Postgres query). Servers of our own
# (servers_start); catalog 2000 tracks, top 100 in trending_tracks and in Redis (the ranker's
# key layout, docs/redis-keys.md), one user's daily_mix of 50 tracks.
# Settings: QZ_BENCH_SECONDS (default 5 per run), QZ_BENCH_CONNS (default 32), QZ_BENCH_THREADS
# (API HTTP threads, default 2 = the cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
. scripts/lib.sh
SECS=${QZ_BENCH_SECONDS:-5}
CONNS=${QZ_BENCH_CONNS:-32}
THREADS=${QZ_BENCH_THREADS:-2}
LOAD=$ROOT/$BUILD/bench/bench_automation_api
[ -x "$LOAD" ] || die "build $LOAD first (make all)"
T=$(mktemp -d /tmp/qoqnuz-bench-api.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  servers_stop "$T"
}
trap cleanup EXIT
servers_start "$T" >/dev/null 2>&1
PSQL=(psql "$QZ_TEST_PG_DSN" -Atq -v ON_ERROR_STOP=1)
REDIS_PORT=${QZ_TEST_REDIS_URL##*:}
REDIS_PORT=${REDIS_PORT%%/*}
USER_ID=11111111-1111-4111-8111-111111111111

"${PSQL[@]}" <<SQL
INSERT INTO artists (id, name) SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
  'Artist ' || i FROM generate_series(1, 200) i;
INSERT INTO albums (id, artist_id, title) SELECT ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid,
  ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'Album ' || i FROM generate_series(1, 200) i;
INSERT INTO tracks (id, title, artist_id, album_id, duration_ms, genres)
SELECT ('00000000-0000-4000-a000-' || lpad(i::text, 12, '0'))::uuid, 'Track ' || i,
  ('00000000-0000-4000-8000-' || lpad((i % 200 + 1)::text, 12, '0'))::uuid,
  ('00000000-0000-4000-9000-' || lpad((i % 200 + 1)::text, 12, '0'))::uuid, 180000 + i,
  ARRAY[(ARRAY['rock','pop','jazz','hip-hop'])[i % 4 + 1]] FROM generate_series(1, 2000) i;
INSERT INTO trending_tracks (track_id, trend_score, play_count_24h, play_count_7d,
  unique_listeners_24h, unique_listeners_7d)
SELECT ('00000000-0000-4000-a000-' || lpad(i::text, 12, '0'))::uuid, 10000 - i, 100 - i % 100,
  400 - i, 50, 200 FROM generate_series(1, 100) i;
INSERT INTO smart_playlists (user_id, playlist_type, track_ids, expires_at)
SELECT '$USER_ID', 'daily_mix', array_agg(('00000000-0000-4000-a000-' || lpad(i::text, 12, '0'))::uuid),
  now() + interval '1 day' FROM generate_series(500, 549) i;
SQL
# the ranker's Redis layout for the same top 100
"${PSQL[@]}" -c "SELECT format('ZADD qoqnuz:trending:global %s %s', tt.trend_score, t.id) || E'\n' ||
  format('HSET qoqnuz:trending:track:%s trend_score %s play_count_24h %s play_count_7d %s unique_listeners_24h %s unique_listeners_7d %s calculated_at %s title %s artist_id %s artist_name %s album_id %s album_title %s duration_ms %s genres %s',
    t.id, tt.trend_score, tt.play_count_24h, tt.play_count_7d, tt.unique_listeners_24h, tt.unique_listeners_7d,
    (extract(epoch FROM tt.calculated_at) * 1000)::bigint, quote_ident(t.title), ar.id, quote_ident(ar.name),
    al.id, quote_ident(al.title), t.duration_ms, t.genres[1])
  FROM trending_tracks tt JOIN tracks t ON t.id = tt.track_id JOIN artists ar ON ar.id = t.artist_id
  JOIN albums al ON al.id = t.album_id" | redis-cli -p "$REDIS_PORT" >/dev/null
redis-cli -p "$REDIS_PORT" HSET qoqnuz:trending:meta calculated_at "$(($(date +%s) * 1000))" window 7d source bench >/dev/null

start_api() { # start_api NAME PORT ENV...
  local name=$1 port=$2
  shift 2
  env "$@" QOQNUZ_HTTP_ADDR=127.0.0.1:$port QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN \
    QOQNUZ_REDIS_URL=$QZ_TEST_REDIS_URL QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS \
    QOQNUZ_HTTP_THREADS=$THREADS QOQNUZ_LOG_LEVEL=warn QOQNUZ_SCHEDULER_ENABLED=false \
    QOQNUZ_RELAYS_ENABLED=false QOQNUZ_MEDIA_DIR="$T/media" "$QZ_TEST_BIN/automation-api" \
    >>"$T/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$port/readyz" 30 || die "$name not ready: $(tail -5 "$T/$name.log")"
}
P_FAST=$(free_port); P_NOCACHE=$(free_port); P_NAIVE=$(free_port)
start_api api-cached "$P_FAST"
start_api api-redis "$P_NOCACHE" QOQNUZ_API_TRENDING_CACHE_MS=0
start_api api-naive "$P_NAIVE" QOQNUZ_API_TRENDING_NAIVE=true QOQNUZ_API_TRENDING_CACHE_MS=0
TOKEN=$("$QZ_TEST_BIN/qoqnuzctl" token --role user --sub "$USER_ID")
# the answers are the same whichever way they are built (same rows, same order)
a=$(curl -fs "http://127.0.0.1:$P_FAST/api/automation/trending?limit=50" | /usr/bin/python3 -c 'import json,sys; print([t["id"] for t in json.load(sys.stdin)["tracks"]])')
b=$(curl -fs "http://127.0.0.1:$P_NAIVE/api/automation/trending?limit=50" | /usr/bin/python3 -c 'import json,sys; print([t["id"] for t in json.load(sys.stdin)["tracks"]])')
[ "$a" = "$b" ] || die "redis and postgres answers differ: $a vs $b"

run() { # run LABEL PORT PATH [TOKEN]
  local out
  out=$("$LOAD" 127.0.0.1 "$2" "$3" "$SECS" "$CONNS" ${4:-}) || die "$1: load run failed: $out"
  printf '%-44s %s\n' "$1" "$out" >&2
  echo "$out"
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
echo "settings: ${SECS}s per run, $CONNS connections, $THREADS API HTTP threads, $(nproc) cores shared with the load generator" >&2
naive=$(run "trending naive (Postgres per request)" "$P_NAIVE" "/api/automation/trending?limit=50")
redis=$(run "trending from Redis, no render cache" "$P_NOCACHE" "/api/automation/trending?limit=50")
fast=$(run "trending from Redis, 1 s render cache" "$P_FAST" "/api/automation/trending?limit=50")
pl=$(run "smart-playlists (Postgres, 50 tracks)" "$P_FAST" "/api/automation/smart-playlists" "$TOKEN")
/usr/bin/python3 - "$(field rps "$naive")" "$(field rps "$redis")" "$(field rps "$fast")" \
  "$(field p99_ms "$fast")" "$(field rps "$pl")" "$(field p99_ms "$pl")" <<'PY'
import sys
naive, redis, fast, p99, pl, pl99 = map(float, sys.argv[1:])
print("trending: %.0f req/s p99 %.2f ms (target >= 20000 req/s, p99 < 5 ms: %s); "
      "%.1fx the naive path (%.0f req/s); Redis without render cache %.0f req/s (%.1fx naive)"
      % (fast, p99, "met" if fast >= 20000 and p99 < 5 else "NOT met", fast / naive, naive, redis,
         redis / naive))
print("smart-playlists: %.0f req/s p99 %.2f ms" % (pl, pl99))
PY
