"""Retention: finished workflows leave Redis only once Postgres holds their latest version and
every event; eviction is a Lua compare, so a workflow that is not saved is never dropped."""

from __future__ import annotations

import json
import time

from stabilize_redis.durability.retention import TERMINAL_STATUSES, sweep
from stabilize_redis.durability.snapshots import SnapshotStore
from tests.durability.support import checkpointer, engine_with_tasks, is_dirty, versions
from tests.integration.support import make_stage, make_workflow

LATER = 10_000  # ms: "now" in the sweeps below, so that a just-finished workflow is past retention


def _now() -> int:
    return int(time.time() * 1000) + LATER


def _evict_script(backend, wid: str, version: int) -> list:  # type: ignore[no-untyped-def]
    part = backend.part(wid)
    return backend.scripts.evict(keys=[part.workflow(wid), part.events(wid), part.workflows, part.dirty,
                                       part.processed(wid)],
                                 args=[wid, version, "," + ",".join(TERMINAL_STATUSES) + ","])


def test_a_checkpointed_finished_workflow_is_evicted(real_target: tuple[str, str],
                                                     snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    backend = eng.store.backend
    wf = eng.run(make_workflow(make_stage("a")))
    checkpointer(backend, snapshot_store).run_once(all_partitions=True)
    part = backend.part(wf.id)

    assert sweep(backend, range(backend.keys.partitions), retention=3600) == 0, "ended just now: kept"
    assert sweep(backend, range(backend.keys.partitions), retention=5, now_ms=_now()) == 1
    assert not backend.client.exists(part.workflow(wf.id), part.events(wf.id))
    assert backend.client.zscore(part.workflows, wf.id) is None
    assert eng.store.exists(wf.id), "still readable through Postgres"


def test_an_unsaved_workflow_is_never_evicted(real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    backend = eng.store.backend
    wf = eng.run(make_workflow(make_stage("a")))
    everything = range(backend.keys.partitions)

    # never checkpointed: dirty, no ckpt
    assert sweep(backend, everything, retention=0, now_ms=_now()) == 0
    assert _evict_script(backend, wf.id, versions(backend, wf.id)[0]) == [0, b"unsaved"]
    assert snapshot_store.get(wf.id) is None and backend.load_hash(wf.id)

    # checkpointed, then changed again: Postgres is one version behind
    checkpointer(backend, snapshot_store).run_once(all_partitions=True)
    saved = versions(backend, wf.id)[0]
    eng.store.update_status(wf)  # a write: version moves on, the workflow is dirty again
    assert versions(backend, wf.id) == (saved + 1, saved)
    assert sweep(backend, everything, retention=0, now_ms=_now()) == 0
    assert _evict_script(backend, wf.id, saved) == [0, b"version"]
    assert _evict_script(backend, wf.id, saved + 1) == [0, b"unsaved"]
    assert backend.load_hash(wf.id)

    # a stale ckpt equal to ver but still dirty (e.g. a restore) is kept too
    backend.client.hset(backend.part(wf.id).workflow(wf.id), "ckpt", saved + 1)
    assert _evict_script(backend, wf.id, saved + 1) == [0, b"dirty"]
    backend.client.hset(backend.part(wf.id).workflow(wf.id), "ckpt", saved)

    checkpointer(backend, snapshot_store).run_once(all_partitions=True)
    assert snapshot_store.versions([wf.id]) == {wf.id: saved + 1}
    assert sweep(backend, everything, retention=0, now_ms=_now()) == 1


def test_unarchived_events_block_eviction_until_archived(real_target: tuple[str, str],
                                                         snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    backend = eng.store.backend
    wf = eng.run(make_workflow(make_stage("a")))
    checkpointer(backend, snapshot_store).run_once(all_partitions=True)
    # an event appended without a version bump (a commit that only logs)
    note = {"event_id": f"late-{wf.id}", "event_type": "note", "entity_type": "workflow",
            "entity_id": wf.id, "workflow_id": wf.id, "timestamp": 1, "data": {}}
    backend.client.xadd(backend.part(wf.id).events(wf.id), {"e": json.dumps(note)})
    version = versions(backend, wf.id)[0]
    assert _evict_script(backend, wf.id, version) == [0, b"events"]
    assert is_dirty(backend, wf.id), "the sweep asks for the events to be archived"
    checkpointer(backend, snapshot_store).run_once(all_partitions=True)
    assert any(e["event_type"] == "note" for e in snapshot_store.events(wf.id))
    assert _evict_script(backend, wf.id, version) == [1]


def test_running_workflows_are_never_evicted(real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    backend = eng.store.backend
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    checkpointer(backend, snapshot_store).drain_all()
    assert versions(backend, wf.id)[0] == versions(backend, wf.id)[1]
    assert sweep(backend, range(backend.keys.partitions), retention=0, now_ms=_now()) == 0
    assert _evict_script(backend, wf.id, versions(backend, wf.id)[0]) == [0, b"status"]


def test_the_checkpointer_loop_sweeps(real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    backend = eng.store.backend
    wfs = [eng.run(make_workflow(make_stage("a"), name=f"w{i}")) for i in range(3)]
    time.sleep(0.05)
    ckpt = checkpointer(backend, snapshot_store, retention=0.01)
    ckpt.run_once(sweep_now=True)  # checkpoints (leases taken), then sweeps
    ckpt.run_once(sweep_now=True)
    assert ckpt.evicted == 3
    for wf in wfs:
        assert not backend.load_hash(wf.id)
        assert eng.client.get(wf.id).status.name == "SUCCEEDED"
