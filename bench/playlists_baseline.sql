-- playlists_baseline.sql - bench/playlists' baseline: the old system's approach, one SQL function
-- call per user per type, written from the guide's rules (the old system's own SQL does not run).
-- Loaded by bench/playlists.sh into the bench's own database only; not a migration.
CREATE OR REPLACE FUNCTION bench_old_playlist(p_user uuid, p_type text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
        ids uuid[];
        ttl interval := CASE WHEN p_type IN ('discovery_weekly', 'forgotten_favorites')
                             THEN interval '7 days' ELSE interval '1 day' END;
BEGIN
        IF p_type = 'daily_mix' THEN
                -- 60 %: recent plays by count; 40 %: popular tracks of favourite genres not
                -- played lately.
                SELECT array_agg(id) INTO ids FROM (
                        (SELECT h.track_id AS id FROM play_history h
                          WHERE h.user_id = p_user AND h.played_at > now() - interval '30 days'
                          GROUP BY h.track_id ORDER BY count(*) DESC, max(h.played_at) DESC LIMIT 30)
                        UNION ALL
                        (SELECT t.id FROM tracks t
                          WHERE t.deleted_at IS NULL AND t.genres && ARRAY(
                                SELECT g FROM play_history h JOIN tracks x ON x.id = h.track_id,
                                       unnest(x.genres) g WHERE h.user_id = p_user
                                 GROUP BY g ORDER BY count(*) DESC LIMIT 5)
                            AND t.id NOT IN (SELECT track_id FROM play_history
                                              WHERE user_id = p_user
                                                AND played_at > now() - interval '30 days')
                          ORDER BY t.popularity DESC LIMIT 20)) q;
        ELSIF p_type = 'discovery_weekly' THEN
                SELECT array_agg(id) INTO ids FROM (
                        SELECT t.id FROM tracks t
                         WHERE t.deleted_at IS NULL AND t.released_at > current_date - 90
                           AND t.genres && ARRAY(
                                SELECT g FROM play_history h JOIN tracks x ON x.id = h.track_id,
                                       unnest(x.genres) g WHERE h.user_id = p_user
                                 GROUP BY g ORDER BY count(*) DESC LIMIT 5)
                           AND NOT EXISTS (SELECT 1 FROM play_history h
                                            WHERE h.user_id = p_user AND h.track_id = t.id)
                         ORDER BY t.popularity * 0.5 / 100 + random() * 0.5 DESC LIMIT 50) q;
        ELSIF p_type = 'new_for_you' THEN
                SELECT array_agg(id) INTO ids FROM (
                        SELECT t.id FROM tracks t
                         WHERE t.deleted_at IS NULL AND t.released_at > current_date - 30
                           AND t.artist_id IN (SELECT x.artist_id FROM play_history h
                                                 JOIN tracks x ON x.id = h.track_id
                                                WHERE h.user_id = p_user GROUP BY x.artist_id
                                                ORDER BY count(*) DESC LIMIT 10)
                         ORDER BY t.released_at DESC LIMIT 50) q;
        ELSIF p_type = 'forgotten_favorites' THEN
                SELECT array_agg(id) INTO ids FROM (
                        SELECT h.track_id AS id FROM play_history h
                         WHERE h.user_id = p_user GROUP BY h.track_id
                        HAVING count(*) >= 3 AND max(h.played_at) < now() - interval '60 days'
                         ORDER BY count(*) DESC LIMIT 50) q;
        ELSE
                RAISE EXCEPTION 'unknown type %', p_type;
        END IF;
        INSERT INTO smart_playlists (user_id, playlist_type, track_ids, generated_at, expires_at,
                                     metadata)
        VALUES (p_user, p_type, coalesce(ids, '{}'), now(), now() + ttl, '{"algorithm":"old"}')
        ON CONFLICT (user_id, playlist_type) DO UPDATE
           SET track_ids = EXCLUDED.track_ids, generated_at = EXCLUDED.generated_at,
               expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata;
        RETURN coalesce(array_length(ids, 1), 0);
END
$$;
