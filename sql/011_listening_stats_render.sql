-- 011_listening_stats_render.sql - stats-aggregator, second design: the ingest transaction
-- writes play_history, two counters (per user and track; per user totals and pattern) and a
-- dirty mark, set-based in one statement; the JSON of user_listening_stats is rendered from
-- the counters and the catalog for the users marked dirty, in its own frequent transaction
-- (listening_stats_render, every QOQNUZ_STATS_RENDER_INTERVAL_MS).
-- docs/stats-aggregator.md "Design" and "Stats lag".
--
-- Why: rebuilding three top-N jsonb lists per touched user in every batch cost ~50-65 JSON
-- elements per play (5k plays/s), and each counter table costs about one indexed insert per
-- play. A user's JSON is now built once per render pass however many plays they had since.

-- Per user: totals and the listening pattern as 24 + 7 plain columns (hour and weekday in
-- UTC, day 0 = Sunday): an upsert adds scalars, no jsonb per batch. Only the primary key is
-- indexed and the counts are not, so updates are HOT; fillfactor leaves the room for them.
CREATE TABLE user_play_totals (
        user_id uuid PRIMARY KEY,
        plays   bigint NOT NULL DEFAULT 0,
        ms      bigint NOT NULL DEFAULT 0,
        h00 bigint NOT NULL DEFAULT 0,
        h01 bigint NOT NULL DEFAULT 0,
        h02 bigint NOT NULL DEFAULT 0,
        h03 bigint NOT NULL DEFAULT 0,
        h04 bigint NOT NULL DEFAULT 0,
        h05 bigint NOT NULL DEFAULT 0,
        h06 bigint NOT NULL DEFAULT 0,
        h07 bigint NOT NULL DEFAULT 0,
        h08 bigint NOT NULL DEFAULT 0,
        h09 bigint NOT NULL DEFAULT 0,
        h10 bigint NOT NULL DEFAULT 0,
        h11 bigint NOT NULL DEFAULT 0,
        h12 bigint NOT NULL DEFAULT 0,
        h13 bigint NOT NULL DEFAULT 0,
        h14 bigint NOT NULL DEFAULT 0,
        h15 bigint NOT NULL DEFAULT 0,
        h16 bigint NOT NULL DEFAULT 0,
        h17 bigint NOT NULL DEFAULT 0,
        h18 bigint NOT NULL DEFAULT 0,
        h19 bigint NOT NULL DEFAULT 0,
        h20 bigint NOT NULL DEFAULT 0,
        h21 bigint NOT NULL DEFAULT 0,
        h22 bigint NOT NULL DEFAULT 0,
        h23 bigint NOT NULL DEFAULT 0,
        d0 bigint NOT NULL DEFAULT 0,
        d1 bigint NOT NULL DEFAULT 0,
        d2 bigint NOT NULL DEFAULT 0,
        d3 bigint NOT NULL DEFAULT 0,
        d4 bigint NOT NULL DEFAULT 0,
        d5 bigint NOT NULL DEFAULT 0,
        d6 bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
ALTER TABLE user_track_plays SET (fillfactor = 80);
-- Genre and artist counts are summed from user_track_plays and the catalog at render time
-- (the oracle's definition, so a catalog change is exact at the user's next render), which
-- saves two upserts per play in the ingest transaction.
DROP TABLE user_genre_plays, user_artist_plays;

-- Users whose counters changed since their stats row was last rendered, written in the
-- ingest transaction (durable: a crash between ingest and render loses no mark). No index:
-- inserts are appends, and the render takes every visible row at once. A user may appear
-- more than once (one row per batch). marked_at = the ingest transaction's start: the age
-- of the oldest row is the stats lag.
CREATE TABLE listening_stats_dirty (
        user_id   uuid NOT NULL,
        marked_at timestamptz NOT NULL DEFAULT now()
);

-- user_play_totals recomputed from play_history: the backfill below and the reconcile both
-- use it (the caller empties the table first when it already holds rows).
CREATE FUNCTION listening_stats_totals_from_history() RETURNS void
LANGUAGE sql AS $$
INSERT INTO user_play_totals (user_id, plays, ms, h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, h22, h23, d0, d1, d2, d3, d4, d5, d6)
SELECT user_id, count(*), coalesce(sum(duration_played_ms), 0),
       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 0),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 1),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 2),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 3),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 4),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 5),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 6),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 7),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 8),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 9),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 10),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 11),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 12),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 13),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 14),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 15),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 16),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 17),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 18),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 19),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 20),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 21),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 22),
                       count(*) FILTER (WHERE extract(hour FROM played_at AT TIME ZONE 'UTC') = 23),
       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 0),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 1),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 2),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 3),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 4),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 5),
                       count(*) FILTER (WHERE extract(dow FROM played_at AT TIME ZONE 'UTC') = 6)
