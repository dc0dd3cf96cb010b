#!/usr/bin/env bash
# trending.sh - bench/trending: the trending-ranker against the old 6-hourly SQL recompute, on
# one Postgres/Redis/dev-broker started here.
#  (a) cold rebuild from play_history (QZ_BENCH_PLAYS plays over 7 days, 100k tracks, 100k
#      users) vs one run of the old system's SQL recompute of trending_tracks, same Postgres;
#  (b) restore from the checkpoint (window + offsets) after a restart, same data;
#  (c) memory per million distinct (track, user) pairs (qz_trending_window_bytes / pairs);
#  (d) ranker CPU per second while staying fresh (publishing every QZ_BENCH_PUBLISH_MS, no input: the
#      unchanged ranking only moves meta.calculated_at, docs/trending-ranker.md) vs the
#      old SQL run once per second (its wall time per run: CPU of a backend running it);
#  (e) freshness under load: qz-loadgen produces distinct plays (fresh event ids and
#      played_at) into plays.v1 paced at QZ_BENCH_RATE plays/s for QZ_BENCH_SECONDS; two
#      the ranker's histogram qz_trending_visible_seconds gives each play's produce -> visible
#      time (buckets 50 ms apart up to 3 s: p50/p99 interpolated inside the bucket, and the
#      bucket's bounds); two gauges sampled every 200 ms add now - the newest
#      play visible in Redis and, at each publish, now - the oldest play it made visible. The achieved rate and the CPU share of qz-loadgen, the dev-broker and
#      the ranker are printed, so a rate short of the target says which process is the limit.
# Sizes: QZ_BENCH_PLAYS (default 1000000; the issue's run: 10000000), QZ_BENCH_SECONDS (10),
# QZ_BENCH_RATE (50000), QZ_BENCH_CONNECTIONS (8) and QZ_BENCH_BATCH (500) for qz-loadgen;
# the ranker's QZ_BENCH_PUBLISH_MS (500), QZ_BENCH_FETCH_WAIT_MS (100), QZ_BENCH_BATCH_WAIT_MS
# (100).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BUILD=${BUILD:-build}
BIN=$BUILD/bin
N=${QZ_BENCH_PLAYS:-1000000}
SECS=${QZ_BENCH_SECONDS:-10}
RATE=${QZ_BENCH_RATE:-50000}   # plays/s offered by qz-loadgen in (e)
CONNS=${QZ_BENCH_CONNECTIONS:-8}
BATCH=${QZ_BENCH_BATCH:-500}
PUB_MS=${QZ_BENCH_PUBLISH_MS:-500}    # the ranker's publish interval (its default: 500)
FETCH_MS=${QZ_BENCH_FETCH_WAIT_MS:-100} # fetch.wait.max.ms (default 100)
BWAIT_MS=${QZ_BENCH_BATCH_WAIT_MS:-100} # the consumer's batch wait (default 100)
T=$(mktemp -d /tmp/qoqnuz-bench-trending.XXXXXX)
RPID=
cleanup() { [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null; servers_stop "$T"; }
trap cleanup EXIT
servers_start "$T" 2>/dev/null
DSN=$QZ_TEST_PG_DSN
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (other work shares the CPU)"
echo "data: $N plays over 7 days, 100000 tracks, 100000 users"
psql "$DSN" -q -c "INSERT INTO play_history (event_id, user_id, track_id, played_at)
  SELECT gen_random_uuid(), md5('u' || (random() * 99999)::int)::uuid,
         md5('t' || (random() ^ 3 * 99999)::int)::uuid,
         now() - random() * interval '7 days'
  FROM generate_series(1, $N)" -c "ANALYZE play_history"

ms() { date +%s%3N; }
OLD_SQL="BEGIN; DELETE FROM trending_tracks; INSERT INTO trending_tracks (track_id, trend_score,
  play_count_24h, play_count_7d, unique_listeners_24h, unique_listeners_7d, calculated_at)
  SELECT track_id, 10*p24 + 2*p7 + 20*l24 + 5*l7, p24, p7, l24, l7, now() FROM (
    SELECT track_id,
      count(*) FILTER (WHERE played_at > now() - interval '24 hours') p24, count(*) p7,
      count(DISTINCT user_id) FILTER (WHERE played_at > now() - interval '24 hours') l24,
      count(DISTINCT user_id) l7
    FROM play_history WHERE played_at > now() - interval '7 days'
    GROUP BY track_id HAVING count(*) >= 3) c
  ORDER BY 2 DESC LIMIT 100; COMMIT;"
