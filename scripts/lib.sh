# lib.sh - start/stop the real servers (Postgres, Redis, dev-broker) and services.
# Sourced by stack.sh (make run/up/down) and test.sh (make test).
# shellcheck shell=bash

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# as_pg CMD...: Postgres refuses to run as root; use the Debian postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT SECONDS NAME
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_busy "$1" && return 0
    sleep 0.1
  done
  die "$3 did not start listening on 127.0.0.1:$1 within $2 s"
}

# The dev stack's fixed ports (DESIGN.md: 55432, 56379, 59092, 59093) lie in Linux's default
# ephemeral range (32768-60999): a client connection that happened to get one as its local port
# (any test run makes thousands) leaves a TIME_WAIT socket for 60 s, and since that client did not
# set SO_REUSEADDR, a server's bind() fails with EADDRINUSE although nothing listens. Waits until
# the port can be bound, saying why once; fails after SECONDS.
wait_bindable() { # wait_bindable PORT SECONDS NAME
  local i said=0
  for ((i = 0; i < $2; i++)); do
    /usr/bin/python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null && return 0
    if [ "$said" = 0 ]; then
      log "port $1 ($3) is held by a closing connection (TIME_WAIT); waiting up to $2 s for it"
      said=1
    fi
    sleep 1
  done
  die "port $1 ($3) could not be bound within $2 s; set QZ_*_PORT to another port"
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pg_start DIR PORT: initdb (once) and start a cluster with db/user qoqnuz.
pg_start() {
  local dir=$1 port=$2
  [ -x "$PG_BIN/initdb" ] || die "Postgres server binaries not found (run make deps)"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U qoqnuz -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "initdb failed in $dir"; }
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${QZ_PG_FSYNC:-on} -c max_connections=200 ${QZ_PG_OPTS:-}" start >/dev/null ||
    { tail -20 "$dir/postgres.log" >&2; die "Postgres failed to start on port $port"; }
  "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U qoqnuz -d postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname='qoqnuz'" | grep -q 1 ||
    "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U qoqnuz -d postgres -qc "CREATE DATABASE qoqnuz" ||
    die "cannot create database qoqnuz"
}

pg_stop() { # pg_stop DIR
  [ -f "$1/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1
  return 0
}

redis_start() { # redis_start DIR PORT
  mkdir -p "$1"
  redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --dir "$1" \
    --pidfile "$1/redis.pid" --logfile "$1/redis.log" --daemonize yes >/dev/null ||
    die "Redis failed to start on port $2"
  wait_port "$2" 20 Redis
}

redis_stop() { # redis_stop DIR
  [ -f "$1/redis.pid" ] && kill "$(cat "$1/redis.pid")" 2>/dev/null
  rm -f "$1/redis.pid"
  return 0
}

broker_start() { # broker_start DIR PORT CONTROL_PORT BIN
  mkdir -p "$1"
  rm -f "$1/kafka.bootstrap"
  "$4/dev-broker" --run-dir "$1" --port "$2" --control-port "$3" >"$1/dev-broker.log" 2>&1 &
  echo $! >"$1/dev-broker.pid"
  local i
  for ((i = 0; i < 200; i++)); do
    [ -s "$1/kafka.bootstrap" ] && return 0
    kill -0 "$(cat "$1/dev-broker.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$1/dev-broker.log" >&2
  die "dev-broker failed to start on port $2"
}

stop_pidfile() { # stop_pidfile FILE...: SIGTERM to all, wait up to 10 s for all, then SIGKILL
  # All at once: each service spends ~2 s closing its Kafka clients, one after another was
  # 14 s for `make down`.
  local f pid pids=() i
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for ((i = 0; i < 100; i++)); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; done
  rm -f "$@"
}

# service_ports: the health/HTTP port of each service (DESIGN.md defaults).
service_port() {
  case $1 in
    automation-api) echo "${QZ_API_PORT:-8080}" ;;
    play-ingestor) echo "${QZ_INGEST_PORT:-8081}" ;;
    stats-aggregator) echo "${QZ_STATS_PORT:-9102}" ;;
    trending-ranker) echo "${QZ_TRENDING_PORT:-9103}" ;;
    playlist-builder) echo "${QZ_PLAYLIST_PORT:-9104}" ;;
    analysis-worker) echo "${QZ_ANALYSIS_PORT:-9105}" ;;
    *) echo 0 ;;
  esac
}

# service_start NAME RUNDIR BIN: starts build/bin/NAME with the stack's env; logs in RUNDIR/logs.
service_start() {
  local name=$1 dir=$2 bin=$3 port
  port=$(service_port "$name")
  mkdir -p "$dir/logs"
  QOQNUZ_HTTP_ADDR="127.0.0.1:$port" "$bin/$name" >>"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# wait_ready URL SECONDS NAME: polls /readyz until 200.
wait_ready() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.2
  done
  return 1
}

# servers_start DIR: Postgres (migrated), Redis and the dev-broker on free ports under DIR,
# for tests and benchmarks; exports QZ_TEST_PG_DSN, QZ_TEST_REDIS_URL, QZ_TEST_BROKERS,
# QZ_TEST_BROKER_CONTROL, QZ_TEST_TMP, QZ_TEST_ROOT, QZ_TEST_BIN. servers_stop DIR undoes it.
servers_start() {
  local T=$1 root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  chmod 755 "$T"
  export QZ_TEST_ROOT=$root
  export QZ_TEST_BIN=$root/${BUILD:-build}/bin
  local pg_port redis_port broker_port control_port
  pg_port=$(free_port)
  redis_port=$(free_port)
  broker_port=$(free_port)
  control_port=$(free_port)
  log "servers: Postgres $pg_port, Redis $redis_port, dev-broker $broker_port/$control_port in $T"
  QZ_PG_FSYNC=${QZ_PG_FSYNC:-off} pg_start "$T/pg" "$pg_port"
  redis_start "$T/redis" "$redis_port"
  broker_start "$T/broker" "$broker_port" "$control_port" "$QZ_TEST_BIN"
  export QZ_TEST_PG_DSN="postgresql://qoqnuz@127.0.0.1:$pg_port/qoqnuz"
  export QZ_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  export QZ_TEST_BROKERS="127.0.0.1:$broker_port"
  export QZ_TEST_BROKER_CONTROL="127.0.0.1:$control_port"
  export QZ_TEST_TMP=$T
  export QOQNUZ_SCHEMA_DIR=$root/schemas QOQNUZ_SQL_DIR=$root/sql
  QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN "$QZ_TEST_BIN/qoqnuzctl" migrate >"$T/migrate.log" 2>&1 ||
    { cat "$T/migrate.log" >&2; die "migrations failed on the test database"; }
}

servers_stop() {
  local T=$1 f
  for f in "$T"/*.pid; do [ -f "$f" ] && stop_pidfile "$f"; done
  stop_pidfile "$T/broker/dev-broker.pid"
  redis_stop "$T/redis"
  # every cluster under $T, including ones a failed test started itself
  for f in $(find "$T" -name postmaster.pid 2>/dev/null); do pg_stop "$(dirname "$(dirname "$f")")"; done
  if [ "${QZ_KEEP_TEST_DIR:-0}" = 1 ]; then log "folder kept: $T"; else rm -rf "$T"; fi
}
