-- 010_listening_stats.sql - user_listening_stats kept current per batch: per-user counters,
-- the incremental apply, the SQL oracle and the reconcile (stats-aggregator; docs/stats-aggregator.md).
--
-- Why counters: the JSON lists are top-N over all time. Play counts only grow on the
-- incremental path, so the new top-N of a user is the top-N of (the old list, with the
-- counts of the entries touched by this batch replaced) and (the touched entries with their
-- new counts): an entry outside the old list that this batch did not touch still ranks
-- below N entries whose counts did not drop. The new count of a touched entry needs its old
-- count, which the old list does not hold when it was outside the top-N: hence one counter
-- row per (user, track), (user, genre) and (user, artist), read and written by primary key
-- only. The cost of a batch is then O(plays + touched users * N), independent of how much
-- history exists.

CREATE TABLE user_track_plays (
        user_id  uuid NOT NULL,
        track_id uuid NOT NULL, -- also tracks not (yet) in the catalog
        plays    bigint NOT NULL,
        PRIMARY KEY (user_id, track_id)
);

CREATE TABLE user_genre_plays (
        user_id uuid NOT NULL,
        genre   text NOT NULL, -- an element of tracks.genres at the time of the play
        plays   bigint NOT NULL,
        PRIMARY KEY (user_id, genre)
);

CREATE TABLE user_artist_plays (
        user_id   uuid NOT NULL,
        artist_id uuid NOT NULL, -- tracks.artist_id at the time of the play
        plays     bigint NOT NULL,
        PRIMARY KEY (user_id, artist_id)
);

-- Top p_limit of the old list with the touched entries replaced by their new versions.
-- Elements are objects with p_key (the id) and "play_count"; ties: play_count desc, then id
-- asc (bytewise: uuids in canonical text sort as uuids; genres in "C" order).
CREATE FUNCTION listening_stats_merge_top(p_old jsonb, p_new jsonb, p_key text, p_limit int)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT coalesce(jsonb_agg(e ORDER BY (e ->> 'play_count')::bigint DESC,
                                             (e ->> p_key) COLLATE "C"), '[]'::jsonb)
        FROM (SELECT e
              FROM (SELECT o.e
                    FROM jsonb_array_elements(p_old) o(e)
                    WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_new) n(e)
                                      WHERE n.e -> p_key = o.e -> p_key)
                    UNION ALL
                    SELECT n.e FROM jsonb_array_elements(p_new) n(e)) c
              ORDER BY (e ->> 'play_count')::bigint DESC, (e ->> p_key) COLLATE "C"
              LIMIT p_limit) t
$$;

-- Adds two {"key": count} objects key by key.
CREATE FUNCTION listening_stats_add_counts(p_old jsonb, p_new jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb)
        FROM (SELECT k, sum(v)::bigint AS n
              FROM (SELECT key AS k, value::bigint AS v FROM jsonb_each_text(p_old)
                    UNION ALL
                    SELECT key, value::bigint FROM jsonb_each_text(p_new)) x
              GROUP BY k) y
$$;

