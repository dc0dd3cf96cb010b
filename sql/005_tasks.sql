-- 005_tasks.sql - the background task queue (outbox for analysis.tasks.v1) and the analysis results.

CREATE TABLE background_tasks (
        id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        task_type     text NOT NULL, -- mood_detection, energy_analysis, genre_classification, …
        entity_type   text NOT NULL, -- 'track'
        entity_id     uuid NOT NULL,
        status        text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
        priority      smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10), -- 10 = most urgent
        attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
        error_message text,
        result        jsonb,
        created_at    timestamptz NOT NULL DEFAULT now(),
        started_at    timestamptz,
        completed_at  timestamptz,
        not_before    timestamptz NOT NULL DEFAULT now(), -- retry backoff
        published_at  timestamptz                         -- outbox mark (analysis.tasks.v1)
);
-- The guide's index: claims (pending, by priority then age), the relay's pending scan,
-- the stuck-task reset (processing) and cleanup (completed/failed) all lead with status.
CREATE INDEX background_tasks_status_priority_idx
        ON background_tasks (status, priority DESC, created_at);
-- At most one unfinished task per (type, entity): concurrent duplicate enqueues leave one
-- (INSERT … ON CONFLICT DO NOTHING); a finished task may be followed by a new one (re-analysis).
CREATE UNIQUE INDEX background_tasks_unfinished_uniq
        ON background_tasks (task_type, entity_type, entity_id)
        WHERE status IN ('pending', 'processing');

-- The old system's trigger: a new track queues its analysis, once per track, in the
-- inserting transaction. Statement-level so a bulk catalog load costs one INSERT.
CREATE FUNCTION tracks_queue_analysis() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        INSERT INTO background_tasks (task_type, entity_type, entity_id, priority)
        SELECT t.task_type, 'track', n.id, t.priority
        FROM new_tracks n
        CROSS JOIN (VALUES ('mood_detection', 7),
                           ('energy_analysis', 6),
                           ('genre_classification', 5)) AS t (task_type, priority)
        ON CONFLICT (task_type, entity_type, entity_id)
                WHERE status IN ('pending', 'processing') DO NOTHING;
        RETURN NULL;
END
$$;

CREATE TRIGGER tracks_queue_analysis AFTER INSERT ON tracks
        REFERENCING NEW TABLE AS new_tracks
        FOR EACH STATEMENT EXECUTE FUNCTION tracks_queue_analysis();

-- Wakes the relay (LISTEN background_task_queued) instead of waiting for its next poll;
-- once per statement, at commit.
CREATE FUNCTION background_tasks_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_notify('background_task_queued', '');
        RETURN NULL;
END
$$;

CREATE TRIGGER background_tasks_notify AFTER INSERT ON background_tasks
        FOR EACH STATEMENT EXECUTE FUNCTION background_tasks_notify();

-- Values in 0–1 except tempo (BPM) and loudness (LUFS / LU).
CREATE TABLE track_features (
        track_id         uuid PRIMARY KEY REFERENCES tracks (id) ON DELETE CASCADE,
        tempo            real CHECK (tempo > 0),
        loudness_lufs    real,
        loudness_range   real CHECK (loudness_range >= 0),
        energy           real CHECK (energy BETWEEN 0 AND 1),
        valence          real CHECK (valence BETWEEN 0 AND 1),
        danceability     real CHECK (danceability BETWEEN 0 AND 1),
        acousticness     real CHECK (acousticness BETWEEN 0 AND 1),
        instrumentalness real CHECK (instrumentalness BETWEEN 0 AND 1),
        mood             text,
        mood_tags        text[],
        genre            text,
        genre_confidence real CHECK (genre_confidence BETWEEN 0 AND 1),
        features         jsonb NOT NULL DEFAULT '{}',
        analyzed_at      timestamptz NOT NULL DEFAULT now()
);
