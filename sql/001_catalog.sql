-- 001_catalog.sql - the catalog: users, artists, albums, tracks (the tracks row is the outbox for tracks.v1).
-- The runner wraps each file in one transaction; no BEGIN/COMMIT here.

CREATE TABLE users (
        id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        display_name text NOT NULL DEFAULT '',
        created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE artists (
        id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name       text NOT NULL,
        genres     text[] NOT NULL DEFAULT '{}', -- display only; a track's genres are tracks.genres
        created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE albums (
        id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        artist_id    uuid NOT NULL REFERENCES artists (id),
        title        text NOT NULL,
        release_date date,
        created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX albums_artist_id_idx ON albums (artist_id);

CREATE TABLE tracks (
        id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        title        text NOT NULL,
        artist_id    uuid NOT NULL REFERENCES artists (id),
        album_id     uuid REFERENCES albums (id),
        duration_ms  integer NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
        audio_url    text,
        genres       text[] NOT NULL DEFAULT '{}',
        popularity   smallint NOT NULL DEFAULT 0 CHECK (popularity BETWEEN 0 AND 100),
        released_at  date,
        created_at   timestamptz NOT NULL DEFAULT now(),
        -- when this version of the row was written (TrackEvent.updated_at); kept by a trigger
        updated_at   timestamptz NOT NULL DEFAULT now(),
        deleted_at   timestamptz,
        -- outbox mark: NULL = this version is not yet on tracks.v1
        published_at timestamptz,
        -- the old system's columns, written by analysis
        mood         text,
        energy_level real CHECK (energy_level BETWEEN 0 AND 1)
);
-- new_for_you: recent releases of a user's top artists
CREATE INDEX tracks_artist_released_idx ON tracks (artist_id, released_at);
CREATE INDEX tracks_album_id_idx ON tracks (album_id);
-- the outbox relay scans only unpublished rows
CREATE INDEX tracks_unpublished_idx ON tracks (updated_at) WHERE published_at IS NULL;

-- A change to a field that tracks.v1 carries makes the row a new version: stamp updated_at and
-- clear published_at so the relay puts it on tracks.v1 again (a soft delete included:
-- deleted_at set -> op delete). mood/energy_level are not on tracks.v1 (analysis results
-- travel on analysis.results.v1), and the relay's own published_at mark is not a change.
CREATE FUNCTION tracks_mark_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        IF (NEW.title, NEW.artist_id, NEW.album_id, NEW.duration_ms, NEW.audio_url, NEW.genres,
            NEW.popularity, NEW.released_at, NEW.deleted_at)
           IS DISTINCT FROM
           (OLD.title, OLD.artist_id, OLD.album_id, OLD.duration_ms, OLD.audio_url, OLD.genres,
            OLD.popularity, OLD.released_at, OLD.deleted_at)
        THEN
                NEW.updated_at := now();
                IF NEW.published_at IS NOT DISTINCT FROM OLD.published_at THEN
                        NEW.published_at := NULL;
                END IF;
        END IF;
        RETURN NEW;
END
$$;

CREATE TRIGGER tracks_mark_changed BEFORE UPDATE ON tracks
        FOR EACH ROW EXECUTE FUNCTION tracks_mark_changed();