-- The incremental path. The caller (history.c) has COPYed a batch into the session's temp
-- table play_stage, in an open transaction. Inserts the plays whose event_id is new and
-- adds exactly those to the counters and to user_listening_stats. Returns how many were new,
-- and how many of those name a track not in the catalog.
--
-- p_locks: the Kafka partitions of the batch. plays.v1 is keyed by user_id, so two
-- transactions touching one user hold one partition: during a rebalance the old and the new
-- owner may both be inside a batch of it. The transaction-scoped advisory lock makes the
-- second wait, and its statements then see the first one's commit (READ COMMITTED takes a
-- snapshot per statement), so the JSON merge never starts from a stale row.
CREATE FUNCTION listening_stats_ingest(p_locks int[])
RETURNS TABLE (new_plays bigint, unknown_tracks bigint)
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_advisory_xact_lock(20510, l) FROM unnest(p_locks) l ORDER BY l;
        WITH ins AS (
                INSERT INTO play_history SELECT * FROM play_stage
                ON CONFLICT (event_id) DO NOTHING
                RETURNING user_id, track_id, played_at, duration_played_ms),
        k AS (
                SELECT i.user_id, i.track_id, i.played_at, i.duration_played_ms,
                       t.id IS NOT NULL AS known, t.artist_id, t.genres, t.title
                FROM ins i LEFT JOIN tracks t ON t.id = i.track_id),
        tr AS (
                INSERT INTO user_track_plays AS c (user_id, track_id, plays)
                SELECT user_id, track_id, count(*) FROM k GROUP BY user_id, track_id
                ON CONFLICT (user_id, track_id) DO UPDATE SET plays = c.plays + excluded.plays
                RETURNING c.user_id, c.track_id, c.plays),
        ge AS (
                INSERT INTO user_genre_plays AS c (user_id, genre, plays)
                SELECT k.user_id, g.genre, count(*)
                FROM k CROSS JOIN unnest(k.genres) g(genre)
                WHERE k.known GROUP BY k.user_id, g.genre
                ON CONFLICT (user_id, genre) DO UPDATE SET plays = c.plays + excluded.plays
                RETURNING c.user_id, c.genre, c.plays),
        ar AS (
                INSERT INTO user_artist_plays AS c (user_id, artist_id, plays)
                SELECT user_id, artist_id, count(*) FROM k WHERE known GROUP BY user_id, artist_id
                ON CONFLICT (user_id, artist_id) DO UPDATE SET plays = c.plays + excluded.plays
                RETURNING c.user_id, c.artist_id, c.plays),
        -- per user: the touched entries with their new counts, as list elements
        tr_u AS (
                SELECT tr.user_id,
                       jsonb_agg(jsonb_build_object('track_id', tr.track_id, 'track_title', t.title,
                                                    'artist_id', t.artist_id,
                                                    'play_count', tr.plays)) AS list
                FROM tr JOIN tracks t ON t.id = tr.track_id
                GROUP BY tr.user_id),
        ge_u AS (
                SELECT user_id, jsonb_agg(jsonb_build_object('genre', genre, 'play_count', plays)) AS list
                FROM ge GROUP BY user_id),
        ar_u AS (
                SELECT ar.user_id,
                       jsonb_agg(jsonb_build_object('artist_id', ar.artist_id, 'artist_name', a.name,
                                                    'play_count', ar.plays)) AS list
                FROM ar LEFT JOIN artists a ON a.id = ar.artist_id
                GROUP BY ar.user_id),
        hr AS (
                SELECT user_id, jsonb_object_agg(h, n) AS by_hour
                FROM (SELECT user_id, extract(hour FROM played_at AT TIME ZONE 'UTC')::int AS h,
                             count(*) AS n
                      FROM k GROUP BY 1, 2) x
                GROUP BY user_id),
        dy AS (
                SELECT user_id, jsonb_object_agg(d, n) AS by_day
                FROM (SELECT user_id, extract(dow FROM played_at AT TIME ZONE 'UTC')::int AS d,
                             count(*) AS n
                      FROM k GROUP BY 1, 2) x
                GROUP BY user_id),
        usr AS (
                SELECT user_id, count(*) AS n, sum(duration_played_ms)::bigint AS ms
                FROM k GROUP BY user_id),
        fin AS (
                INSERT INTO user_listening_stats AS s
                        (user_id, total_plays, total_listening_time_ms, favorite_genres,
                         favorite_artists, top_tracks, listening_patterns, updated_at)
                SELECT u.user_id,
                       coalesce(o.total_plays, 0) + u.n,
                       coalesce(o.total_listening_time_ms, 0) + u.ms,
                       CASE WHEN ge_u.list IS NULL THEN coalesce(o.favorite_genres, '[]')
                            ELSE listening_stats_merge_top(coalesce(o.favorite_genres, '[]'),
                                                           ge_u.list, 'genre', 5) END,
                       CASE WHEN ar_u.list IS NULL THEN coalesce(o.favorite_artists, '[]')
                            ELSE listening_stats_merge_top(coalesce(o.favorite_artists, '[]'),
                                                           ar_u.list, 'artist_id', 10) END,
                       CASE WHEN tr_u.list IS NULL THEN coalesce(o.top_tracks, '[]')
                            ELSE listening_stats_merge_top(coalesce(o.top_tracks, '[]'),
                                                           tr_u.list, 'track_id', 50) END,
                       jsonb_build_object(
                               'by_hour', listening_stats_add_counts(o.listening_patterns -> 'by_hour', hr.by_hour),
                               'by_day', listening_stats_add_counts(o.listening_patterns -> 'by_day', dy.by_day)),
                       now()
                FROM usr u
                JOIN hr USING (user_id)
                JOIN dy USING (user_id)
                LEFT JOIN tr_u USING (user_id)
                LEFT JOIN ge_u USING (user_id)
                LEFT JOIN ar_u USING (user_id)
                LEFT JOIN user_listening_stats o ON o.user_id = u.user_id
                ON CONFLICT (user_id) DO UPDATE
                SET total_plays = excluded.total_plays,
                    total_listening_time_ms = excluded.total_listening_time_ms,
                    favorite_genres = excluded.favorite_genres,
                    favorite_artists = excluded.favorite_artists,
                    top_tracks = excluded.top_tracks,
                    listening_patterns = excluded.listening_patterns,
                    updated_at = excluded.updated_at
                RETURNING 1)
        SELECT count(*), count(*) FILTER (WHERE NOT k.known) INTO new_plays, unknown_tracks FROM k;
        RETURN NEXT;