t0=$(ms); psql "$DSN" -q -c "$OLD_SQL"; t1=$(ms); OLD=$((t1 - t0))
echo "old SQL recompute (one run): $OLD ms"

PORT=$(free_port)
start_ranker() {
  QOQNUZ_HTTP_ADDR=127.0.0.1:$PORT QOQNUZ_KAFKA_BROKERS=$QZ_TEST_BROKERS QOQNUZ_PG_DSN=$DSN \
  QOQNUZ_REDIS_URL=$QZ_TEST_REDIS_URL QOQNUZ_TRENDING_GROUP_ID=bench-trending \
  QOQNUZ_TRENDING_JOBS=false QOQNUZ_TRENDING_PUBLISH_MS=$PUB_MS \
  QOQNUZ_TRENDING_FETCH_WAIT_MS=$FETCH_MS QOQNUZ_TRENDING_BATCH_WAIT_MS=$BWAIT_MS \
  "$BIN/trending-ranker" >>"$T/ranker.log" 2>&1 &
  RPID=$!
  wait_ready "http://127.0.0.1:$PORT/readyz" 600 >/dev/null 2>&1 || { tail "$T/ranker.log"; exit 1; }
}
metric() { curl -s "127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cpu_ms() { awk '{print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$RPID/stat"; }

start_ranker
# readiness can come from a publish before the assignment: wait for the rebuilt window
for _ in $(seq 600); do
  awk -v a="$(metric qz_trending_window_plays)" 'BEGIN {exit !(a + 0 > 0)}' && break
  sleep 0.5
done
REB=$(metric qz_trending_rebuild_seconds)
PLAYS=$(metric qz_trending_window_plays)
echo "cold rebuild from play_history: ${REB} s for $PLAYS plays (old SQL: $OLD ms; ratio" \
  "rebuild/old = $(awk -v a="$REB" -v b="$OLD" 'BEGIN {printf "%.2f", a * 1000 / b}'))"
# the first checkpoint after a rebuild writes everything; wait for it
for _ in $(seq 600); do
  awk -v a="$(metric qz_trending_checkpoint_plays_total)" -v b="$PLAYS" 'BEGIN {exit !(a + 0 >= b + 0)}' && break
  sleep 0.5
done
echo "first checkpoint: $(metric qz_trending_checkpoint_seconds_sum) s to write" \
  "$(metric qz_trending_checkpoint_plays_total) plays"
sleep 3 # measured after the first checkpoint emptied the journal
PAIRS=$(metric qz_trending_window_pairs); BYTES=$(metric qz_trending_window_bytes)
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$RPID/status")
echo "memory: window $BYTES bytes for $PAIRS (track,user) pairs and $PLAYS plays =" \
  "$(awk -v b="$BYTES" -v p="$PAIRS" 'BEGIN {printf "%.0f MB", b / p}') per million pairs" \
  "(process RSS $((RSS / 1024)) MB)"
c0=$(cpu_ms); sleep 10; c1=$(cpu_ms)
CPU=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.1f", (b - a) / 10}')
echo "ranker CPU while fresh (publish every $PUB_MS ms, no input): $CPU ms per second vs old SQL" \
  "once per second: $OLD ms per second (ratio $(awk -v a="$CPU" -v b="$OLD" \
  'BEGIN {printf "%.0f", b / (a > 0 ? a : 0.1)}')x less)"

