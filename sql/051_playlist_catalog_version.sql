-- 051_playlist_catalog_version.sql - playlist-builder: a version of what its in-memory catalog holds.
--
-- The builder keeps tracks (artist, genres, popularity, release date, deleted) and
-- track_similarities in memory and reloads them when this version moves; every change to those
-- tables bumps it in the changing transaction, so a builder that reads the version sees exactly the
-- catalog it names. Tracks: inserts and deletes per statement; updates only when a column the
-- builder reads changes (the analysis-worker's mood/energy_level updates do not count).
CREATE TABLE playlist_catalog_version (
        id         boolean PRIMARY KEY DEFAULT true CHECK (id),
        version    bigint NOT NULL DEFAULT 0,
        changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO playlist_catalog_version DEFAULT VALUES;

CREATE FUNCTION playlist_catalog_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        UPDATE playlist_catalog_version SET version = version + 1, changed_at = now();
        RETURN NULL;
END
$$;

CREATE TRIGGER tracks_catalog_version_stmt AFTER INSERT OR DELETE OR TRUNCATE ON tracks
        FOR EACH STATEMENT EXECUTE FUNCTION playlist_catalog_bump();
CREATE TRIGGER tracks_catalog_version_row AFTER UPDATE ON tracks
        FOR EACH ROW WHEN ((OLD.artist_id, OLD.genres, OLD.popularity, OLD.released_at,
                            OLD.deleted_at) IS DISTINCT FROM
                           (NEW.artist_id, NEW.genres, NEW.popularity, NEW.released_at,
                            NEW.deleted_at))
        EXECUTE FUNCTION playlist_catalog_bump();
CREATE TRIGGER track_similarities_catalog_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON track_similarities FOR EACH STATEMENT EXECUTE FUNCTION playlist_catalog_bump();
