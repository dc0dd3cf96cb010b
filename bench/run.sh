#!/usr/bin/env bash
# run.sh - make bench: every benchmark prints absolute figures and its ratio to the
# baseline measured in the same run. Compiled ones are bench/bench_*.c; those that
# need servers are bench/*.sh and start them with servers_start (scripts/lib.sh).
# QZ_BENCH_ONLY=pattern runs a subset. Figures are for this machine: compare runs
# on one machine, not machines.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export QOQNUZ_SCHEMA_DIR=${QOQNUZ_SCHEMA_DIR:-$PWD/schemas}
only=${QZ_BENCH_ONLY:-}
for b in "$BUILD"/bench/bench_* bench/*.sh; do
  [ -e "$b" ] || continue
  case $b in *.o | *.d | bench/run.sh) continue ;; esac
  [ -n "$only" ] && [[ $(basename "$b") != *$only* ]] && continue
  echo "== $(basename "$b")"
  case $b in
    *.sh) bash "$b" ;;
    *) "$b" ;;
  esac
done
