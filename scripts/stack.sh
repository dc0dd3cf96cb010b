#!/usr/bin/env bash
# stack.sh - the dev stack: `run` (foreground, Ctrl-C stops all), `up` (background,
# returns when ready), `down`. Real Postgres, Redis and the dev-broker on loopback,
# migrations, demo data, then every service that exists (services/<name>/main.c).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"

BUILD=${BUILD:-build}
BIN="$ROOT/$BUILD/bin"
RUN_DIR=${QZ_RUN_DIR:-$ROOT/.run}
PG_PORT=${QZ_PG_PORT:-55432}
REDIS_PORT=${QZ_REDIS_PORT:-56379}
BROKER_PORT=${QZ_BROKER_PORT:-59092}
CONTROL_PORT=${QZ_BROKER_CONTROL_PORT:-59093}
# Postgres runs as the postgres user when we are root: keep its files in /tmp, which
# that user can reach wherever the checkout lives.
PG_DIR=${QZ_PG_DIR:-/tmp/qoqnuz-pg-$PG_PORT}

export QOQNUZ_PG_DSN=${QOQNUZ_PG_DSN:-postgresql://qoqnuz:qoqnuz@127.0.0.1:$PG_PORT/qoqnuz}
export QOQNUZ_REDIS_URL=${QOQNUZ_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export QOQNUZ_KAFKA_BROKERS=${QOQNUZ_KAFKA_BROKERS:-127.0.0.1:$BROKER_PORT}
export JWT_SECRET=${JWT_SECRET:-dev-jwt-secret}
export WORKER_SECRET=${WORKER_SECRET:-dev-worker-secret}
export QOQNUZ_SCHEMA_DIR=${QOQNUZ_SCHEMA_DIR:-$ROOT/schemas}
export QOQNUZ_SQL_DIR=${QOQNUZ_SQL_DIR:-$ROOT/sql}
export QOQNUZ_MEDIA_DIR=${QOQNUZ_MEDIA_DIR:-$RUN_DIR/media}

services() {
  local m
  for m in "$ROOT"/services/*/main.c; do
    [ -f "$m" ] && basename "$(dirname "$m")"
  done
}

# The dev-broker's pid file marks a running stack (make up returns, the broker stays).
running() { [ -f "$RUN_DIR/dev-broker.pid" ] && kill -0 "$(cat "$RUN_DIR/dev-broker.pid")" 2>/dev/null; }

down() {
  local s files=()
  for s in $(services); do files+=("$RUN_DIR/$s.pid"); done
  stop_pidfile "${files[@]}" # the services first, while the broker is still there
  stop_pidfile "$RUN_DIR/dev-broker.pid"
  redis_stop "$RUN_DIR/redis"
  pg_stop "$PG_DIR"
}

up() {
  if running; then
    log "Qoqnuz is already running (folder $RUN_DIR): 'make down' stops it."
    trap - EXIT INT TERM
    exit 1
  fi
  local p
  for p in "$PG_PORT:Postgres" "$REDIS_PORT:Redis" "$BROKER_PORT:dev-broker" "$CONTROL_PORT:dev-broker control"; do
    port_busy "${p%%:*}" && die "port ${p%%:*} (${p#*:}) is already in use; set QZ_*_PORT or stop what holds it"
    wait_bindable "${p%%:*}" 65 "${p#*:}"
  done
  mkdir -p "$RUN_DIR/logs" "$QOQNUZ_MEDIA_DIR"
  log "starting Postgres on 127.0.0.1:$PG_PORT ($PG_DIR)"
  pg_start "$PG_DIR" "$PG_PORT"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis_start "$RUN_DIR/redis" "$REDIS_PORT"
  log "starting dev-broker on 127.0.0.1:$BROKER_PORT (control $CONTROL_PORT)"
  broker_start "$RUN_DIR" "$BROKER_PORT" "$CONTROL_PORT" "$BIN"
  log "applying migrations"
  "$BIN/qoqnuzctl" migrate || die "migrations failed"
  local s
  for s in $(services); do
    log "starting $s on 127.0.0.1:$(service_port "$s")"
    service_start "$s" "$RUN_DIR" "$BIN"
  done
  for s in $(services); do
    wait_ready "http://127.0.0.1:$(service_port "$s")/readyz" 60 "$s" ||
      { tail -5 "$RUN_DIR/logs/$s.log" >&2; die "$s did not become ready (log: $RUN_DIR/logs/$s.log)"; }
  done
  if [ "${QZ_DEMO:-1}" = 1 ] && [ ! -f "$PG_DIR/demo.loaded" ]; then
    log "loading demo data (once; QZ_DEMO=0 skips)"
    local args=()
    [ -f "$ROOT/services/play-ingestor/main.c" ] || args+=(--catalog-only)
    if "$BIN/qoqnuzctl" demo "${args[@]}" >"$RUN_DIR/logs/demo.log" 2>&1; then
      touch "$PG_DIR/demo.loaded"
    else
      tail -5 "$RUN_DIR/logs/demo.log" >&2
      log "warning: demo data failed (see $RUN_DIR/logs/demo.log); the stack is up without it"
    fi
  fi
  banner
}

banner() {
  cat <<EOT

Qoqnuz is up (logs: $RUN_DIR/logs):
  play-ingestor   http://127.0.0.1:$(service_port play-ingestor)/v1/plays
  Postgres        $QOQNUZ_PG_DSN
  Redis           $QOQNUZ_REDIS_URL
  Kafka           $QOQNUZ_KAFKA_BROKERS (dev-broker control 127.0.0.1:$CONTROL_PORT)
  health/metrics  http://127.0.0.1:<port>/healthz /readyz /metrics on each service
$(for s in $(services); do printf '    %-17s %s\n' "$s" "$(service_port "$s")"; done)

Example: post a play, then find it in play_history
  TOKEN=\$($BIN/qoqnuzctl token --role user --sub 11111111-1111-4111-8111-111111111111)
  curl -s -X POST http://127.0.0.1:$(service_port play-ingestor)/v1/plays -H "Authorization: Bearer \$TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{"user_id":"11111111-1111-4111-8111-111111111111","track_id":"22222222-2222-4222-8222-222222222222","duration_played_ms":180000,"completed":true,"source":"album","device_type":"mobile"}'
  psql "$QOQNUZ_PG_DSN" -c "SELECT * FROM play_history WHERE user_id='11111111-1111-4111-8111-111111111111'"
EOT
}

case ${1:-} in
  up)
    trap 'rc=$?; [ $rc -ne 0 ] && down; exit $rc' EXIT
    up
    ;;
  down) down; log "Qoqnuz stopped" ;;
  run)
    trap 'log "stopping..."; down; exit 0' INT TERM
    trap 'down' EXIT
    up
    log "Ctrl-C stops everything."
    while true; do sleep 1; done
    ;;
  *) die "usage: stack.sh run|up|down" ;;
esac
