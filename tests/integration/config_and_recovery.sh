#!/usr/bin/env bash
# config_and_recovery.sh - a malformed setting is a one-line error naming the variable
# (exit 2); an unreachable Postgres or broker is logged by name, turns /readyz to 503,
# and the service recovers by itself without losing a play once it is back.
set -euo pipefail
. "$QZ_TEST_ROOT/scripts/lib.sh"
: "${QZ_TEST_PG_DSN:?} ${QZ_TEST_BROKERS:?} ${QZ_TEST_BIN:?} ${QZ_TEST_TMP:?}"

D=$(mktemp -d "$QZ_TEST_TMP/recovery.XXXX")
chmod 755 "$D" # the postgres user must reach the cluster started below
fail() {
  echo "FAIL: $*"
  for f in "$D"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
  exit 1
}
cleanup() {
  for f in "$D"/*.pid; do [ -f "$f" ] && stop_pidfile "$f"; done
  pg_stop "$D/pg"
}
trap cleanup EXIT

# 1. malformed settings: exit 2, one line, the variable named
check_bad() { # check_bad BINARY VAR VALUE
  local out rc=0
  out=$(env "$2=$3" "$QZ_TEST_BIN/$1" 2>&1 >/dev/null) || rc=$?
  [ $rc = 2 ] || fail "$1 with $2=$3: exit $rc, expected 2 ($out)"
  [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "$1 with $2=$3: more than one line: $out"
  [[ $out == *"$2"* ]] || fail "$1 with $2=$3: error does not name the variable: $out"
}
for svc in play-ingestor stats-aggregator; do
  check_bad "$svc" QOQNUZ_HTTP_ADDR 127.0.0.1:99999
  check_bad "$svc" QOQNUZ_HTTP_ADDR localhost
  check_bad "$svc" QOQNUZ_LOG_LEVEL loud
done
check_bad stats-aggregator QOQNUZ_PG_DSN "host=127.0.0.1 port"
check_bad stats-aggregator QOQNUZ_PG_DSN "postgresql://a:b@host:port:x/db?bogus_option=1"
check_bad stats-aggregator QOQNUZ_STATS_BATCH_SIZE 0
check_bad play-ingestor QOQNUZ_INGEST_MAX_BATCH many
echo "ok: malformed settings exit 2 naming the variable"

# 2. Postgres unreachable: logged by name, not ready, recovers by itself
DEAD=$(free_port)
PORT=$(free_port)
QOQNUZ_HTTP_ADDR=127.0.0.1:$PORT QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS \
  QOQNUZ_PG_DSN="postgresql://qoqnuz@127.0.0.1:$DEAD/qoqnuz" QOQNUZ_STATS_GROUP_ID="rec-$$" \
  "$QZ_TEST_BIN/stats-aggregator" >"$D/agg.log" 2>&1 &
echo $! >"$D/agg.pid"
for i in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
code=$(curl -s -o "$D/ready" -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")
[ "$code" = 503 ] || fail "readyz with Postgres down: $code"
grep -q '"postgres":"unreachable"' "$D/ready" || fail "readyz does not name postgres: $(cat "$D/ready")"
grep -q 'postgres unreachable' "$D/agg.log" || fail "no log line naming postgres"
kill -0 "$(cat "$D/agg.pid")" || fail "stats-aggregator died with Postgres down"
# bring a Postgres up on that port: the service must find it without a restart
pg_start "$D/pg" "$DEAD"
echo "$D/pg" >"$D/pgdir"
psql -q "postgresql://qoqnuz@127.0.0.1:$DEAD/qoqnuz" -c 'SELECT 1' >/dev/null
QOQNUZ_PG_DSN="postgresql://qoqnuz@127.0.0.1:$DEAD/qoqnuz" "$QZ_TEST_BIN/qoqnuzctl" migrate >/dev/null
wait_ready "http://127.0.0.1:$PORT/readyz" 60 || fail "stats-aggregator did not recover after Postgres came up"
echo "ok: Postgres down -> logged, 503, recovered by itself"
stop_pidfile "$D/agg.pid"
pg_stop "$D/pg"

# 3. broker unreachable: play-ingestor logs it, is not ready, answers 503 + Retry-After
PORT=$(free_port)
QOQNUZ_HTTP_ADDR=127.0.0.1:$PORT QOQNUZ_KAFKA_BROKERS="127.0.0.1:$(free_port)" \
  QOQNUZ_INGEST_ACK_TIMEOUT_MS=1500 JWT_SECRET=rec "$QZ_TEST_BIN/play-ingestor" >"$D/ing.log" 2>&1 &
echo $! >"$D/ing.pid"
for i in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
sleep 1
code=$(curl -s -o "$D/ready" -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")
[ "$code" = 503 ] || fail "ingestor readyz with no broker: $code"
TOKEN=$(JWT_SECRET=rec "$QZ_TEST_BIN/qoqnuzctl" token --role service)
code=$(curl -s -D "$D/headers" -o "$D/body" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/v1/plays" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"user_id":"11111111-1111-4111-8111-111111111111","track_id":"22222222-2222-4222-8222-222222222222","duration_played_ms":1,"source":"album","device_type":"web"}')
[ "$code" = 503 ] || fail "post with no broker: $code $(cat "$D/body")"
grep -qi '^retry-after:' "$D/headers" || fail "503 without Retry-After"
grep -q '"code":"unavailable"' "$D/body" || fail "503 body: $(cat "$D/body")"
grep -qi 'kafka\|broker' "$D/ing.log" || fail "no log line naming the broker"
echo "ok: broker unreachable -> 503 with Retry-After, not ready"
