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
trap 'servers_stop "$T"' EXIT
trap 'exit 130' INT TERM
servers_start "$T"

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