kill -TERM "$RPID"; wait "$RPID" || true
start_ranker
for _ in $(seq 600); do
  awk -v a="$(metric qz_trending_restored_plays_total)" 'BEGIN {exit !(a + 0 > 0)}' && break
  sleep 0.5
done
echo "restore from checkpoint: $(metric qz_trending_restore_seconds) s for" \
  "$(metric qz_trending_restored_plays_total) plays (cold rebuild: $REB s)"

# per play: produce -> the publish that made it visible (qz_trending_visible_seconds), from the
# histogram's change over the load; quantiles are bucket upper bounds
hist_snap() { curl -s "127.0.0.1:$PORT/metrics" | awk '/^qz_trending_visible_seconds_bucket/ {
  match($1, /le="[^"]*"/); print substr($1, RSTART + 4, RLENGTH - 5), $2}'; }
# q: the bucket (lo, hi] holding the quantile, and a linear interpolation inside it
hist_q() { paste "$1" "$2" | awk 'function q(f,   i, lo, c0, x) {lo = 0; c0 = 0
    for (i = 1; i <= NR; i++) {if (d[i] >= f * n) {if (le[i] == "+Inf") return sprintf("> %s s", lo)
        x = lo + (le[i] - lo) * (f * n - c0) / (d[i] - c0 > 0 ? d[i] - c0 : 1)
        return sprintf("%.2f s (in %s-%s s)", x, lo, le[i])}; lo = le[i]; c0 = d[i]}}
  {le[NR] = $1; d[NR] = $4 - $2} END {n = d[NR]
  printf "p50 %s, p99 %s (%d plays)", q(0.5), q(0.99), n}'; }
hist_snap >"$T/h0"
c0=$(cpu_ms); a0=$(metric 'qz_trending_plays_total{result="added"}')
"$BIN/qz-loadgen" produce --brokers "$QZ_TEST_BROKERS" --seconds "$SECS" --rate "$RATE" \
  --connections "$CONNS" --batch "$BATCH" --pid loadgen=0 \
  --pid dev-broker="$(cat "$T/broker/dev-broker.pid")" --pid ranker="$RPID" >"$T/loadgen.out" 2>&1 &
LG=$!
: >"$T/fresh"
while kill -0 "$LG" 2>/dev/null; do
  echo "$(metric qz_trending_freshness_lag_seconds) $(metric qz_trending_freshness_max_lag_seconds)" >>"$T/fresh"
  sleep 0.2
done
c1=$(cpu_ms)
sleep 2 # the last publish
echo "load: $(tail -1 "$T/loadgen.out") (load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "plays counted by the ranker during the load: $(awk -v a="$a0" -v b="$(metric 'qz_trending_plays_total{result="added"}')" 'BEGIN {printf "%.0f", b - a}') (distinct: fresh event ids)"
pct() { sort -g | awk '{v[NR] = $1} END {printf "p50 %.2f s, p99 %.2f s (%d samples)", v[int(NR * 0.5) + 1], v[(int(NR * 0.99) > 0) ? int(NR * 0.99) : 1], NR}'; }
# the first second is the loadgen's warm-up (not at the target rate): skipped
hist_snap >"$T/h1"
echo "freshness under load, per play (produce -> visible in Redis): $(hist_q "$T/h0" "$T/h1")" \
  "(target p99 <= 2 s)"
echo "freshness under load, newest play visible in Redis (now - its produce time, at each publish):" \
  "$(tail -n +6 "$T/fresh" | awk '{print $1}' | pct)"
echo "freshness under load, oldest play a publish made visible (worst play of each publish):" \
  "$(tail -n +6 "$T/fresh" | awk '{print $2}' | pct)"
echo "ranker CPU under load: $(awk -v a="$c0" -v b="$c1" -v s="$SECS" 'BEGIN {printf "%.0f", (b - a) / s}') ms per second"
