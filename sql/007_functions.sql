-- 007_functions.sql - the SQL functions the guide's operators call by name; each queues a run.

CREATE FUNCTION aggregate_all_user_listening_history() RETURNS uuid
LANGUAGE sql AS $$
        SELECT queue_automation_run('aggregate-listening-history');
$$;

CREATE FUNCTION generate_all_smart_playlists() RETURNS uuid
LANGUAGE sql AS $$
        SELECT queue_automation_run('generate-smart-playlists');
$$;

CREATE FUNCTION calculate_trending_tracks() RETURNS uuid
LANGUAGE sql AS $$
        SELECT queue_automation_run('calculate-trending');
$$;

-- One user's daily_mix, now: a generate-smart-playlists run narrowed by params.
CREATE FUNCTION generate_daily_mix(p_user_id uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
BEGIN
        IF p_user_id IS NULL THEN
                RAISE EXCEPTION 'generate_daily_mix: user id is null'
                        USING ERRCODE = 'null_value_not_allowed';
        END IF;
        RETURN queue_automation_run('generate-smart-playlists',
                                    jsonb_build_object('user_id', p_user_id::text,
                                                       'playlist_type', 'daily_mix'));
END
$$;

-- The trigger endpoint's "all": the three jobs, in dependency order (stats feed playlists).
-- Returns {"aggregate-listening-history": run_id, "generate-smart-playlists": run_id,
--          "calculate-trending": run_id}.
CREATE FUNCTION trigger_all_automations() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
        v_stats     uuid := aggregate_all_user_listening_history();
        v_playlists uuid := generate_all_smart_playlists();
        v_trending  uuid := calculate_trending_tracks();
BEGIN
        RETURN jsonb_build_object('aggregate-listening-history', v_stats,
                                  'generate-smart-playlists', v_playlists,
                                  'calculate-trending', v_trending);
END
$$;