FROM play_history GROUP BY user_id;
$$;

-- Existing history (a database that ran 010): totals from play_history; its stats rows are
-- already current, so nothing is marked.
SELECT listening_stats_totals_from_history();

DROP FUNCTION listening_stats_merge_top(jsonb, jsonb, text, int);
DROP FUNCTION listening_stats_add_counts(jsonb, jsonb);

-- The ingest step (same contract as in 010: the caller COPYed the batch into play_stage in an
-- open transaction). Inserts the new plays, adds exactly those to user_track_plays and
-- user_play_totals, marks their users dirty. One statement; each counter aggregated per key
-- over the batch and written in key order.
-- p_locks: the batch's partitions; two owners of one partition during a rebalance take the
-- same counter rows, and the lock keeps them from deadlocking on them in opposite orders.
CREATE OR REPLACE FUNCTION listening_stats_ingest(p_locks int[])
RETURNS TABLE (new_plays bigint, unknown_tracks bigint)
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_advisory_xact_lock(20510, l) FROM unnest(p_locks) l ORDER BY l;
        WITH ins AS (
                INSERT INTO play_history SELECT * FROM play_stage
                ON CONFLICT (event_id) DO NOTHING
                RETURNING user_id, track_id, played_at, duration_played_ms),
        k AS (
                SELECT i.user_id, i.track_id, i.duration_played_ms,
                       extract(hour FROM i.played_at AT TIME ZONE 'UTC')::int AS hr,
                       extract(dow FROM i.played_at AT TIME ZONE 'UTC')::int AS dw,
                       t.id IS NOT NULL AS known
                FROM ins i LEFT JOIN tracks t ON t.id = i.track_id),
        tr AS (
                INSERT INTO user_track_plays AS c (user_id, track_id, plays)
                SELECT user_id, track_id, count(*) FROM k GROUP BY user_id, track_id
                ORDER BY 1, 2
                ON CONFLICT (user_id, track_id) DO UPDATE SET plays = c.plays + excluded.plays),
        tot AS (
                INSERT INTO user_play_totals AS c (user_id, plays, ms, h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, h22, h23, d0, d1, d2, d3, d4, d5, d6)
                SELECT user_id, count(*), coalesce(sum(duration_played_ms), 0),
                       count(*) FILTER (WHERE hr = 0),
                       count(*) FILTER (WHERE hr = 1),
                       count(*) FILTER (WHERE hr = 2),
                       count(*) FILTER (WHERE hr = 3),
                       count(*) FILTER (WHERE hr = 4),
                       count(*) FILTER (WHERE hr = 5),
                       count(*) FILTER (WHERE hr = 6),
                       count(*) FILTER (WHERE hr = 7),
                       count(*) FILTER (WHERE hr = 8),
                       count(*) FILTER (WHERE hr = 9),
                       count(*) FILTER (WHERE hr = 10),
                       count(*) FILTER (WHERE hr = 11),
                       count(*) FILTER (WHERE hr = 12),
                       count(*) FILTER (WHERE hr = 13),
                       count(*) FILTER (WHERE hr = 14),
                       count(*) FILTER (WHERE hr = 15),
                       count(*) FILTER (WHERE hr = 16),
                       count(*) FILTER (WHERE hr = 17),
                       count(*) FILTER (WHERE hr = 18),
                       count(*) FILTER (WHERE hr = 19),
                       count(*) FILTER (WHERE hr = 20),
                       count(*) FILTER (WHERE hr = 21),
                       count(*) FILTER (WHERE hr = 22),
                       count(*) FILTER (WHERE hr = 23),
                       count(*) FILTER (WHERE dw = 0),
                       count(*) FILTER (WHERE dw = 1),
                       count(*) FILTER (WHERE dw = 2),
                       count(*) FILTER (WHERE dw = 3),
                       count(*) FILTER (WHERE dw = 4),
                       count(*) FILTER (WHERE dw = 5),
                       count(*) FILTER (WHERE dw = 6)
                FROM k GROUP BY user_id
                ORDER BY 1
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
        SELECT count(*), count(*) FILTER (WHERE NOT k.known) INTO new_plays, unknown_tracks FROM k;
        RETURN NEXT;
END
$$;

-- The render step: takes every visible dirty mark and rewrites those users' stats rows from
-- the counters, with the shapes and tie-breaks of listening_stats_oracle (titles and names
-- as the catalog has them now; genres and artists as they were at play time, as counted).
-- Returns the users rendered and how long the oldest mark had waited (the stats lag).
-- The advisory lock serialises render passes (two instances, the reconcile): a pass that
-- took its snapshot earlier must not commit over a later one. It is taken in its own
-- statement so the next statement's snapshot (READ COMMITTED) is taken after it.
CREATE FUNCTION listening_stats_render(OUT users bigint, OUT lag_seconds double precision)
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_advisory_xact_lock(20511);
        WITH d AS (DELETE FROM listening_stats_dirty RETURNING user_id, marked_at),
        u AS (SELECT user_id, min(marked_at) AS since FROM d GROUP BY user_id),
        -- the dirty users' per-track counts with the catalog as it is now (unknown tracks
        -- count in the totals only, as in the oracle)
        ut AS MATERIALIZED (
                SELECT c.user_id, c.track_id, c.plays, t.title, t.artist_id, t.genres
                FROM u JOIN user_track_plays c ON c.user_id = u.user_id
                JOIN tracks t ON t.id = c.track_id),
        tt AS (
                SELECT user_id,
                       jsonb_agg(jsonb_build_object('track_id', track_id, 'track_title', title,
                                                    'artist_id', artist_id, 'play_count', plays)
                                 ORDER BY plays DESC, track_id) AS list
                FROM (SELECT ut.*, row_number() OVER (PARTITION BY user_id
                                                      ORDER BY plays DESC, track_id) AS rk
                      FROM ut) r
                WHERE rk <= 50 GROUP BY user_id),
        aa AS (
                SELECT user_id,
                       jsonb_agg(jsonb_build_object('artist_id', artist_id,
                                                    'artist_name', (SELECT ar.name FROM artists ar
                                                                    WHERE ar.id = r.artist_id),
                                                    'play_count', n)
                                 ORDER BY n DESC, artist_id) AS list
                FROM (SELECT user_id, artist_id, n,
                             row_number() OVER (PARTITION BY user_id ORDER BY n DESC, artist_id) AS rk
                      FROM (SELECT user_id, artist_id, sum(plays) AS n FROM ut GROUP BY 1, 2) x) r
                WHERE rk <= 10 GROUP BY user_id),
        gg AS (
                SELECT user_id,
                       jsonb_agg(jsonb_build_object('genre', genre, 'play_count', n)
                                 ORDER BY n DESC, genre COLLATE "C") AS list
                FROM (SELECT user_id, genre, n,
                             row_number() OVER (PARTITION BY user_id
                                                ORDER BY n DESC, genre COLLATE "C") AS rk
                      FROM (SELECT ut.user_id, g.genre, sum(ut.plays) AS n
                            FROM ut CROSS JOIN unnest(ut.genres) g(genre) GROUP BY 1, 2) x) r
                WHERE rk <= 5 GROUP BY user_id),
        up AS (
                INSERT INTO user_listening_stats AS s
                        (user_id, total_plays, total_listening_time_ms, favorite_genres,
                         favorite_artists, top_tracks, listening_patterns, updated_at)
                SELECT u.user_id, t.plays, t.ms,
                       coalesce(gg.list, '[]'::jsonb),
                       coalesce(aa.list, '[]'::jsonb),
                       coalesce(tt.list, '[]'::jsonb),
                       jsonb_build_object(
                               'by_hour', jsonb_strip_nulls(jsonb_build_object('0', nullif(t.h00, 0), '1', nullif(t.h01, 0), '2', nullif(t.h02, 0), '3', nullif(t.h03, 0), '4', nullif(t.h04, 0), '5', nullif(t.h05, 0), '6', nullif(t.h06, 0), '7', nullif(t.h07, 0), '8', nullif(t.h08, 0), '9', nullif(t.h09, 0), '10', nullif(t.h10, 0), '11', nullif(t.h11, 0), '12', nullif(t.h12, 0), '13', nullif(t.h13, 0), '14', nullif(t.h14, 0), '15', nullif(t.h15, 0), '16', nullif(t.h16, 0), '17', nullif(t.h17, 0), '18', nullif(t.h18, 0), '19', nullif(t.h19, 0), '20', nullif(t.h20, 0), '21', nullif(t.h21, 0), '22', nullif(t.h22, 0), '23', nullif(t.h23, 0))),
                               'by_day', jsonb_strip_nulls(jsonb_build_object('0', nullif(t.d0, 0), '1', nullif(t.d1, 0), '2', nullif(t.d2, 0), '3', nullif(t.d3, 0), '4', nullif(t.d4, 0), '5', nullif(t.d5, 0), '6', nullif(t.d6, 0)))),
                       now()
                FROM u JOIN user_play_totals t ON t.user_id = u.user_id
                LEFT JOIN gg ON gg.user_id = u.user_id
                LEFT JOIN aa ON aa.user_id = u.user_id
                LEFT JOIN tt ON tt.user_id = u.user_id
                ON CONFLICT (user_id) DO UPDATE
                SET total_plays = excluded.total_plays,
                    total_listening_time_ms = excluded.total_listening_time_ms,
                    favorite_genres = excluded.favorite_genres,
                    favorite_artists = excluded.favorite_artists,
                    top_tracks = excluded.top_tracks,
                    listening_patterns = excluded.listening_patterns,
                    updated_at = excluded.updated_at)
        SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(since)), 0)
        INTO users, lag_seconds FROM u;
