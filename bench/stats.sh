#!/usr/bin/env bash
# stats.sh - bench/stats: plays/s persisted with user_listening_stats current, against a bare
# COPY (the machine's limit), row-by-row INSERT and the old system's full SQL recompute, all
# on one Postgres started here (fsync on; settings printed). Measures the aggregator's store
# path directly on batches (bench/bench_stats.c calls history_store, what one consumed
# plays.v1 batch does), not through the dev-broker, which keeps only ~35k plays/partition.
# Sizes: QZ_BENCH_PLAYS (default 1000000; the issue's run is 10000000), QZ_BENCH_USERS
# (100000), QZ_BENCH_BATCH (10000), QZ_BENCH_ROW_PLAYS (20000), QZ_BENCH_RENDER_MS (1000: the
# render interval, QOQNUZ_STATS_RENDER_INTERVAL_MS; longer = fewer user renders per play, more
# stats lag). Also measured: the floor of any design with per-user stats in the ingest
# transaction (the COPY + one counter upsert per user; QZ_BENCH_FLOOR=0 skips it,
# QZ_BENCH_SYSTEM=0 stops after it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BUILD=${BUILD:-build}
T=$(mktemp -d /tmp/qoqnuz-bench-stats.XXXXXX)
trap 'servers_stop "$T"' EXIT
QZ_PG_FSYNC=${QZ_PG_FSYNC:-on} servers_start "$T" 2>/dev/null
echo "postgres: $("$PG_BIN/postgres" --version); settings:" \
  "$(psql "$QZ_TEST_PG_DSN" -Atc "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings
     WHERE name IN ('fsync','synchronous_commit','shared_buffers','wal_level','max_wal_size',
                    'checkpoint_timeout','work_mem','maintenance_work_mem')")"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/bench/bench_stats"
