#!/usr/bin/env bash
# test.sh - make test: unit tests, then integration tests against real Postgres,
# Redis and the dev-broker started here on free ports in a temp folder (torn down
# afterwards, also on failure). A server that cannot start fails the run.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

BUILD=${BUILD:-build}
export QZ_TEST_ROOT=$ROOT
export QZ_TEST_BIN=$ROOT/$BUILD/bin
TEST_TIMEOUT=${QZ_TEST_TIMEOUT:-300}

T=$(mktemp -d /tmp/qoqnuz-test.XXXXXX)
chmod 755 "$T"
teardown() {
  local f
  for f in "$T"/*.pid; do [ -f "$f" ] && stop_pidfile "$f"; done
  stop_pidfile "$T/broker/dev-broker.pid"
  redis_stop "$T/redis"
  # every cluster under $T, including ones a failed test started itself
  for f in $(find "$T" -name postmaster.pid 2>/dev/null); do pg_stop "$(dirname "$(dirname "$f")")"; done
  if [ "${QZ_KEEP_TEST_DIR:-0}" = 1 ]; then log "test folder kept: $T"; else rm -rf "$T"; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
BROKER_PORT=$(free_port)
CONTROL_PORT=$(free_port)
log "test servers: Postgres $PG_PORT, Redis $REDIS_PORT, dev-broker $BROKER_PORT/$CONTROL_PORT in $T"
QZ_PG_FSYNC=off pg_start "$T/pg" "$PG_PORT"
redis_start "$T/redis" "$REDIS_PORT"
broker_start "$T/broker" "$BROKER_PORT" "$CONTROL_PORT" "$QZ_TEST_BIN"

export QZ_TEST_PG_DSN="postgresql://qoqnuz@127.0.0.1:$PG_PORT/qoqnuz"
export QZ_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export QZ_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
export QZ_TEST_BROKER_CONTROL="127.0.0.1:$CONTROL_PORT"
export QZ_TEST_TMP=$T
export QOQNUZ_SCHEMA_DIR=$ROOT/schemas QOQNUZ_SQL_DIR=$ROOT/sql
QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN "$QZ_TEST_BIN/qoqnuzctl" migrate >"$T/migrate.log" 2>&1 ||
  { cat "$T/migrate.log" >&2; die "migrations failed on the test database"; }

passed=0
failed=0
failures=()
run_one() { # run_one NAME CMD...
  local name=$1 start rc
  shift
  start=$(date +%s)
  printf '== %s\n' "$name"
  timeout --kill-after=10 "$TEST_TIMEOUT" "$@"
  rc=$?
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    printf '== %s: ok (%ss)\n' "$name" "$(($(date +%s) - start))"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf '== %s: FAILED (exit %s, %ss)\n' "$name" "$rc" "$(($(date +%s) - start))"
  fi
}

only=${QZ_TEST_ONLY:-}
for t in "$BUILD"/tests/test_* "$BUILD"/tests/it_* tests/integration/*.sh tests/integration/*.py; do
  [ -e "$t" ] || continue
  case $t in *.o | *.d) continue ;; esac
  name=$(basename "$t")
  [ -n "$only" ] && [[ $name != *$only* ]] && continue
  case $t in
    *.sh) run_one "$name" bash "$t" ;;
    *.py) run_one "$name" /usr/bin/python3 "$t" ;;
    *) run_one "$name" "$t" ;;
  esac
done

echo
[ $failed -gt 0 ] && printf 'failed: %s\n' "${failures[*]}"
printf 'tests: %d passed, %d failed\n' "$passed" "$failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
