#!/usr/bin/env bash
# e2e_play_to_history.sh - a play posted over HTTP reaches play_history exactly once,
# through play-ingestor -> plays.v1 (dev-broker) -> stats-aggregator, also when the
# aggregator is SIGKILLed mid-stream and restarted, and when a player retries.
set -euo pipefail
. "$QZ_TEST_ROOT/scripts/lib.sh"
: "${QZ_TEST_PG_DSN:?} ${QZ_TEST_BROKERS:?} ${QZ_TEST_BIN:?} ${QZ_TEST_TMP:?}"

D=$(mktemp -d "$QZ_TEST_TMP/e2e.XXXX")
INGEST_PORT=$(free_port)
AGG_PORT=$(free_port)
export JWT_SECRET=e2e-secret QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN
export QOQNUZ_STATS_GROUP_ID="stats-e2e-$$"
PSQL=(psql "$QZ_TEST_PG_DSN" -Atq -v ON_ERROR_STOP=1)

start_ingestor() {
  QOQNUZ_HTTP_ADDR=127.0.0.1:$INGEST_PORT "$QZ_TEST_BIN/play-ingestor" >>"$D/ingestor.log" 2>&1 &
  echo $! >"$D/ingestor.pid"
}
start_aggregator() {
  QOQNUZ_HTTP_ADDR=127.0.0.1:$AGG_PORT "$QZ_TEST_BIN/stats-aggregator" >>"$D/aggregator.log" 2>&1 &
  echo $! >"$D/aggregator.pid"
}
cleanup() {
  stop_pidfile "$D/ingestor.pid"
  stop_pidfile "$D/aggregator.pid"
}
fail() {
  echo "FAIL: $*"
  echo "--- ingestor log"; tail -20 "$D/ingestor.log"
  echo "--- aggregator log"; tail -20 "$D/aggregator.log"
  exit 1
}
trap cleanup EXIT

start_ingestor
start_aggregator
wait_ready "http://127.0.0.1:$INGEST_PORT/readyz" 30 || fail "play-ingestor not ready"
wait_ready "http://127.0.0.1:$AGG_PORT/readyz" 30 || fail "stats-aggregator not ready"

U=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
TRACK=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
USER_TOKEN=$("$QZ_TEST_BIN/qoqnuzctl" token --role user --sub "$U")
SERVICE_TOKEN=$("$QZ_TEST_BIN/qoqnuzctl" token --role service)
URL="http://127.0.0.1:$INGEST_PORT/v1/plays"

post() { # post TOKEN BODY [CONTENT_TYPE] -> prints "STATUS BODY"
  curl -s -o "$D/resp" -w '%{http_code}' -X POST "$URL" -H "Authorization: Bearer $1" \
    -H "Content-Type: ${3:-application/json}" --data-binary "$2"
  printf ' '
  cat "$D/resp"
}
count() { "${PSQL[@]}" -c "SELECT count(*) FROM play_history WHERE user_id='$U' ${1:-}"; }
wait_count() { # wait_count N [WHERE-EXTRA]
  local i
  for ((i = 0; i < 300; i++)); do
    [ "$(count "${2:-}")" = "$1" ] && return 0
    sleep 0.1
  done
  fail "expected $1 rows in play_history for $U ${2:-}, found $(count "${2:-}")"
}
play() { # play EVENT_ID
  printf '{"event_id":"%s","user_id":"%s","track_id":"%s","duration_played_ms":123000,"completed":true,"source":"album","device_type":"mobile"}' "$1" "$U" "$TRACK"
}

# auth: none -> 401, forged -> 401, other user's token -> 403
r=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL" -H 'Content-Type: application/json' --data-binary "$(play "$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')")")
[ "$r" = 401 ] || fail "no token: expected 401, got $r"
r=$(post "$USER_TOKEN.x" "$(play 00000000-0000-4000-8000-000000000001)")
[ "${r%% *}" = 401 ] || fail "forged token: expected 401, got $r"
OTHER=$("$QZ_TEST_BIN/qoqnuzctl" token --role user --sub 99999999-9999-4999-8999-999999999999)
r=$(post "$OTHER" "$(play 00000000-0000-4000-8000-000000000002)")
[ "${r%% *}" = 403 ] || fail "wrong user: expected 403, got $r"

# one play -> 202 with its event id, then exactly one row with every field
E1=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
r=$(post "$USER_TOKEN" "$(play "$E1")")
[ "${r%% *}" = 202 ] || fail "single play: expected 202, got $r"
echo "$r" | grep -q "\"$E1\"" || fail "single play: event id not echoed: $r"
wait_count 1
row=$("${PSQL[@]}" -c "SELECT event_id, track_id, duration_played_ms, completed, source, device_type FROM play_history WHERE user_id='$U'")
[ "$row" = "$E1|$TRACK|123000|t|album|mobile" ] || fail "row differs: $row"
echo "ok: single play stored with its fields"

# a player retry with the same event id is harmless
r=$(post "$USER_TOKEN" "$(play "$E1")")
[ "${r%% *}" = 202 ] || fail "retry: expected 202, got $r"

# mixed NDJSON batch: valid items kept, the bad one rejected with its index
E2=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
r=$(post "$SERVICE_TOKEN" "$(play "$E2")
{\"user_id\":\"$U\"}" application/x-ndjson)
[ "${r%% *}" = 202 ] || fail "mixed batch: expected 202, got $r"
echo "$r" | grep -q '"index": *1' || fail "mixed batch: rejected item 1 not reported: $r"
wait_count 2
echo "ok: retry deduplicated, mixed batch kept its valid item"

# SIGKILL the aggregator while plays stream in; restart; every play exactly once
ids=()
for b in 1 2 3 4; do
  body="["
  for i in $(seq 1 50); do
    id=$(printf '%08x-0000-4000-8000-%012x' $$ $((b * 1000 + i)))
    ids+=("$id")
    body+="$(play "$id"),"
  done
  body="${body%,}]"
  r=$(post "$SERVICE_TOKEN" "$body")
  [ "${r%% *}" = 202 ] || fail "batch $b: expected 202, got $r"
  if [ $b = 2 ]; then
    kill -KILL "$(cat "$D/aggregator.pid")"
    rm -f "$D/aggregator.pid"
  fi
done
start_aggregator
wait_ready "http://127.0.0.1:$AGG_PORT/readyz" 30 || fail "restarted stats-aggregator not ready"
wait_count 202
dups=$("${PSQL[@]}" -c "SELECT count(*) - count(DISTINCT event_id) FROM play_history WHERE user_id='$U'")
[ "$dups" = 0 ] || fail "duplicates after restart: $dups"
echo "ok: 202 plays exactly once across a SIGKILL of the aggregator"

# the restarted consumer resumes from committed offsets: nothing replays into a new row
sleep 2
[ "$(count)" = 202 ] || fail "row count changed after settling: $(count)"

# SIGTERM: both stop cleanly (exit 0) and, under ASan/UBSan, report nothing
for svc in ingestor aggregator; do
  pid=$(cat "$D/$svc.pid")
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  rm -f "$D/$svc.pid"
  [ $rc = 0 ] || fail "$svc exited $rc on SIGTERM"
  ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$D/$svc.log" || fail "$svc: sanitizer report"
  grep -q '"msg":"stopped"' "$D/$svc.log" || fail "$svc did not log its clean stop"
done
echo "ok: both services stop cleanly on SIGTERM"
