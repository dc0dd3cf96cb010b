-- 052_playlist_similarities_version.sql - playlist-builder: track_similarities' writers bump the
-- catalog version after their data commits, not inside their transaction.
--
-- sql/051's statement trigger on track_similarities updated playlist_catalog_version inside the
-- writing transaction, so the similarity job (DELETE then COPY of every neighbour, seconds to tens
-- of seconds) held the version row's lock the whole time and every tracks writer (POST
-- /api/tracks: sql/051's tracks triggers update the same row) queued behind it. The rule now, for
-- any writer of track_similarities: commit the data, then bump the version in a short transaction
-- of its own (playlist_catalog_bump_now()). A builder that reads the new version sees the new data;
-- one that loaded between the two commits read the old version, so it reloads at its next batch.
-- tracks keep their triggers: their writers are short transactions.
DROP TRIGGER track_similarities_catalog_version ON track_similarities;

CREATE FUNCTION playlist_catalog_bump_now() RETURNS bigint
LANGUAGE sql AS $$
        UPDATE playlist_catalog_version SET version = version + 1, changed_at = now()
        RETURNING version
$$;
