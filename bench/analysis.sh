#!/usr/bin/env bash
# analysis.sh - lib/analysis accuracy on the demo's labelled audio, and the analysis-worker's
# queue throughput with 1 and 2 threads, on servers of its own.
# QZ_BENCH_ANALYSIS_AUDIO=N (default 200, at most 256) sets the labelled set's size.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
BUILD=${BUILD:-build}
BIN=$ROOT/$BUILD/bin
N=${QZ_BENCH_ANALYSIS_AUDIO:-200}
T=$(mktemp -d /tmp/qoqnuz-bench-analysis.XXXXXX)
trap 'stop_pidfile "$T/worker.pid"; servers_stop "$T"' EXIT
servers_start "$T"
export QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS
PSQL=(psql "$QZ_TEST_PG_DSN" -Atq -v ON_ERROR_STOP=1)

"$BIN/qoqnuzctl" demo --catalog-only --audio "$N" --media-dir "$T/media" | tail -1
"$ROOT/$BUILD/bench/bench_analysis" "$T/media/demo/labels.tsv"

total=$("${PSQL[@]}" -c "SELECT count(*) FROM background_tasks")
audio=$("${PSQL[@]}" -c "SELECT count(*) FROM background_tasks b JOIN tracks t ON t.id = b.entity_id WHERE t.audio_url IS NOT NULL")
for threads in 1 2; do
  "${PSQL[@]}" -c "UPDATE background_tasks SET status = 'pending', attempts = 0, published_at = NULL,
    started_at = NULL, completed_at = NULL, error_message = NULL, result = NULL, not_before = now();
    DELETE FROM track_features;"
  start=$(date +%s.%N)
  QOQNUZ_HTTP_ADDR=127.0.0.1:$(free_port) QOQNUZ_ANALYSIS_THREADS=$threads \
    QOQNUZ_ANALYSIS_GROUP_ID="bench-$threads-$$" "$BIN/analysis-worker" >>"$T/worker.log" 2>&1 &
  echo $! >"$T/worker.pid"
  for ((i = 0; i < 3000; i++)); do
    left=$("${PSQL[@]}" -c "SELECT count(*) FROM background_tasks WHERE status IN ('pending', 'processing')")
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  stop_pidfile "$T/worker.pid"
  awk -v s="$start" -v e="$end" -v n="$total" -v a="$audio" -v t="$threads" 'BEGIN {
    printf "  queue, %d thread(s): %d tasks (%d with audio, the rest fail at once: no audio) in %.1f s = %.0f tasks/s (includes worker start-up and group join)\n", t, n, a, e - s, n / (e - s) }'
done
