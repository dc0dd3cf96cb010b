#!/usr/bin/env bash
# run.sh - make bench: every benchmark prints absolute figures and its ratio to the
# baseline measured in the same run. Figures are for this machine; compare runs, not
# machines.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export QOQNUZ_SCHEMA_DIR=${QOQNUZ_SCHEMA_DIR:-schemas}
for b in "$BUILD"/bench/bench_*; do
  case $b in *.o | *.d) continue ;; esac
  [ -x "$b" ] && "$b"
done
