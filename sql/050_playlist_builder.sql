-- 050_playlist_builder.sql - playlist-builder: request log (idempotence, answers), A/B report, catalog indexes.

-- One row per PlaylistRequest handled, written in the transaction that stores the playlist (or
-- records the failure): a redelivered request is recognised by request_id, so its run progress is
-- counted once and its PlaylistGenerated can be republished from here. Kept 7 days
-- (cleanup-expired-playlists).
CREATE TABLE playlist_requests_done (
        request_id    uuid PRIMARY KEY,
        user_id       uuid NOT NULL,
        playlist_type text NOT NULL,
        run_id        uuid,
        status        text NOT NULL CHECK (status IN ('ok', 'error')),
        error         text,
        playlist_id   uuid, -- smart_playlist_generations.id when ok
        track_count   integer,
        generated_at  timestamptz,
        expires_at    timestamptz,
        done_at       timestamptz NOT NULL DEFAULT now()
);
-- retention delete
CREATE INDEX playlist_requests_done_done_at_idx ON playlist_requests_done (done_at);

-- A/B testing: plays that came from a smart playlist, per playlist type and algorithm variant.
-- A play names the generation it came from (play_history.source_playlist_id), so attribution
-- survives regeneration (generations are kept 90 days).
CREATE VIEW playlist_ab_report AS
SELECT g.playlist_type,
       g.variant,
       count(DISTINCT g.id)                                   AS generations,
       count(DISTINCT g.user_id)                              AS users,
       count(p.event_id)                                      AS plays,
       count(DISTINCT p.user_id)                              AS listeners,
       coalesce(avg(p.completed::int), 0)::real               AS completion_rate,
       (count(p.event_id)::real / greatest(count(DISTINCT g.id), 1)) AS plays_per_generation
FROM smart_playlist_generations g
LEFT JOIN play_history p ON p.source_playlist_id = g.id
GROUP BY g.playlist_type, g.variant;

-- discovery_weekly and the fallbacks read the catalog by genre, release date and popularity.
CREATE INDEX tracks_genres_gin_idx ON tracks USING gin (genres) WHERE deleted_at IS NULL;
CREATE INDEX tracks_released_at_idx ON tracks (released_at) WHERE deleted_at IS NULL;
CREATE INDEX tracks_popularity_idx ON tracks (popularity DESC, id) WHERE deleted_at IS NULL;
