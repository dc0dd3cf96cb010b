-- 012_listening_stats_direct.sql - stats-aggregator, the common ingest path without the dedup
-- join (docs/stats-aggregator.md "Design").
--
-- history.c COPYs a batch straight into play_history under a savepoint. When that succeeds
-- every play of the batch was new (a duplicate, in the batch or already stored, fails the COPY
-- with a unique_violation on event_id), so the counters are the batch's own: history.c sums
-- them in C and COPYs the sums into two session temp tables, LIKE the counter tables:
--   stats_stage_pairs (user_id, track_id, plays): one row per (user, track) of the batch;
--   stats_stage_users (user_play_totals' columns): one row per user of the batch.
-- This function adds them to the counters and marks the users dirty, as
-- listening_stats_ingest does for the staging path (which history.c still takes after a
-- unique_violation: it rolls back to the savepoint and dedups with ON CONFLICT).
-- The caller holds the batch's partition locks (20510, p) already. Returns how many of the
-- batch's plays name a track not in the catalog (a metric).
CREATE FUNCTION listening_stats_apply(OUT unknown_tracks bigint)
LANGUAGE plpgsql AS $$
BEGIN
        WITH tr AS (
                INSERT INTO user_track_plays AS c (user_id, track_id, plays)
                SELECT user_id, track_id, plays FROM stats_stage_pairs ORDER BY 1, 2
                ON CONFLICT (user_id, track_id) DO UPDATE SET plays = c.plays + excluded.plays),
        tot AS (
                INSERT INTO user_play_totals AS c
                SELECT * FROM stats_stage_users ORDER BY user_id
                ON CONFLICT (user_id) DO UPDATE
                SET plays = c.plays + excluded.plays, ms = c.ms + excluded.ms,
                    h00 = c.h00 + excluded.h00,
                    h01 = c.h01 + excluded.h01,
                    h02 = c.h02 + excluded.h02,
                    h03 = c.h03 + excluded.h03,
                    h04 = c.h04 + excluded.h04,
                    h05 = c.h05 + excluded.h05,
                    h06 = c.h06 + excluded.h06,
                    h07 = c.h07 + excluded.h07,
                    h08 = c.h08 + excluded.h08,
                    h09 = c.h09 + excluded.h09,
                    h10 = c.h10 + excluded.h10,
                    h11 = c.h11 + excluded.h11,
                    h12 = c.h12 + excluded.h12,
                    h13 = c.h13 + excluded.h13,
                    h14 = c.h14 + excluded.h14,
                    h15 = c.h15 + excluded.h15,
                    h16 = c.h16 + excluded.h16,
                    h17 = c.h17 + excluded.h17,
                    h18 = c.h18 + excluded.h18,
                    h19 = c.h19 + excluded.h19,
                    h20 = c.h20 + excluded.h20,
                    h21 = c.h21 + excluded.h21,
                    h22 = c.h22 + excluded.h22,
                    h23 = c.h23 + excluded.h23,
                    d0 = c.d0 + excluded.d0,
                    d1 = c.d1 + excluded.d1,
                    d2 = c.d2 + excluded.d2,
                    d3 = c.d3 + excluded.d3,
                    d4 = c.d4 + excluded.d4,
                    d5 = c.d5 + excluded.d5,
                    d6 = c.d6 + excluded.d6
                RETURNING c.user_id),
        dirty AS (
                INSERT INTO listening_stats_dirty (user_id) SELECT user_id FROM tot)
        SELECT coalesce(sum(p.plays), 0) INTO unknown_tracks
        FROM stats_stage_pairs p
        WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = p.track_id);
END
$$;

-- No JIT for the per-batch and per-pass statements: their row estimates come from temp
-- tables and CTEs (no statistics), which put their costs over jit_above_cost, and compiling
-- took longer than running: a render pass of 10k users ran 2.7 s with JIT, 1.8 s without
-- (EXPLAIN ANALYZE, 1M plays).
ALTER FUNCTION listening_stats_render() SET jit = off;
ALTER FUNCTION listening_stats_ingest(int[]) SET jit = off;
ALTER FUNCTION listening_stats_apply() SET jit = off;
