"""Read-through: any workflow ever run can be read, from Redis while it is there and from its
Postgres snapshot after eviction; listing is served from Postgres when configured."""

from __future__ import annotations

import time

import pytest

from stabilize_redis import WorkflowNotFoundError, WorkflowStatus, connect
from stabilize_redis.durability.retention import sweep
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.persistence.redis_store import WorkflowCriteria
from tests.durability.support import checkpointer, engine_with_tasks
from tests.integration.support import make_stage, make_workflow


def _evict_all(eng, store: SnapshotStore) -> int:  # type: ignore[no-untyped-def]
    backend = eng.store.backend
    checkpointer(backend, store).drain_all()
    return sweep(backend, range(backend.keys.partitions), retention=0, now_ms=int(time.time() * 1000) + 60_000)


def test_the_same_workflow_before_and_after_eviction(real_target: tuple[str, str],
                                                     snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    wf = eng.run(make_workflow(make_stage("a", context={"k": [1, "x"]}), make_stage("b", requires=["a"]),
                               make_stage("c", requires=["a"]), make_stage("d", requires=["b", "c"])))
    url, ns = real_target
    client = connect(url, ns, dsn=snapshot_store.dsn, schema=snapshot_store.schema)
    in_redis = client.get(wf.id)
    events_in_redis = client.events(wf.id)
    summary = eng.store.retrieve_execution_summary(wf.id)

    assert _evict_all(eng, snapshot_store) == 1
    assert not eng.store.backend.load_hash(wf.id), "evicted from Redis"

    evicted = client.get(wf.id)
    assert evicted == in_redis
    assert [s.outputs for s in evicted.stages] == [s.outputs for s in in_redis.stages]
    assert eng.store.retrieve(wf.id) == in_redis
    assert client.events(wf.id) == events_in_redis
    assert client.status(wf.id) == "SUCCEEDED"
    assert client.wait(wf.id, timeout=1) == in_redis
    assert eng.store.exists(wf.id)
    assert eng.store.retrieve_execution_summary(wf.id).status == summary.status


def test_without_postgres_an_evicted_workflow_is_gone(real_target: tuple[str, str],
                                                      snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    wf = eng.run(make_workflow(make_stage("a")))
    _evict_all(eng, snapshot_store)
    url, ns = real_target
    plain = connect(url, ns, dsn="")
    with pytest.raises(WorkflowNotFoundError):
        plain.get(wf.id)
    with pytest.raises(WorkflowNotFoundError):
        connect(url, ns, dsn=snapshot_store.dsn, schema=snapshot_store.schema).get("no-such-workflow")


def test_listing_is_served_from_postgres(real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    url, ns = real_target
    finished = []
    for i in range(5):
        wf = make_workflow(make_stage("a"), name=f"done{i}")
        wf.application = "app-a" if i % 2 == 0 else "app-b"
        wf.pipeline_config_id = f"pipe-{i % 2}"
        finished.append(eng.run(wf))
        time.sleep(0.002)  # distinct start times
    waiting = make_workflow(make_stage("a"), name="waiting")
    waiting.application = "app-a"
    eng.store.store(waiting)
    assert _evict_all(eng, snapshot_store) == 5, "listing must cover evicted workflows"

    client = connect(url, ns, dsn=snapshot_store.dsn, schema=snapshot_store.schema)
    newest_first = sorted((w for w in finished if w.application == "app-a"), key=lambda w: w.start_time or 0,
                          reverse=True)
    listed = client.list(application="app-a")
    assert [w.id for w in listed] == [waiting.id] + [w.id for w in newest_first]
    assert [w.id for w in client.list(application="app-a", status="SUCCEEDED")] == [w.id for w in newest_first]
    assert [w.id for w in client.list(application="app-a", status=[WorkflowStatus.NOT_STARTED])] == [waiting.id]
    assert [w.id for w in client.list(application="app-a", limit=2, offset=1)] == [w.id for w in newest_first[:2]]
    since = newest_first[1].start_time
    assert [w.id for w in client.list(application="app-a", since=since)] == [w.id for w in newest_first[:2]]
    assert [w.id for w in client.list(application="app-a", status="SUCCEEDED", until=since)] == \
        [w.id for w in newest_first[2:]]
    assert len(client.list(limit=100)) == 6

    by_app = list(eng.store.retrieve_by_application("app-b", WorkflowCriteria(page_size=10)))
    assert {w.id for w in by_app} == {w.id for w in finished if w.application == "app-b"}
    by_pipe = list(eng.store.retrieve_by_pipeline_config_id(
        "pipe-0", WorkflowCriteria(statuses={WorkflowStatus.SUCCEEDED})))
    assert {w.id for w in by_pipe} == {w.id for w in finished if w.pipeline_config_id == "pipe-0"}
    assert all(isinstance(w.stages[0].execution.id, str) for w in by_pipe)


def test_listing_without_postgres_scans_redis(real_target: tuple[str, str]) -> None:
    eng = engine_with_tasks(real_target)
    url, ns = real_target
    done = eng.run(make_workflow(make_stage("a"), name="done"))
    waiting = make_workflow(make_stage("a"), name="waiting")
    eng.store.store(waiting)
    client = connect(url, ns, dsn="")
    assert [w.id for w in client.list(application="itest")] == [waiting.id, done.id]
    assert [w.id for w in client.list(status="SUCCEEDED")] == [done.id]
    assert [w.id for w in client.list(application="itest", limit=1, offset=1)] == [done.id]
    assert client.list(application="other") == []
