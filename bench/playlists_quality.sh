#!/usr/bin/env bash
# playlists_quality.sh - bench/recs: offline quality of daily_mix and discovery_weekly (variants
# guide and cf) against a popularity baseline, on held-out demo plays, in one run. Starts its own
# servers, loads `qoqnuzctl demo --bulk` (users with latent tastes), then
# bench/bench_playlists_quality.c holds out the last QZ_BENCH_HOLDOUT_DAYS (7) days, computes the
# similarities and builds the lists as of the cut-off, and scores them.
# Sizes: QZ_BENCH_DEMO_USERS (3000), QZ_BENCH_DEMO_TRACKS (6000), QZ_BENCH_DEMO_ARTISTS (400),
# QZ_BENCH_DEMO_PLAYS (600000), QZ_BENCH_DEMO_DAYS (180), QZ_BENCH_DEMO_SEED (42),
# QZ_BENCH_EVAL_USERS (1000; 0 = every user with plays on both sides of the cut-off).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BUILD=${BUILD:-build}
T=$(mktemp -d /tmp/qoqnuz-bench-plq.XXXXXX)
trap 'servers_stop "$T"' EXIT
servers_start "$T" 2>/dev/null
ARGS=(--users "${QZ_BENCH_DEMO_USERS:-3000}" --artists "${QZ_BENCH_DEMO_ARTISTS:-400}"
  --tracks "${QZ_BENCH_DEMO_TRACKS:-6000}" --plays "${QZ_BENCH_DEMO_PLAYS:-600000}"
  --days "${QZ_BENCH_DEMO_DAYS:-180}" --seed "${QZ_BENCH_DEMO_SEED:-42}" --audio 0)
echo "demo: ${ARGS[*]}; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN QOQNUZ_MEDIA_DIR=$T/media "$BUILD/bin/qoqnuzctl" demo "${ARGS[@]}" \
  --bulk >"$T/demo.log" 2>&1 || { cat "$T/demo.log" >&2; exit 1; }
psql "$QZ_TEST_PG_DSN" -qc "ANALYZE" >/dev/null
"$BUILD/bench/bench_playlists_quality"
