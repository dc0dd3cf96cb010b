-- 006_jobs.sql - scheduled jobs and their runs, plus pg_cron-compatible views in schema cron.

CREATE TABLE automation_jobs (
        jobid       serial NOT NULL UNIQUE,
        name        text PRIMARY KEY,
        schedule    text NOT NULL CHECK (schedule ~ '^\S+(\s+\S+){4}$'), -- 5-field cron, UTC
        enabled     boolean NOT NULL DEFAULT true,
        next_run_at timestamptz, -- NULL: the scheduler computes it from schedule
        owner       text NOT NULL, -- the service that executes the job
        updated_at  timestamptz NOT NULL DEFAULT now()
);

-- DESIGN.md "Jobs", in its order (jobid follows it).
INSERT INTO automation_jobs (name, schedule, owner) VALUES
        ('aggregate-listening-history', '0 2 * * *',    'stats-aggregator'),
        ('generate-smart-playlists',    '0 3 * * *',    'playlist-builder'),
        ('calculate-trending',          '0 */6 * * *',  'trending-ranker'),
        ('cleanup-background-tasks',    '0 4 * * 0',    'analysis-worker'),
        ('cleanup-expired-playlists',   '0 5 * * *',    'playlist-builder'),
        ('compute-track-similarities',  '30 1 * * *',   'playlist-builder'),
        ('reset-stuck-tasks',           '*/5 * * * *',  'analysis-worker');

CREATE TABLE automation_job_runs (
        run_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        -- a number for cron.job_run_details.runid (pg_cron's runid is a bigint)
        run_seq      bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        job          text NOT NULL REFERENCES automation_jobs (name) ON UPDATE CASCADE,
        params       jsonb NOT NULL DEFAULT '{}', -- string values (AutomationCommand.params)
        status       text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
        expected     bigint, -- fan-out size, set by the owner (generate-smart-playlists)
        processed    bigint NOT NULL DEFAULT 0,
        queued_at    timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz, -- when the scheduler put the AutomationCommand on Kafka
        started_at   timestamptz,
        finished_at  timestamptz,
        message      text
);
-- the scheduler publishes queued runs that are not yet on Kafka
CREATE INDEX automation_job_runs_unpublished_idx ON automation_job_runs (queued_at)
        WHERE published_at IS NULL;
-- latest runs of a job (status endpoint, cron.job_run_details by job)
CREATE INDEX automation_job_runs_job_queued_idx ON automation_job_runs (job, queued_at DESC);

-- Wakes the scheduler (LISTEN automation_run_queued) within the inserting commit.
-- Payload: {"run_id": "…", "job": "…"}.
CREATE FUNCTION automation_job_runs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_notify('automation_run_queued',
                          json_build_object('run_id', NEW.run_id, 'job', NEW.job)::text);
        RETURN NULL;
END
$$;

CREATE TRIGGER automation_job_runs_notify AFTER INSERT ON automation_job_runs
        FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION automation_job_runs_notify();

-- The one way SQL queues work: a queued run that the scheduler publishes as an
-- AutomationCommand. Returns the run_id.
CREATE FUNCTION queue_automation_run(p_job text, p_params jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
        v_run_id uuid;
BEGIN
        IF NOT EXISTS (SELECT 1 FROM automation_jobs WHERE name = p_job) THEN
                RAISE EXCEPTION 'unknown automation job "%"', p_job
                        USING ERRCODE = 'invalid_parameter_value';
        END IF;
        INSERT INTO automation_job_runs (job, params)
        VALUES (p_job, coalesce(p_params, '{}'))
        RETURNING run_id INTO v_run_id;
        RETURN v_run_id;
END
$$;

-- The SQL a job runs, as pg_cron would show it: the guide's function where one exists.
CREATE FUNCTION automation_job_command(p_job text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE p_job
                WHEN 'aggregate-listening-history' THEN 'SELECT aggregate_all_user_listening_history();'
                WHEN 'generate-smart-playlists' THEN 'SELECT generate_all_smart_playlists();'
                WHEN 'calculate-trending' THEN 'SELECT calculate_trending_tracks();'
                ELSE format('SELECT queue_automation_run(%L);', p_job)
        END
$$;

-- pg_cron compatibility: the guide's monitoring queries run as written.
CREATE SCHEMA cron;

CREATE VIEW cron.job AS
SELECT j.jobid::bigint                         AS jobid,
       j.schedule                              AS schedule,
       automation_job_command(j.name)          AS command,
       'localhost'::text                       AS nodename,
       coalesce(inet_server_port(), 5432)      AS nodeport,
       current_database()::text                AS database,
       current_user::text                      AS username,
       j.enabled                               AS active,
       j.name                                  AS jobname
FROM automation_jobs j;

-- pg_cron's status vocabulary: queued runs show as 'starting'.
CREATE VIEW cron.job_run_details AS
SELECT j.jobid::bigint                         AS jobid,
       r.run_seq                               AS runid,
       NULL::integer                           AS job_pid,
       current_database()::text                AS database,
       current_user::text                      AS username,
       CASE WHEN r.job = 'generate-smart-playlists' AND r.params ? 'user_id'
                 AND r.params->>'playlist_type' = 'daily_mix'
            THEN format('SELECT generate_daily_mix(%L);', r.params->>'user_id')
            ELSE automation_job_command(r.job) END AS command,
       CASE r.status WHEN 'queued' THEN 'starting' ELSE r.status END AS status,
       coalesce(r.message,
                CASE WHEN r.expected IS NOT NULL
                     THEN format('%s of %s processed', r.processed, r.expected) END)
                                               AS return_message,
       coalesce(r.started_at, r.queued_at)     AS start_time,
       r.finished_at                           AS end_time
FROM automation_job_runs r
JOIN automation_jobs j ON j.name = r.job;

-- The guide's "Modifying Schedules": cron.schedule / cron.unschedule act on the built-in
-- jobs (each is executed by its owning service; the command text is not run).
CREATE FUNCTION cron.schedule(job_name text, schedule text, command text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
        v_jobid bigint;
BEGIN
        UPDATE automation_jobs
        SET schedule = $2, enabled = true, next_run_at = NULL,
            updated_at = now()
        WHERE name = job_name
        RETURNING jobid INTO v_jobid;
        IF v_jobid IS NULL THEN
                RAISE EXCEPTION 'unknown job "%": only the built-in jobs can be scheduled', job_name
                        USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM pg_notify('automation_jobs_changed', job_name);
        RETURN v_jobid;
END
$$;

CREATE FUNCTION cron.unschedule(job_name text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
        UPDATE automation_jobs SET enabled = false, next_run_at = NULL, updated_at = now()
        WHERE name = job_name;
        IF NOT FOUND THEN
                RAISE EXCEPTION 'could not find valid entry for job ''%''', job_name
                        USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM pg_notify('automation_jobs_changed', job_name);
        RETURN true;
END
$$;
