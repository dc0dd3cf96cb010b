#!/usr/bin/env bash
# analysis_worker_e2e.sh - the analysis-worker binary end to end against Postgres and the
# dev-broker: tracks inserted -> tasks relayed -> analysed -> track_features; a task queued
# at priority 10 behind a backlog starts within seconds and overtakes it; a worker SIGKILLed
# mid-task leaves the task processing until the reset-stuck-tasks job (through
# automation.commands.v1) resets it and it completes on attempt 2; cleanup-background-tasks
# reports its counts; SIGTERM exits 0.
set -euo pipefail
. "$QZ_TEST_ROOT/scripts/lib.sh"
: "${QZ_TEST_PG_DSN:?} ${QZ_TEST_BROKERS:?} ${QZ_TEST_BIN:?} ${QZ_TEST_TMP:?}"

D=$(mktemp -d "$QZ_TEST_TMP/analysis.XXXX")
chmod 755 "$D"
PORT=$(free_port)
SLOW_PORT=$(free_port)
export QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN
export QOQNUZ_ANALYSIS_GROUP_ID="analysis-e2e-$$" QOQNUZ_ANALYSIS_THREADS=1
export QOQNUZ_ANALYSIS_FETCH_TIMEOUT_MS=120000 QOQNUZ_ANALYSIS_RETRY_BASE_MS=500
# Short, so a task whose message was lost (other tests' rows, a killed relay)
# is republished within the test's time; production keeps 5 minutes.
export QOQNUZ_ANALYSIS_REPUBLISH_AGE_MS=5000
PSQL=(psql "$QZ_TEST_PG_DSN" -Atq -v ON_ERROR_STOP=1)

start_worker() {
  QOQNUZ_HTTP_ADDR=127.0.0.1:$PORT "$QZ_TEST_BIN/analysis-worker" >>"$D/worker.log" 2>&1 &
  echo $! >"$D/worker.pid"
}
cleanup() {
  stop_pidfile "$D/worker.pid"
  stop_pidfile "$D/slow.pid"
}
fail() {
  echo "FAIL: $*"
  echo "--- worker log"; grep -v '"task attempt"' "$D/worker.log" | tail -20
  exit 1
}
trap cleanup EXIT

# 30 s click tracks at 120 BPM over a pad (a few distinct files), and a
# server whose first request hangs (the task to kill) and later ones answer.
/usr/bin/python3 - "$D" <<'EOF'
import math, struct, sys, wave
d = sys.argv[1]
rate = 22050
for n, bpm in enumerate((120, 96, 140)):
    frames = bytearray()
    period = int(rate * 60 / bpm)
    for i in range(rate * 30):
        k = i % period
        x = 0.7 * math.exp(-k / 220.0) * math.sin(2 * math.pi * 1000 * k / rate) if k < 2000 else 0.0
        x += 0.1 * math.sin(2 * math.pi * 220 * i / rate)
        frames += struct.pack('<h', int(max(-1, min(1, x)) * 32767))
    w = wave.open(f"{d}/click{n}.wav", "wb")
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(bytes(frames))
    w.close()
