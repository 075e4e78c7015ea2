"""Restore after a cluster lost a namespace: the unfinished workflows come back from their
PostgreSQL snapshots into the workflows' slots (the new marker records the current key layout)
and finish without redoing checkpointed work."""

from __future__ import annotations

import threading
from collections import Counter

from stabilize_redis import StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.backend.connection import Target, connect_redis, delete_namespace
from stabilize_redis.durability.restore import restore_namespace
from stabilize_redis.durability.snapshots import SnapshotStore
from tests.durability.support import checkpointer
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named, wait_until


def test_a_lost_cluster_namespace_is_restored_and_its_workflows_finish_once(
        cluster_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    url, ns = cluster_target
    runs: Counter[tuple[str, str]] = Counter()
    lock, gate_open = threading.Lock(), threading.Event()

    def task(stage: StageExecution) -> TaskResult:
        with lock:
            runs[(stage.execution.id, stage.ref_id)] += 1
        if stage.ref_id == "b" and not gate_open.is_set():
            return TaskResult.running()
        return TaskResult.success(outputs={f"out_{stage.ref_id}": 1})

    eng = make_engine(cluster_target)
    eng.registry.register("t", task)
    workflows = [make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["b"]))
                 for _ in range(6)]
    with eng.threaded(concurrency=4):
        for wf in workflows:
            eng.client.submit(wf)
        wait_until(lambda: all(stage_named(eng.store.retrieve(wf.id), "b").status == WorkflowStatus.RUNNING
                               for wf in workflows), 30, "every workflow at its gate")
    backend = eng.store.backend
    checkpointer(backend, snapshot_store).drain_all()

    delete_namespace(url, ns)
    assert not backend.client.exists(backend.keys.meta)
    report = restore_namespace(connect_redis(Target(url, ns)), snapshot_store)
    assert (report.restored, report.failed) == (len(workflows), [])
    assert backend.client.hget(backend.keys.meta, "layout") == b"2"

    gate_open.set()
    eng.processor.process_all(timeout=30)
    for wf in workflows:
        assert eng.client.get(wf.id).status == WorkflowStatus.SUCCEEDED
        assert runs[(wf.id, "a")] == 1, "checkpointed completed work is not redone"
        assert runs[(wf.id, "c")] == 1