END
$$;

-- The correctness oracle: every user's stats computed from play_history and the catalog as
-- they are now, with the shapes, windows and tie-breaks of DESIGN.md "Postgres". The
-- incremental state equals it exactly, except for users with plays of a track whose catalog
-- row arrived (or whose artist/genres/title changed) after those plays, until the reconcile.
CREATE VIEW listening_stats_oracle AS
WITH tp AS (SELECT user_id, track_id, count(*) AS n FROM play_history GROUP BY user_id, track_id)
SELECT u.user_id,
       u.total_plays,
       u.total_listening_time_ms,
       coalesce(g.list, '[]'::jsonb) AS favorite_genres,
       coalesce(a.list, '[]'::jsonb) AS favorite_artists,
       coalesce(t.list, '[]'::jsonb) AS top_tracks,
       jsonb_build_object('by_hour', coalesce(h.obj, '{}'::jsonb),
                          'by_day', coalesce(d.obj, '{}'::jsonb)) AS listening_patterns
FROM (SELECT user_id, count(*) AS total_plays,
             coalesce(sum(duration_played_ms), 0)::bigint AS total_listening_time_ms
      FROM play_history GROUP BY user_id) u
LEFT JOIN (SELECT user_id,
                  jsonb_agg(jsonb_build_object('genre', genre, 'play_count', n)
                            ORDER BY n DESC, genre COLLATE "C") AS list
           FROM (SELECT user_id, genre, n,
                        row_number() OVER (PARTITION BY user_id
                                           ORDER BY n DESC, genre COLLATE "C") AS rk
                 FROM (SELECT tp.user_id, x.genre, sum(tp.n) AS n
                       FROM tp JOIN tracks tr ON tr.id = tp.track_id
                       CROSS JOIN unnest(tr.genres) x(genre)
                       GROUP BY 1, 2) c) r
           WHERE rk <= 5 GROUP BY user_id) g ON g.user_id = u.user_id
