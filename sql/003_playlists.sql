-- 003_playlists.sql - smart playlists (one current list per user and type), their generations, track similarities.

-- Primary key includes the partition key (user_id), as a hash-partitioned table requires.
CREATE TABLE smart_playlists (
        user_id       uuid NOT NULL,
        playlist_type text NOT NULL CHECK (playlist_type ~ '^[a-z][a-z0-9_]*$'),
        id            uuid NOT NULL DEFAULT gen_random_uuid(), -- = smart_playlist_generations.id
        track_ids     uuid[] NOT NULL DEFAULT '{}',
        generated_at  timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz NOT NULL,
        metadata      jsonb NOT NULL DEFAULT '{}', -- params of parameterised types, variant, …
        PRIMARY KEY (user_id, playlist_type)
) PARTITION BY HASH (user_id);

DO $$
BEGIN
        FOR i IN 0..15 LOOP
                EXECUTE format('CREATE TABLE smart_playlists_p%s PARTITION OF smart_playlists '
                               'FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
                               lpad(i::text, 2, '0'), i);
        END LOOP;
END
$$;
-- The guide's (user_id, playlist_type, expires_at) lookups are served by the primary key;
-- cleanup-expired-playlists needs expires_at alone.
CREATE INDEX smart_playlists_expires_at_idx ON smart_playlists (expires_at);

-- Every generation, kept 90 days, so A/B attribution (play_history.source_playlist_id)
-- survives regeneration.
CREATE TABLE smart_playlist_generations (
        id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id       uuid NOT NULL,
        playlist_type text NOT NULL,
        variant       text NOT NULL DEFAULT 'control',
        track_ids     uuid[] NOT NULL DEFAULT '{}',
        generated_at  timestamptz NOT NULL DEFAULT now()
);
-- 90-day retention delete
CREATE INDEX smart_playlist_generations_generated_at_idx ON smart_playlist_generations (generated_at);

CREATE TABLE track_similarities (
        track_id         uuid NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        similar_track_id uuid NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        score            real NOT NULL,
        kind             text NOT NULL CHECK (kind IN ('cf', 'content')),
        computed_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (track_id, kind, similar_track_id),
        CHECK (track_id <> similar_track_id)
);
-- ON DELETE CASCADE from tracks looks rows up by similar_track_id
CREATE INDEX track_similarities_similar_idx ON track_similarities (similar_track_id);
