"""A Redis that restarts from an older AOF (it lost its last writes) never leaves PostgreSQL
ahead of it: a batch held back across the restart is not written, a snapshot of a lost state is
replaced by what Redis reaches at the same version, each transition stays archived once, a lost
submit is restored, and every such repair is reported."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stabilize_redis import WorkflowStatus
from stabilize_redis.durability.drain import PassStats
from stabilize_redis.durability.snapshots import SnapshotStore, snapshot_fields
from tests.chaos.harness import PrivateRedis
from tests.durability.support import checkpointer, dirty_count, engine_with_tasks, versions
from tests.integration.support import Engine, count_by_entity, make_stage, make_workflow, wait_until


def _engine(server: PrivateRedis, namespace: str) -> Engine:
    return engine_with_tasks((server.url, namespace))


def _answers(eng: Engine) -> bool:
    try:
        return bool(eng.store.backend.client.ping())
    except Exception:  # noqa: BLE001 - a restarting server
        return False


def _table(store: SnapshotStore, table: str, where: str = "namespace = %s") -> list[dict[str, Any]]:
    with psycopg.connect(store.dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}.{} WHERE " + where).format(
            sql.Identifier(store.schema), sql.Identifier(table)), (store.namespace,))
        return list(cur.fetchall())


def _epoch(store: SnapshotStore, wid: str) -> int:
    row = store.get(wid)
    assert row is not None
    return row.epoch


def _assert_postgres_equals_redis(eng: Engine, store: SnapshotStore, wid: str) -> None:
    backend = eng.store.backend
    row = store.get(wid)
    assert row is not None, f"{wid} is not in PostgreSQL"
    assert row.version == versions(backend, wid)[0]
    assert row.fields() == snapshot_fields(backend.load_hash(wid)), "the snapshot is not Redis's state"
    # The checkpointer trims what it archived from the stream: what Redis still holds (if
    # anything) is the archive's tail.
    in_redis = backend.events(wid)
    assert store.events(wid)[len(store.events(wid)) - len(in_redis):] == in_redis, \
        "the archive is not the Redis event stream"


def test_a_batch_held_back_across_a_redis_restart_is_not_written(
        server: PrivateRedis, namespace: str, snapshot_store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = _engine(server, namespace)
    backend = eng.store.backend
    wfs = [make_workflow(make_stage("a"), name=f"w{i}") for i in range(3)]
    for wf in wfs:
        eng.store.store(wf)
    ids = [wf.id for wf in wfs]
    checkpointer(backend, snapshot_store).run_once(interval=0.0, all_partitions=True)
    assert snapshot_store.versions(ids) == {wid: 1 for wid in ids}
    copy = server.copy_aof()
    for wid in ids:
        eng.store.cancel(wid, "tester", "lost in the crash")  # version 2: only in the lost second

    slow = checkpointer(backend, snapshot_store, fsync_lag=2.0)
    held = threading.Event()
    hold_back = slow.drain._hold_back

    def spy(batch: Any, stop: threading.Event | None) -> None:
        held.set()
        hold_back(batch, stop)

    monkeypatch.setattr(slow.drain, "_hold_back", spy)
    outcome: list[PassStats | BaseException] = []

    def run() -> None:
        try:
            outcome.append(slow.run_once(interval=0.0, all_partitions=True))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert held.wait(10), "the checkpointer read the batch"
    server.restart_from(copy)  # Redis crashes while the batch is held and comes back without version 2
    worker.join(20)
    assert outcome, "the held pass ended"
    if isinstance(outcome[0], PassStats):
        assert outcome[0].written == 0 and outcome[0].dropped == 3, outcome[0]
    wait_until(lambda: _answers(eng), timeout=10, what="the restarted Redis")
    assert [versions(backend, wid)[0] for wid in ids] == [1, 1, 1], "Redis lost version 2"
    assert snapshot_store.versions(ids) == {wid: 1 for wid in ids}, "no state Redis lost reached PostgreSQL"

    checkpointer(backend, snapshot_store).drain_all()
    for wid in ids:
        _assert_postgres_equals_redis(eng, snapshot_store, wid)
    assert _table(snapshot_store, "reconciliations") == [], "nothing stale: nothing to report"
    assert all(_epoch(snapshot_store, wid) == 2 for wid in ids), "the rows were confirmed in the new epoch"


def test_a_lost_state_is_replaced_by_what_redis_reaches_at_the_same_version(
        server: PrivateRedis, namespace: str, snapshot_store: SnapshotStore,
        caplog: pytest.LogCaptureFixture) -> None:
    """fsync_lag 0: PostgreSQL got a state Redis then lost; Redis redoes the same transitions
    (same version number, other content, new event ids)."""
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = _engine(server, namespace)
    backend = eng.store.backend
    ckpt = checkpointer(backend, snapshot_store)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["b"]))
    eng.client.submit(wf)
    ckpt.run_once(interval=0.0, all_partitions=True)
    copy = server.copy_aof()
    assert eng.processor.process_one()  # a runs and completes, b starts
    ckpt.run_once(interval=0.0, all_partitions=True)
    lost = snapshot_store.get(wf.id)
    assert lost is not None and lost.version == versions(backend, wf.id)[0]
    lost_events = {e["event_id"] for e in snapshot_store.events(wf.id)}

    server.restart_from(copy)
    wait_until(lambda: _answers(eng), timeout=10, what="the restarted Redis")
    assert versions(backend, wf.id)[0] < lost.version, "Redis lost a's completion"
    assert eng.processor.process_one()  # the same transitions again: same version, other content
    assert versions(backend, wf.id)[0] == lost.version
    assert snapshot_fields(backend.load_hash(wf.id)) != lost.fields()

    stats = ckpt.run_once(interval=0.0, all_partitions=True)
    assert stats.reconciled == 1
    _assert_postgres_equals_redis(eng, snapshot_store, wf.id)
    assert _epoch(snapshot_store, wf.id) > lost.epoch
    [report] = _table(snapshot_store, "reconciliations")
    assert (report["workflow_id"], report["action"]) == (wf.id, "rewritten")
    assert report["postgres_version"] == report["redis_version"] == lost.version and report["lost_events"] >= 2
    set_aside = {e["event_id"] for e in _table(snapshot_store, "workflow_events_lost")}
    assert len(set_aside) == report["lost_events"] and set_aside <= lost_events
    # In the workflow's history: in Redis, or already archived (and trimmed from the stream).
    history = snapshot_store.events(wf.id) + backend.events(wf.id)
    assert any(e["event_type"] == "workflow.reconciled" for e in history)
    assert any(wf.id in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

    eng.processor.process_all(timeout=20)
    ckpt.drain_all()
    _assert_postgres_equals_redis(eng, snapshot_store, wf.id)
    row = snapshot_store.get(wf.id)
    assert row is not None and row.status == "SUCCEEDED"
    events = snapshot_store.events(wf.id)
    stages = {s.id for s in row.workflow().stages}
    for kind in ("stage.started", "stage.completed"):
        assert count_by_entity(events, kind) == {sid: 1 for sid in stages}, f"{kind} archived once per stage"


def test_a_submit_lost_by_a_rollback_is_restored_from_postgres(
        server: PrivateRedis, namespace: str, snapshot_store: SnapshotStore) -> None:
    eng = _engine(server, namespace)
    backend = eng.store.backend
    ckpt = checkpointer(backend, snapshot_store)
    ckpt.run_once(interval=0.0, all_partitions=True)
    copy = server.copy_aof()
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]))
    eng.client.submit(wf)  # acknowledged, then lost with the last second of the AOF
    ckpt.run_once(interval=0.0, all_partitions=True)
    saved = snapshot_store.get(wf.id)
    assert saved is not None and saved.status == "RUNNING"

    server.restart_from(copy)
    wait_until(lambda: _answers(eng), timeout=10, what="the restarted Redis")
    assert backend.load_hash(wf.id) == {}, "Redis lost the submit"

    assert ckpt.run_once(interval=0.0, all_partitions=True).reconciled == 1
    assert versions(backend, wf.id)[0] == saved.version, "restored from its snapshot"
    [report] = _table(snapshot_store, "reconciliations")
    assert (report["workflow_id"], report["action"], report["postgres_version"]) == (wf.id, "restored", saved.version)

    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    ckpt.drain_all()
    assert dirty_count(backend) == 0
    _assert_postgres_equals_redis_after_restore(eng, snapshot_store, wf.id)


def _assert_postgres_equals_redis_after_restore(eng: Engine, store: SnapshotStore, wid: str) -> None:
    """A restore starts a new event stream: PostgreSQL holds the events before it as well."""
    backend = eng.store.backend
    row = store.get(wid)
    assert row is not None and row.fields() == snapshot_fields(backend.load_hash(wid))
    archived = [e["event_id"] for e in store.events(wid)]
    assert len(archived) == len(set(archived))
    assert {e["event_id"] for e in backend.events(wid)} <= set(archived)