LEFT JOIN (SELECT user_id,
                  jsonb_agg(jsonb_build_object('artist_id', artist_id, 'artist_name', name,
                                               'play_count', n)
                            ORDER BY n DESC, artist_id) AS list
           FROM (SELECT c.user_id, c.artist_id, ar.name, c.n,
                        row_number() OVER (PARTITION BY c.user_id
                                           ORDER BY c.n DESC, c.artist_id) AS rk
                 FROM (SELECT tp.user_id, tr.artist_id, sum(tp.n) AS n
                       FROM tp JOIN tracks tr ON tr.id = tp.track_id
                       GROUP BY 1, 2) c
                 LEFT JOIN artists ar ON ar.id = c.artist_id) r
           WHERE rk <= 10 GROUP BY user_id) a ON a.user_id = u.user_id
LEFT JOIN (SELECT user_id,
                  jsonb_agg(jsonb_build_object('track_id', track_id, 'track_title', title,
                                               'artist_id', artist_id, 'play_count', n)
                            ORDER BY n DESC, track_id) AS list
           FROM (SELECT tp.user_id, tp.track_id, tr.title, tr.artist_id, tp.n,
                        row_number() OVER (PARTITION BY tp.user_id
                                           ORDER BY tp.n DESC, tp.track_id) AS rk
                 FROM tp JOIN tracks tr ON tr.id = tp.track_id) r
           WHERE rk <= 50 GROUP BY user_id) t ON t.user_id = u.user_id
LEFT JOIN (SELECT user_id, jsonb_object_agg(hh, n) AS obj
           FROM (SELECT user_id, extract(hour FROM played_at AT TIME ZONE 'UTC')::int AS hh,
                        count(*) AS n
                 FROM play_history GROUP BY 1, 2) x
           GROUP BY user_id) h ON h.user_id = u.user_id
LEFT JOIN (SELECT user_id, jsonb_object_agg(dd, n) AS obj
           FROM (SELECT user_id, extract(dow FROM played_at AT TIME ZONE 'UTC')::int AS dd,
                        count(*) AS n
                 FROM play_history GROUP BY 1, 2) x
           GROUP BY user_id) d ON d.user_id = u.user_id;

-- Rows of user_listening_stats that differ from the oracle (or are missing / extra).
CREATE VIEW listening_stats_differences AS
SELECT coalesce(o.user_id, s.user_id) AS user_id
FROM listening_stats_oracle o
FULL JOIN user_listening_stats s ON s.user_id = o.user_id
WHERE o.user_id IS NULL OR s.user_id IS NULL
   OR (o.total_plays, o.total_listening_time_ms, o.favorite_genres, o.favorite_artists,
       o.top_tracks, o.listening_patterns)
      IS DISTINCT FROM
      (s.total_plays, s.total_listening_time_ms, s.favorite_genres, s.favorite_artists,
       s.top_tracks, s.listening_patterns);

-- The aggregate-listening-history job: recomputes every user's stats and the counters from
-- play_history and the catalog, in one transaction, and returns how many users' rows differed
-- from the incremental state. The EXCLUSIVE locks make concurrent batches wait (they then
-- add their plays on top of the rebuilt state); reads of the stats stay possible.
CREATE FUNCTION listening_stats_reconcile()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
        v_diff bigint;
BEGIN
        LOCK TABLE user_listening_stats, user_track_plays, user_genre_plays, user_artist_plays
                IN EXCLUSIVE MODE;
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
        -- the counters follow the catalog as it is now
        TRUNCATE user_track_plays, user_genre_plays, user_artist_plays;
        INSERT INTO user_track_plays (user_id, track_id, plays)
                SELECT user_id, track_id, count(*) FROM play_history GROUP BY 1, 2;
        INSERT INTO user_genre_plays (user_id, genre, plays)
                SELECT c.user_id, g.genre, sum(c.plays)
                FROM user_track_plays c JOIN tracks t ON t.id = c.track_id
                CROSS JOIN unnest(t.genres) g(genre)
                GROUP BY 1, 2;
        INSERT INTO user_artist_plays (user_id, artist_id, plays)
                SELECT c.user_id, t.artist_id, sum(c.plays)
                FROM user_track_plays c JOIN tracks t ON t.id = c.track_id
                GROUP BY 1, 2;
        RETURN v_diff;
END
$$;