EOF
/usr/bin/python3 - "$D" "$SLOW_PORT" >"$D/slow.log" 2>&1 <<'EOF' &
import http.server, sys, threading, time
d, port = sys.argv[1], int(sys.argv[2])
first = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if first.acquire(blocking=False):
            time.sleep(300)  # the worker is killed while waiting here
            return
        body = open(f"{d}/click0.wav", "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
echo $! >"$D/slow.pid"

start_worker
wait_ready "http://127.0.0.1:$PORT/readyz" 40 || fail "analysis-worker not ready"

ARTIST=$("${PSQL[@]}" -c "INSERT INTO artists (name) VALUES ('e2e analysis') RETURNING id")
# --- 1. backlog of 60 tracks (180 tasks at priority 5-7), then one urgent track
"${PSQL[@]}" -c "INSERT INTO tracks (title, artist_id, audio_url, genres)
  SELECT 'backlog ' || g, '$ARTIST', '$D/click' || (g % 3) || '.wav', ARRAY[(ARRAY['rock','pop','jazz'])[g % 3 + 1]]
  FROM generate_series(1, 60) g" >/dev/null
sleep 1
URGENT=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
"${PSQL[@]}" -c "BEGIN;
  INSERT INTO tracks (id, title, artist_id, audio_url) VALUES ('$URGENT', 'urgent', '$ARTIST', '$D/click1.wav');
  UPDATE background_tasks SET priority = 10 WHERE entity_id = '$URGENT';
  COMMIT;" >/dev/null

for ((i = 0; i < 600; i++)); do
  left=$("${PSQL[@]}" -c "SELECT count(*) FROM background_tasks b JOIN tracks t ON t.id = b.entity_id
    WHERE t.artist_id = '$ARTIST' AND b.status <> 'completed'")
  [ "$left" = 0 ] && break
  sleep 0.2
done
[ "$left" = 0 ] || fail "$left tasks not completed after 120 s"
read -r urgent_wait overtaken low_max_wait < <("${PSQL[@]}" -F ' ' -c "
  WITH b AS (SELECT b.*, t.id = '$URGENT' AS urgent FROM background_tasks b JOIN tracks t ON t.id = b.entity_id
             WHERE t.artist_id = '$ARTIST')
  SELECT (SELECT round(extract(epoch FROM max(started_at - created_at))::numeric, 2) FROM b WHERE urgent),
         (SELECT count(*) FROM b WHERE NOT urgent AND started_at > (SELECT max(started_at) FROM b WHERE urgent)),
         (SELECT round(extract(epoch FROM max(started_at - created_at))::numeric, 2) FROM b WHERE NOT urgent)")
echo "priority: urgent task waited ${urgent_wait}s (max), backlog max wait ${low_max_wait}s, $overtaken backlog tasks started after it"
awk -v u="$urgent_wait" 'BEGIN { exit !(u < 3.0) }' || fail "urgent task waited ${urgent_wait}s"
[ "$overtaken" -ge 20 ] || fail "the urgent task overtook only $overtaken backlog tasks"
features=$("${PSQL[@]}" -c "SELECT count(*) FROM track_features f JOIN tracks t ON t.id = f.track_id
  WHERE t.artist_id = '$ARTIST' AND f.tempo IS NOT NULL AND f.mood IS NOT NULL AND f.genre IS NOT NULL
  AND t.mood = f.mood AND t.energy_level = f.energy")
[ "$features" = 61 ] || fail "track_features complete for $features of 61 tracks"
tempo_ok=$("${PSQL[@]}" -c "SELECT count(*) FROM track_features f JOIN tracks t ON t.id = f.track_id
  WHERE t.artist_id = '$ARTIST' AND t.audio_url LIKE '%click0.wav' AND abs(f.tempo - 120) <= 4.8")
[ "$tempo_ok" = 20 ] || fail "tempo 120 +- 4% on $tempo_ok of 20 tracks"

# --- 2. SIGKILL mid-task, then the stuck reset job
SLOW=$(/usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')
"${PSQL[@]}" -c "BEGIN;
  INSERT INTO tracks (id, title, artist_id, audio_url) VALUES ('$SLOW', 'slow', '$ARTIST', 'http://127.0.0.1:$SLOW_PORT/a.wav');
  UPDATE background_tasks SET priority = 10 WHERE entity_id = '$SLOW' AND task_type = 'energy_analysis';
  COMMIT;" >/dev/null
for ((i = 0; i < 100; i++)); do
  st=$("${PSQL[@]}" -c "SELECT status FROM background_tasks WHERE entity_id = '$SLOW' AND task_type = 'energy_analysis'")
  [ "$st" = processing ] && break
  sleep 0.1
done
[ "$st" = processing ] || fail "slow task never started ($st)"
kill -KILL "$(cat "$D/worker.pid")"
sleep 1
start_worker
wait_ready "http://127.0.0.1:$PORT/readyz" 40 || fail "analysis-worker not ready after restart"
st=$("${PSQL[@]}" -c "SELECT status FROM background_tasks WHERE entity_id = '$SLOW' AND task_type = 'energy_analysis'")
[ "$st" = processing ] || fail "killed task is $st, expected processing until the reset"
"$QZ_TEST_BIN/qoqnuzctl" job run reset-stuck-tasks --param older_than_ms=1000 --wait 30 >"$D/reset.json" ||
  fail "reset-stuck-tasks: $(cat "$D/reset.json")"
grep -Eq '"status" ?: ?"succeeded"' "$D/reset.json" || fail "reset run: $(cat "$D/reset.json")"
grep -q 'stuck tasks' "$D/reset.json" || fail "reset run message: $(cat "$D/reset.json")"
for ((i = 0; i < 300; i++)); do
  done_n=$("${PSQL[@]}" -c "SELECT count(*) FROM background_tasks WHERE entity_id = '$SLOW' AND status = 'completed'")
  [ "$done_n" = 3 ] && break
  sleep 0.2
done
[ "$done_n" = 3 ] || fail "slow track: $done_n of 3 tasks completed after the reset"
att=$("${PSQL[@]}" -c "SELECT attempts FROM background_tasks WHERE entity_id = '$SLOW' AND task_type = 'energy_analysis'")
[ "$att" = 2 ] || fail "killed task completed on attempt $att, expected 2"
echo "stuck: killed task reset by the job and completed on attempt 2"

# --- 3. cleanup job counts (this test's rows backdated)
"${PSQL[@]}" -c "UPDATE background_tasks b SET completed_at = now() - interval '8 days'
  FROM tracks t WHERE t.id = b.entity_id AND t.artist_id = '$ARTIST' AND t.id <> '$SLOW'" >/dev/null
"$QZ_TEST_BIN/qoqnuzctl" job run cleanup-background-tasks --wait 30 >"$D/cleanup.json" ||
  fail "cleanup: $(cat "$D/cleanup.json")"
grep -q 'deleted 183 completed' "$D/cleanup.json" || fail "cleanup run: $(cat "$D/cleanup.json")"
echo "cleanup: $(grep -o 'deleted [^"]*' "$D/cleanup.json")"

# --- 4. clean stop
pid=$(cat "$D/worker.pid")
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM exit code $rc"
rm -f "$D/worker.pid"
echo "analysis_worker_e2e: ok"
