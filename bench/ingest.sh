#!/usr/bin/env bash
# ingest.sh - play-ingestor throughput: batches of 100 plays over keep-alive HTTP
# (tools/qz-loadgen) into the ingestor and on to plays.v1 on the dev-broker, each
# request answered 202 only after the broker acknowledged it; beside it, in the same
# run, the broker's own ceiling (producer only, no HTTP) and the old system's path
# (one INSERT INTO play_history per play through libpq). Prints plays/s, p50/p99
# latency, CPU per 1k plays and the ratio to the baseline.
#
# Knobs: QZ_BENCH_SECONDS (10 per run), QZ_BENCH_CONNECTIONS (32), QZ_BENCH_BATCH (100),
# QZ_BENCH_HTTP_THREADS (64), QZ_PG_FSYNC (on: the baseline as a real Postgres runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SECS=${QZ_BENCH_SECONDS:-10}
CONNS=${QZ_BENCH_CONNECTIONS:-32}
BATCH=${QZ_BENCH_BATCH:-100}
THREADS=${QZ_BENCH_HTTP_THREADS:-64}
export QZ_PG_FSYNC=${QZ_PG_FSYNC:-on}

T=$(mktemp -d /tmp/qoqnuz-bench-ingest.XXXXXX)
trap 'servers_stop "$T"' EXIT
servers_start "$T" 2>"$T/servers.log" || { cat "$T/servers.log"; exit 1; }
BIN=$QZ_TEST_BIN
BROKER_PID=$(cat "$T/broker/dev-broker.pid")
PORT=$(free_port)
export JWT_SECRET=bench-secret
TOKEN=$("$BIN/qoqnuzctl" token --role service)

start_ingestor() { # start_ingestor [ENV=VALUE...]
  env QOQNUZ_HTTP_ADDR=127.0.0.1:$PORT QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS \
    QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN QOQNUZ_HTTP_THREADS=$THREADS QOQNUZ_LOG_LEVEL=warn "$@" \
    "$BIN/play-ingestor" >>"$T/ingestor.log" 2>&1 &
  echo $! >"$T/ingestor.pid"
  wait_ready "http://127.0.0.1:$PORT/readyz" 30 || { tail "$T/ingestor.log"; exit 1; }
}

echo "settings: $SECS s per run, $CONNS connections, batches of $BATCH plays, $THREADS HTTP threads," \
  "dev-broker (librdkafka mock cluster, 3 brokers in one process), Postgres fsync=$QZ_PG_FSYNC," \
  "$(nproc) cores shared by the load generator, the ingestor, the dev-broker and Postgres"

start_ingestor
http=$("$BIN/qz-loadgen" http --url "http://127.0.0.1:$PORT/v1/plays" --token "$TOKEN" \
  --connections "$CONNS" --batch "$BATCH" --seconds "$SECS" \
  --pid "ingestor=$(cat "$T/ingestor.pid")" --pid "dev-broker=$BROKER_PID")
echo "ingest (202 after broker ack) $http"
stop_pidfile "$T/ingestor.pid"

start_ingestor QOQNUZ_INGEST_ACK_ON_ENQUEUE=true
enq=$("$BIN/qz-loadgen" http --url "http://127.0.0.1:$PORT/v1/plays" --token "$TOKEN" \
  --connections "$CONNS" --batch "$BATCH" --seconds "$SECS" \
  --pid "ingestor=$(cat "$T/ingestor.pid")" --pid "dev-broker=$BROKER_PID")
echo "ingest (202 after enqueue, QOQNUZ_INGEST_ACK_ON_ENQUEUE) $enq"
stop_pidfile "$T/ingestor.pid"

prod=$("$BIN/qz-loadgen" produce --brokers "$QZ_TEST_BROKERS" --connections "$CONNS" \
  --batch "$BATCH" --seconds "$SECS" --linger-ms 1 --pid "dev-broker=$BROKER_PID")
echo "broker ceiling (producer only, no HTTP) $prod"

base=$("$BIN/qz-loadgen" pg --dsn "$QZ_TEST_PG_DSN" --connections "$CONNS" --seconds "$SECS")
echo "baseline (one INSERT per play) $base"

rate() { sed -E 's/^[^:]*: ([0-9]+) plays\/s.*/\1/' <<<"$1"; }
awk -v a="$(rate "$http")" -v e="$(rate "$enq")" -v p="$(rate "$prod")" -v b="$(rate "$base")" 'BEGIN {
  printf "ratio: ingest %.1fx the baseline (target 20x; 200,000 plays/s); after-enqueue %.1fx;", a / b, e / b
  printf " ingest reaches %.0f%% of the dev-broker ceiling\n", 100 * a / p }'
