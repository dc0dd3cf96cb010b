-- 004_trending.sql - the trending snapshot: current top 100, replaced as a whole in one transaction.

-- No foreign key: the snapshot is derived from plays, which may name a track whose row
-- has not arrived yet; a dangling id is harmless, a failed snapshot write is not.
CREATE TABLE trending_tracks (
        track_id             uuid PRIMARY KEY,
        trend_score          double precision NOT NULL,
        play_count_24h       integer NOT NULL DEFAULT 0,
        play_count_7d        integer NOT NULL DEFAULT 0,
        unique_listeners_24h integer NOT NULL DEFAULT 0,
        unique_listeners_7d  integer NOT NULL DEFAULT 0,
        calculated_at        timestamptz NOT NULL DEFAULT now()
);
-- the guide's index: GET /api/automation/trending reads in score order
CREATE INDEX trending_tracks_trend_score_idx ON trending_tracks (trend_score DESC);
