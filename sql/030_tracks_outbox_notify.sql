-- 030_tracks_outbox_notify.sql - wakes the automation-api's tracks.v1 relay when a track version awaits publishing.
-- The relay also sweeps periodically; this only makes an upload appear on tracks.v1 at once.
-- Row-level with a WHEN so the relay's own "published_at = now()" marks do not wake it again;
-- Postgres folds identical notifications of one transaction into one, so a bulk load sends one.

CREATE FUNCTION tracks_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_notify('tracks_outbox', '');
        RETURN NULL;
END
$$;

CREATE TRIGGER tracks_outbox_notify AFTER INSERT OR UPDATE ON tracks
        FOR EACH ROW WHEN (NEW.published_at IS NULL) EXECUTE FUNCTION tracks_outbox_notify();
