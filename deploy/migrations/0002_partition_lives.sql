-- 0002_partition_lives: snapshot order (epoch, version) that survives a Redis rollback, the
-- lives of each partition, reconciliation reports and archived events Redis lost.
--
-- See stabilize_redis/durability/epochs.py and reconcile.py. A Redis that restarts from an AOF
-- missing its last second (or fails over to a lagging replica) reuses version numbers for new,
-- different states. Each partition therefore lives through numbered epochs: a new one begins
-- whenever its Redis server process changes, and every snapshot carries the epoch it was
-- checkpointed in. Rows written before this migration keep epoch 0 (older than any life).

ALTER TABLE workflow_snapshots ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

-- Reconciliation looks for rows of one partition written shortly before a life ended.
CREATE INDEX workflow_snapshots_partition_updated_idx
    ON workflow_snapshots (namespace, partition, updated_at);

-- ... and for events archived in that window (archived_at grows with insertion: BRIN is enough).
CREATE INDEX workflow_events_archived_at_brin ON workflow_events USING brin (archived_at);

-- The current life of each partition. `life` names the Redis server process (the SHA of a
-- script the checkpointer loaded into it; Redis 7 never persists or replicates its script
-- cache). `last_write_at`: the last checkpoint batch written in this life. While
-- `reconciled_epoch` < `epoch` the partition awaits reconciliation of the rows written since
-- `reconcile_from`, and no batch of it is written.
CREATE TABLE partition_lives (
    namespace        text        NOT NULL,
    partition        integer     NOT NULL,
    epoch            bigint      NOT NULL,
    life             text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_write_at    timestamptz,
    reconciled_epoch bigint      NOT NULL,
    reconcile_from   timestamptz,
    PRIMARY KEY (namespace, partition)
);

-- One row per workflow a reconciliation found Postgres ahead of (or different from) Redis on.
-- action: 'rewritten' (Redis's state replaces the snapshot), 'restored' (Redis had lost the
-- workflow; it was reloaded from the snapshot).
CREATE TABLE reconciliations (
    id               bigserial   PRIMARY KEY,
    namespace        text        NOT NULL,
    partition        integer     NOT NULL,
    workflow_id      text        NOT NULL,
    epoch            bigint      NOT NULL,
    postgres_epoch   bigint,
    postgres_version bigint,
    redis_version    bigint,
    action           text        NOT NULL,
    reason           text        NOT NULL,
    lost_events      integer     NOT NULL DEFAULT 0,
    at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX reconciliations_workflow_idx ON reconciliations (namespace, workflow_id, at);

-- Archived events whose transition Redis lost (moved out of workflow_events, so every stage
-- transition stays archived exactly once); `lost_epoch` is the epoch that found them lost.
CREATE TABLE workflow_events_lost (
    event_id     text        PRIMARY KEY,
    namespace    text        NOT NULL,
    workflow_id  text        NOT NULL,
    stream_id    text        NOT NULL,
    stream_ms    bigint      NOT NULL,
    stream_seq   bigint      NOT NULL,
    event_type   text        NOT NULL,
    entity_type  text        NOT NULL,
    entity_id    text        NOT NULL,
    "timestamp"  bigint      NOT NULL,
    data         jsonb       NOT NULL,
    archived_at  timestamptz NOT NULL,
    lost_epoch   bigint      NOT NULL,
    lost_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workflow_events_lost_workflow_idx ON workflow_events_lost (namespace, workflow_id);