END
$$;

-- The aggregate-listening-history job, on the new path: renders what is pending first (so
-- "differed" counts real drift, not the render lag), then as in 010 recomputes every user
-- from the oracle, and rebuilds all counters including user_play_totals. Lock order:
-- the render lock, then play_history in SHARE mode (waits for running batches and holds new
-- ones before they lock anything else), then the stats and counter tables.
CREATE OR REPLACE FUNCTION listening_stats_reconcile()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
        v_diff bigint;
BEGIN
        PERFORM pg_advisory_xact_lock(20511);
        LOCK TABLE play_history IN SHARE MODE;
        LOCK TABLE user_listening_stats, user_track_plays, user_play_totals,
                   listening_stats_dirty IN EXCLUSIVE MODE;
        PERFORM listening_stats_render();
        CREATE TEMP TABLE listening_stats_recomputed ON COMMIT DROP AS
                SELECT * FROM listening_stats_oracle;
        ALTER TABLE listening_stats_recomputed ADD PRIMARY KEY (user_id);
        SELECT count(*) INTO v_diff
        FROM listening_stats_recomputed o
        FULL JOIN user_listening_stats s ON s.user_id = o.user_id
        WHERE o.user_id IS NULL OR s.user_id IS NULL
           OR (o.total_plays, o.total_listening_time_ms, o.favorite_genres, o.favorite_artists,
               o.top_tracks, o.listening_patterns)
              IS DISTINCT FROM
              (s.total_plays, s.total_listening_time_ms, s.favorite_genres, s.favorite_artists,
               s.top_tracks, s.listening_patterns);
        DELETE FROM user_listening_stats s
        WHERE NOT EXISTS (SELECT 1 FROM listening_stats_recomputed o WHERE o.user_id = s.user_id);
        INSERT INTO user_listening_stats AS s
                (user_id, total_plays, total_listening_time_ms, favorite_genres, favorite_artists,
                 top_tracks, listening_patterns, last_aggregated_at, updated_at)
        SELECT user_id, total_plays, total_listening_time_ms, favorite_genres, favorite_artists,
               top_tracks, listening_patterns, now(), now()
        FROM listening_stats_recomputed
        ON CONFLICT (user_id) DO UPDATE
        SET total_plays = excluded.total_plays,
            total_listening_time_ms = excluded.total_listening_time_ms,
            favorite_genres = excluded.favorite_genres,
            favorite_artists = excluded.favorite_artists,
            top_tracks = excluded.top_tracks,
            listening_patterns = excluded.listening_patterns,
            last_aggregated_at = excluded.last_aggregated_at,
            -- updated_at means "the stats changed": keep it when they did not
            updated_at = CASE WHEN (s.total_plays, s.total_listening_time_ms, s.favorite_genres,
                                    s.favorite_artists, s.top_tracks, s.listening_patterns)
                                   IS DISTINCT FROM
                                   (excluded.total_plays, excluded.total_listening_time_ms,
                                    excluded.favorite_genres, excluded.favorite_artists,
                                    excluded.top_tracks, excluded.listening_patterns)
                              THEN excluded.updated_at ELSE s.updated_at END;
        -- the counters follow the catalog as it is now; nothing is left to render
        TRUNCATE user_track_plays, user_play_totals, listening_stats_dirty;
        INSERT INTO user_track_plays (user_id, track_id, plays)
                SELECT user_id, track_id, count(*) FROM play_history GROUP BY 1, 2;
        PERFORM listening_stats_totals_from_history();
        RETURN v_diff;
END
$$;
