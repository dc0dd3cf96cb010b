-- 040_analysis_queue.sql - analysis-worker: the outcome outbox and the relay's indexes.

-- A finished task's outcome is relayed like the task itself: completed ->
-- TrackFeatures on analysis.results.v1, failed -> RejectedEvent on
-- analysis.tasks.dlq.v1 (with the error history). The row is the outbox, so
-- a failure recorded by automation-api's POST /api/automation/worker (which
-- has no Kafka path for it) or a crash before the produce loses nothing.
ALTER TABLE background_tasks ADD COLUMN outcome_published_at timestamptz;

-- The relay's scans: unpublished due work in claim order, and finished rows
-- whose outcome is not on Kafka yet. Both stay small (rows leave them once
-- relayed), so they cost little on insert.
CREATE INDEX background_tasks_unpublished_idx
        ON background_tasks (priority DESC, created_at)
        WHERE status = 'pending' AND published_at IS NULL;
CREATE INDEX background_tasks_outcome_unpublished_idx
        ON background_tasks (completed_at)
        WHERE status IN ('completed', 'failed') AND outcome_published_at IS NULL;
