"""Snapshots to PostgreSQL from a cluster: the checkpointer of a worker on the cluster writes
every finished workflow and, past the retention, evicts it from Redis - every script it calls
touching one slot."""

from __future__ import annotations

import psycopg
from psycopg import sql

from stabilize_redis import RedisWorkflowStore, Task, TaskResult, WorkflowStatus
from stabilize_redis.durability.checkpointer import CheckpointSettings
from stabilize_redis.durability.embedded import start_in_worker
from tests.cluster.conftest import Call, spanning
from tests.integration.support import make_engine, make_stage, make_workflow, wait_until


class Ok(Task):
    def execute(self, stage):  # type: ignore[no-untyped-def]
        return TaskResult.success(outputs={f"{stage.ref_id}_out": 1})


def _snapshots(dsn: str, schema: str, ids: list[str]) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.workflow_snapshots WHERE id = ANY(%s)").format(
            sql.Identifier(schema)), (ids,)).fetchone()
    return int(row[0]) if row else 0


def test_the_checkpointer_saves_and_evicts_finished_workflows_of_a_cluster(
        cluster_target: tuple[str, str], pg_dsn: str, pg_schema: str, script_calls: list[Call]) -> None:
    eng = make_engine(cluster_target)
    eng.registry.register("t", Ok())
    backend = eng.store.backend
    checkpointer = start_in_worker(backend, pg_dsn, pg_schema, CheckpointSettings(interval=0.1, retention=0.5))
    assert checkpointer is not None
    workflows = [make_workflow(make_stage("a"), make_stage("b", requires=["a"])) for _ in range(20)]
    ids = [wf.id for wf in workflows]
    try:
        with eng.threaded(concurrency=4):
            for wf in workflows:
                eng.client.submit(wf)
            assert [eng.client.wait(i, timeout=30).status for i in ids] == [WorkflowStatus.SUCCEEDED] * len(ids)
        wait_until(lambda: _snapshots(pg_dsn, pg_schema, ids) == len(ids), 30, "every workflow's snapshot")
        wait_until(lambda: not any(backend.client.exists(backend.part(i).workflow(i)) for i in ids), 30,
                   "the finished workflows to leave Redis")
    finally:
        checkpointer.stop()
    url, ns = cluster_target
    archived = RedisWorkflowStore(url, namespace=ns, dsn=pg_dsn, schema=pg_schema)
    assert archived.retrieve(ids[0]).status == WorkflowStatus.SUCCEEDED  # from its snapshot
    named = {name for name, _ in script_calls}
    assert {"checkpoint_read", "checkpoint_ack", "checkpoint_lease", "evict"} <= named, named
    assert spanning(script_calls) == []
