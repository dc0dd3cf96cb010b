-- 020_trending_checkpoint.sql - the trending-ranker's restart checkpoint (docs/trending-ranker.md).
--
-- Per (consumer group, Kafka partition): the window's accepted plays, appended in binary
-- chunks by the hour of played_at (so whole hours expire with one DELETE), and the next Kafka
-- offset those plays reflect. Chunks and offset are written in one transaction, so a restore
-- always sees plays and offset that belong together. epoch/owner fence a previous owner of the
-- partition: every assignment bumps the epoch and a save only writes while its epoch is current.

CREATE TABLE trending_checkpoints (
        group_id    text        NOT NULL,
        part        integer     NOT NULL,
        epoch       bigint      NOT NULL,
        owner       text        NOT NULL,
        next_offset bigint,                -- NULL: never saved (rebuild from play_history)
        saved_at    timestamptz,
        PRIMARY KEY (group_id, part)
);

-- data: 56-byte records (event_id, user_id, track_id as 16 raw bytes each, played_at as
-- little-endian int64 epoch ms), concatenated. Closed hours are compacted to one row.
CREATE TABLE trending_checkpoint_plays (
        group_id text    NOT NULL,
        part     integer NOT NULL,
        hour_ms  bigint  NOT NULL,
        seq      bigserial,
        data     bytea   NOT NULL,
        PRIMARY KEY (group_id, part, hour_ms, seq)
);
ALTER TABLE trending_checkpoint_plays ALTER COLUMN data SET STORAGE EXTERNAL; -- already compact
