#!/usr/bin/env bash
# playlists.sh - bench/playlists: playlists/s for the scheduled fan-out (all four types per user)
# with 1 and 2 builder instances, against the old system's approach (bench/playlists_baseline.sql:
# a SQL function per user per type) measured in the same run on the same Postgres (fsync on;
# settings printed). bench/bench_playlists.c does the measuring.
# Sizes: QZ_BENCH_DEMO_USERS (5000), QZ_BENCH_DEMO_PLAYS (500000), QZ_BENCH_DEMO_TRACKS (20000),
# QZ_BENCH_DEMO_ARTISTS (2000), QZ_BENCH_USERS (users built per pass: 0 = all active, the
# default: each builder instance loads the catalog once, so a few hundred users would mostly
# measure that load), QZ_BENCH_INSTANCES (1,2), QZ_BENCH_BASELINE_USERS (the baseline's rate on
# that many of them; 1000), QZ_BENCH_VERIFY (users whose playlists the batch path and the
# per-request SQL path must build identically; 200), QZ_BENCH_OVERLAP=1 (each pass again with
# the store of a batch overlapping the next batch's build: an experiment, not the service's way).
# Every pass prints its CPU split (builders vs this Postgres, from getrusage and /proc).
# QZ_BENCH_FULL=1: the issue's size, 100k
# users and 10M plays, every user built by the builders, the baseline's rate on 5000 of them
# (all 100k would take most of an hour); takes long: the load alone is minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BUILD=${BUILD:-build}
if [ "${QZ_BENCH_FULL:-0}" = 1 ]; then
  : "${QZ_BENCH_DEMO_USERS:=100000}" "${QZ_BENCH_DEMO_PLAYS:=10000000}" "${QZ_BENCH_DEMO_TRACKS:=100000}"
  : "${QZ_BENCH_DEMO_ARTISTS:=10000}" "${QZ_BENCH_USERS:=0}" "${QZ_BENCH_BASELINE_USERS:=5000}"
  export QZ_BENCH_BASELINE_USERS
fi
T=$(mktemp -d /tmp/qoqnuz-bench-pl.XXXXXX)
trap 'servers_stop "$T"' EXIT
QZ_PG_FSYNC=${QZ_PG_FSYNC:-on} servers_start "$T" 2>/dev/null
ARGS=(--users "${QZ_BENCH_DEMO_USERS:-5000}" --artists "${QZ_BENCH_DEMO_ARTISTS:-2000}"
  --tracks "${QZ_BENCH_DEMO_TRACKS:-20000}" --plays "${QZ_BENCH_DEMO_PLAYS:-500000}"
  --days 120 --seed 42 --audio 0)
echo "postgres: $("$PG_BIN/postgres" --version); settings:" \
  "$(psql "$QZ_TEST_PG_DSN" -Atc "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings
     WHERE name IN ('fsync','synchronous_commit','shared_buffers','work_mem')")"
echo "demo: ${ARGS[*]}; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
QOQNUZ_PG_DSN=$QZ_TEST_PG_DSN QOQNUZ_MEDIA_DIR=$T/media "$BUILD/bin/qoqnuzctl" demo "${ARGS[@]}" \
  --bulk >"$T/demo.log" 2>&1 || { cat "$T/demo.log" >&2; exit 1; }
psql "$QZ_TEST_PG_DSN" -v ON_ERROR_STOP=1 -qf bench/playlists_baseline.sql >/dev/null
# CF neighbours as the nightly job leaves them (the cf variant reads them).
"$BUILD/bench/bench_playlists" --similarities 2>/dev/null
psql "$QZ_TEST_PG_DSN" -qc "ANALYZE" >/dev/null
QZ_BENCH_USERS=${QZ_BENCH_USERS:-0} QZ_BENCH_BASELINE_USERS=${QZ_BENCH_BASELINE_USERS:-1000} \
  "$BUILD/bench/bench_playlists"
