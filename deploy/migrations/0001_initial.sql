-- 0001_initial: workflow snapshots, the archived event log and the namespaces registry.
--
-- Applied by `stabilize-redis migrate` inside one transaction with search_path set to the
-- target schema, so every name below is created in that schema. Times from the engine are
-- epoch milliseconds (bigint); bookkeeping times are timestamptz.

-- One row per workflow: its latest checkpointed hash (a msgpack map of every field) and the
-- columns listing needs. `version` is the workflow hash's `ver`; an upsert only replaces a row
-- with a strictly older version.
CREATE TABLE workflow_snapshots (
    namespace          text        NOT NULL,
    id                 text        NOT NULL,
    application        text        NOT NULL,
    name               text        NOT NULL,
    status             text        NOT NULL,
    partition          integer     NOT NULL,
    version            bigint      NOT NULL,
    snapshot           bytea       NOT NULL,
    pipeline_config_id text,
    start_time         bigint,
    end_time           bigint,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, id)
);

CREATE INDEX workflow_snapshots_application_idx
    ON workflow_snapshots (namespace, application, start_time DESC NULLS FIRST, id DESC);
CREATE INDEX workflow_snapshots_pipeline_config_idx
    ON workflow_snapshots (namespace, pipeline_config_id, start_time DESC NULLS FIRST, id DESC)
    WHERE pipeline_config_id IS NOT NULL;
CREATE INDEX workflow_snapshots_status_idx
    ON workflow_snapshots (namespace, status, start_time DESC NULLS FIRST, id DESC);
CREATE INDEX workflow_snapshots_start_idx
    ON workflow_snapshots (namespace, start_time DESC NULLS FIRST, id DESC);

-- The archived audit events of every workflow, copied from the per-workflow Redis streams.
-- `event_id` (a ULID minted by the commit that produced the event) makes archiving idempotent.
-- `stream_id` is the Redis stream entry id; (stream_ms, stream_seq) order a workflow's events.
CREATE TABLE workflow_events (
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
    data         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    archived_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workflow_events_workflow_idx
    ON workflow_events (namespace, workflow_id, stream_ms, stream_seq);
CREATE INDEX workflow_events_type_idx
    ON workflow_events (namespace, event_type, "timestamp");

-- Namespaces that have checkpointed here, with their partition count (fixed at creation).
-- A namespace listed here whose Redis marker is gone has lost its Redis data.
CREATE TABLE namespaces (
    namespace  text        PRIMARY KEY,
    partitions integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
