-- 002_plays.sql - play history (no foreign keys: a play may arrive before its user or track) and per-user stats.

CREATE TABLE play_history (
        event_id           uuid PRIMARY KEY, -- idempotency key from PlayEvent
        user_id            uuid NOT NULL,
        track_id           uuid NOT NULL,
        played_at          timestamptz NOT NULL,
        duration_played_ms integer NOT NULL DEFAULT 0 CHECK (duration_played_ms >= 0),
        completed          boolean NOT NULL DEFAULT false,
        source             text,
        device_type        text,
        source_playlist_id uuid -- smart_playlist_generations.id the play came from
);
-- Every index here costs ingest speed, so only the queries that exist:
-- per-user windows (stats reconcile, daily_mix, forgotten_favorites, the guide's 30-day check)
CREATE INDEX play_history_user_played_idx ON play_history (user_id, played_at);
-- time windows over everyone (trending rebuild from Postgres, 24h/7d)
CREATE INDEX play_history_played_idx ON play_history (played_at);

CREATE TABLE user_listening_stats (
        user_id                 uuid PRIMARY KEY,
        total_plays             bigint NOT NULL DEFAULT 0,
        total_listening_time_ms bigint NOT NULL DEFAULT 0,
        -- [{"genre": "rock", "play_count": 12}], top 5
        favorite_genres         jsonb NOT NULL DEFAULT '[]',
        -- [{"artist_id": "…", "artist_name": "…", "play_count": 9}], top 10
        favorite_artists        jsonb NOT NULL DEFAULT '[]',
        -- [{"track_id": "…", "track_title": "…", "artist_id": "…", "play_count": 4}], top 50
        top_tracks              jsonb NOT NULL DEFAULT '[]',
        -- {"by_hour": {"0": 3}, "by_day": {"0": 5}} (UTC, day 0 = Sunday, non-zero keys only)
        listening_patterns      jsonb NOT NULL DEFAULT '{"by_hour": {}, "by_day": {}}',
        last_aggregated_at      timestamptz,
        updated_at              timestamptz NOT NULL DEFAULT now()
);
-- the guide's index; serves "stats changed since" scans
CREATE INDEX user_listening_stats_updated_at_idx ON user_listening_stats (updated_at);
