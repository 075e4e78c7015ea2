"""Restore after Redis lost a namespace: unfinished workflows come back from their Postgres
snapshots and finish; completed, checkpointed work is never redone; running it twice changes
nothing."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import redis

from stabilize_redis import StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.durability.restore import RestoreError, restore_namespace
from stabilize_redis.durability.snapshots import SnapshotStore, snapshot_fields
from stabilize_redis.keys import NamespaceKeys
from tests.conftest import delete_namespace
from tests.durability.support import checkpointer
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until
from workers.cli import main


class Tasks:
    """``t`` succeeds at once; ``gate`` keeps polling (RUNNING) until ``open`` is set. Both count
    their executions per (workflow, stage ref)."""

    def __init__(self) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.seen: dict[tuple[str, str], set[str]] = {}  # the ancestor outputs each ``t`` saw
        self.open = threading.Event()
        self._lock = threading.Lock()

    def _count(self, stage: StageExecution) -> None:
        with self._lock:
            self.runs[(stage.execution.id, stage.ref_id)] += 1

    def t(self, stage: StageExecution) -> TaskResult:
        self._count(stage)
        self.seen[(stage.execution.id, stage.ref_id)] = {k for k in stage.context if k.startswith("out_")}
        return TaskResult.success(outputs={f"out_{stage.ref_id}": 1})

    def gate(self, stage: StageExecution) -> TaskResult:
        self._count(stage)
        return TaskResult.success() if self.open.is_set() else TaskResult.running()


def _engine(target: tuple[str, str]) -> tuple[Engine, Tasks]:
    eng = make_engine(target)
    tasks = Tasks()
    eng.registry.register("t", tasks.t)
    eng.registry.register("gate", tasks.gate)
    return eng, tasks


def _advance_until(eng: Engine, done: list[tuple[str, str, WorkflowStatus]]) -> None:
    """Run a background processor until every (workflow, stage ref) has the given status."""
    processor = eng.new_processor()
    processor.start()
    try:
        wait_until(lambda: all(stage_named(eng.store.retrieve(w), ref).status == st for w, ref, st in done),
                   15, "the workflows to reach the gate")
    finally:
        processor.stop()


def _lose_redis_data(url: str, namespace: str) -> None:
    delete_namespace(url, namespace)
    assert not redis.Redis.from_url(url).exists(NamespaceKeys(namespace, 0).meta)


def test_restore_brings_unfinished_workflows_back_and_they_finish_without_redoing_work(
        real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    url, ns = real_target
    eng, tasks = _engine(real_target)
    chain = eng.start(make_workflow(make_stage("a"), make_stage("b", task="gate", requires=["a"]),
                                    make_stage("c", requires=["b"])))
    fan = eng.start(make_workflow(make_stage("a"), make_stage("b1", requires=["a"]),
                                  make_stage("b2", task="gate", requires=["a"]), make_stage("c", requires=["b1", "b2"])))
    finished = eng.start(make_workflow(make_stage("a")))
    stored = make_workflow(make_stage("a"))
    eng.store.store(stored)  # stored, never started
    _advance_until(eng, [(chain.id, "b", WorkflowStatus.RUNNING), (fan.id, "b1", WorkflowStatus.SUCCEEDED),
                         (fan.id, "b2", WorkflowStatus.RUNNING), (finished.id, "a", WorkflowStatus.SUCCEEDED)])
    backend = eng.store.backend
    checkpointer(backend, snapshot_store).drain_all()
    before = {w.id: snapshot_store.get(w.id) for w in (chain, fan, finished, stored)}
    assert all(row is not None for row in before.values())
    runs_at_loss = Counter(tasks.runs)

    _lose_redis_data(url, ns)
    report = restore_namespace(redis.Redis.from_url(url), snapshot_store)

    assert (report.examined, report.restored, report.skipped, report.failed) == (3, 3, 0, [])
    assert report.messages == 3  # RunTask(b), RunTask(b2), StartWorkflow
    assert report.marker_recreated
    assert backend.client.hexists(backend.keys.meta, "restored_at")
    assert not backend.client.exists(backend.part(finished.id).workflow(finished.id)), \
        "finished workflows stay in Postgres"
    for w in (chain, fan, stored):
        row = before[w.id]
        assert row is not None
        assert snapshot_fields(backend.load_hash(w.id)) == row.fields()
    queued = backend.size()

    again = restore_namespace(redis.Redis.from_url(url), snapshot_store)
    assert (again.restored, again.skipped, again.messages) == (0, 3, 0), "restore is idempotent"
    assert backend.size() == queued

    tasks.open.set()
    eng.processor.process_all(timeout=20)
    for w in (chain, fan, stored):
        assert eng.client.get(w.id).status == WorkflowStatus.SUCCEEDED
    finished_row = snapshot_store.get(finished.id)
    assert finished_row is not None and finished_row.status == "SUCCEEDED"
    for key in [(chain.id, "a"), (fan.id, "a"), (fan.id, "b1"), (finished.id, "a")]:
        assert tasks.runs[key] == runs_at_loss[key] == 1, f"checkpointed completed task {key} ran again"
    # outputs published before the loss came back with the snapshots: the stages after the gates see them
    assert tasks.seen[(chain.id, "c")] == {"out_a"} and tasks.seen[(fan.id, "c")] == {"out_a", "out_b1"}
    checkpointer(backend, snapshot_store).drain_all()
    for w in (chain, fan, stored):
        events = snapshot_store.events(w.id)
        for kind in ("stage.started", "stage.completed"):
            per_stage = Counter(e["entity_id"] for e in events if e["event_type"] == kind)
            assert per_stage == Counter({s.id: 1 for s in w.stages}), f"{w.id} {kind}: {per_stage}"


def test_restore_skips_workflows_whose_redis_copy_is_newer(real_target: tuple[str, str],
                                                            snapshot_store: SnapshotStore) -> None:
    url, _ = real_target
    eng, tasks = _engine(real_target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", task="gate", requires=["a"]),
                                 make_stage("c", requires=["b"])))
    _advance_until(eng, [(wf.id, "b", WorkflowStatus.RUNNING)])
    backend = eng.store.backend
    checkpointer(backend, snapshot_store).drain_all()
    tasks.open.set()
    _advance_until(eng, [(wf.id, "c", WorkflowStatus.SUCCEEDED)])
    newer = backend.load_hash(wf.id)
    queued = backend.size()

    report = restore_namespace(redis.Redis.from_url(url), snapshot_store)

    assert (report.examined, report.restored, report.skipped, report.messages) == (1, 0, 1, 0)
    assert backend.load_hash(wf.id) == newer
    assert backend.size() == queued


def test_restore_of_a_namespace_postgres_never_saw_fails_clearly(real_target: tuple[str, str],
                                                                 snapshot_store: SnapshotStore) -> None:
    url, ns = real_target
    with pytest.raises(RestoreError, match="unknown to PostgreSQL"):
        restore_namespace(redis.Redis.from_url(url), snapshot_store)


def test_restore_command_reports_what_it_did_and_is_safe_to_repeat(
        real_target: tuple[str, str], snapshot_store: SnapshotStore, pg_dsn: str, pg_schema: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, ns = real_target
    eng, tasks = _engine(real_target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", task="gate", requires=["a"])))
    _advance_until(eng, [(wf.id, "b", WorkflowStatus.RUNNING)])
    checkpointer(eng.store.backend, snapshot_store).drain_all()
    _lose_redis_data(url, ns)
    argv = ["restore", "--url", url, "--namespace", ns, "--dsn", pg_dsn, "--schema", pg_schema]

    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)

    assert (first["restored"], first["messages"], first["marker_recreated"]) == (1, 1, True)
    assert (second["restored"], second["skipped"], second["messages"]) == (0, 1, 0)
    tasks.open.set()
    eng.processor.process_all(timeout=20)
    assert eng.client.get(wf.id).status == WorkflowStatus.SUCCEEDED
    assert tasks.runs[(wf.id, "a")] == 1
