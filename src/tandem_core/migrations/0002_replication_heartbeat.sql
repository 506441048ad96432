-- Replication heartbeat of the Aurora global database: the writer region's monitor upserts its row every run
-- (written_at on the writer's clock); the secondary region's monitor reads the newest row from its read-only
-- replica. An old row while the writer answers means replication has stalled, even when AWS's lag metrics
-- have simply stopped. One row per region that has been the writer; never deleted (a row is its own history).
CREATE TABLE replication_heartbeat (
    region      text        PRIMARY KEY,
    written_at  timestamptz NOT NULL,
    beats       bigint      NOT NULL DEFAULT 1 CHECK (beats > 0)
);
