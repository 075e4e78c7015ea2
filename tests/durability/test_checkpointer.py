"""The checkpointer copies workflows and their events to Postgres, version-guarded: a stale
snapshot never overwrites a newer one, even with checkpointers racing."""

from __future__ import annotations

import threading
import time

from stabilize_redis.durability.checkpointer import Checkpointer
from stabilize_redis.durability.drain import oldest_dirty_age_ms
from stabilize_redis.durability.snapshots import SnapshotStore, snapshot_fields
from stabilize_redis.models.status import WorkflowStatus
from tests.durability.support import checkpointer, dirty_count, engine_with_tasks, is_dirty, versions
from tests.integration.support import make_stage, make_workflow, wait_until


def _run_then_set(ckpt: Checkpointer, done: threading.Event) -> None:
    ckpt.run_once(interval=0.0, all_partitions=True)
    done.set()


def test_a_finished_workflow_and_its_events_reach_postgres(real_target: tuple[str, str],
                                                           snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target, snapshot_store)
    wf = eng.run(make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["a"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    backend = eng.store.backend
    in_redis = backend.events(wf.id)
    ckpt = checkpointer(backend, snapshot_store)

    stats = ckpt.run_once(all_partitions=True)  # finished workflows are due at once
    assert stats.read == 1 and stats.written == 1 and stats.cleared == 1

    row = snapshot_store.get(wf.id)
    assert row is not None and row.status == "SUCCEEDED" and row.application == "itest"
    assert row.version == versions(backend, wf.id)[0] == versions(backend, wf.id)[1]
    assert row.fields() == snapshot_fields(backend.load_hash(wf.id))
    assert row.workflow() == eng.store.retrieve(wf.id)
    assert snapshot_store.events(wf.id) == eng.store.events(wf.id) == in_redis
    # Archived events leave the Redis stream (the key stays, empty, keeping its last id).
    assert backend.events(wf.id) == []
    assert backend.client.exists(backend.part(wf.id).events(wf.id)) == 1
    assert row.start_time == wf.start_time and row.end_time == wf.end_time
    assert not is_dirty(backend, wf.id)

    again = ckpt.run_once(interval=0.0, all_partitions=True)
    assert again.read == 0, "a clean workflow is not read again"
    assert len(snapshot_store.events(wf.id)) == len(eng.store.events(wf.id))


def test_running_workflows_wait_for_the_interval(real_target: tuple[str, str],
                                                 snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)  # NOT_STARTED: not an immediate status
    ckpt = checkpointer(eng.store.backend, snapshot_store, interval=30.0)
    assert ckpt.run_once(all_partitions=True).read == 0
    assert snapshot_store.get(wf.id) is None
    assert ckpt.run_once(interval=0.0, all_partitions=True).read == 1
    row = snapshot_store.get(wf.id)
    assert row is not None and row.status == "NOT_STARTED"


def test_a_change_after_the_read_keeps_the_workflow_dirty(real_target: tuple[str, str],
                                                          snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    slow = checkpointer(backend, snapshot_store, fsync_lag=0.6)
    done = threading.Event()
    threading.Thread(target=_run_then_set, args=(slow, done)).start()
    time.sleep(0.2)  # the slow checkpointer has read version 1 and holds it back
    eng.store.cancel(wf.id, "tester", "changed meanwhile")
    assert done.wait(5)
    row = snapshot_store.get(wf.id)
    assert row is not None and row.version == 1
    assert versions(backend, wf.id) == (2, 1)
    assert is_dirty(backend, wf.id), "version 2 is not in Postgres yet"
    checkpointer(backend, snapshot_store).run_once(interval=0.0, all_partitions=True)
    assert versions(backend, wf.id) == (2, 2) and not is_dirty(backend, wf.id)
    row = snapshot_store.get(wf.id)
    assert row is not None and row.version == 2 and row.workflow().is_canceled


def test_a_stale_snapshot_never_overwrites_a_newer_one(real_target: tuple[str, str],
                                                       snapshot_store: SnapshotStore) -> None:
    """A held-back checkpointer writes version 1 after another wrote version 2."""
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    slow = checkpointer(backend, snapshot_store, fsync_lag=0.8)
    fast = checkpointer(backend, snapshot_store)
    done = threading.Event()
    threading.Thread(target=_run_then_set, args=(slow, done)).start()
    time.sleep(0.2)  # slow has read version 1
    eng.store.cancel(wf.id, "tester", "newer")
    assert fast.run_once(interval=0.0, all_partitions=True).written == 1
    assert snapshot_store.versions([wf.id]) == {wf.id: 2}
    assert done.wait(5)
    assert slow.totals.read == 1 and slow.totals.written == 0, "the stale upsert was refused"
    row = snapshot_store.get(wf.id)
    assert row is not None and row.version == 2 and row.workflow().is_canceled
    assert versions(backend, wf.id) == (2, 2) and not is_dirty(backend, wf.id)


def test_concurrent_checkpointers_never_roll_a_snapshot_back(real_target: tuple[str, str],
                                                             snapshot_store: SnapshotStore) -> None:
    """Writers keep changing workflows while three checkpointers (threads, one holding batches
    back) race on the same partitions; a watcher sees stored versions only ever grow."""
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wfs = [make_workflow(make_stage("a"), name=f"w{i}") for i in range(8)]
    for wf in wfs:
        eng.store.store(wf)
    ids = [wf.id for wf in wfs]
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
                stop.set()
        return run

    @guarded
    def writer() -> None:
        n = 0
        while not stop.is_set():
            eng.store.cancel(ids[n % len(ids)], "writer", f"change {n}")
            n += 1

    def racer(lag: float) -> None:
        ckpt = checkpointer(backend, snapshot_store, fsync_lag=lag, batch_size=3)
        while not stop.is_set():
            ckpt.run_once(interval=0.0, all_partitions=True)

    seen: dict[str, int] = {}
    regressions: list[tuple[str, int, int]] = []

    @guarded
    def watcher() -> None:
        while not stop.is_set():
            for wid, version in snapshot_store.versions(ids).items():
                if version < seen.get(wid, 0):
                    regressions.append((wid, seen[wid], version))
                seen[wid] = max(seen.get(wid, 0), version)

    threads = [threading.Thread(target=t) for t in
               (writer, watcher, guarded(lambda: racer(0.0)), guarded(lambda: racer(0.0)),
                guarded(lambda: racer(0.15)))]
    for t in threads:
        t.start()
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert not regressions, regressions
    assert len(seen) == len(ids) and sum(seen.values()) > 2 * len(ids), "the race exercised many versions"

    checkpointer(backend, snapshot_store).drain_all()
    stored = snapshot_store.versions(ids)
    for wid in ids:
        assert stored[wid] == versions(backend, wid)[0] == versions(backend, wid)[1]
        row = snapshot_store.get(wid)
        assert row is not None and row.fields() == snapshot_fields(backend.load_hash(wid))
    assert dirty_count(backend) == 0


def test_fsync_lag_holds_writes_back(real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    wf = eng.run(make_workflow(make_stage("a")))
    ckpt = checkpointer(eng.store.backend, snapshot_store, fsync_lag=0.5)
    t0 = time.monotonic()
    writer = threading.Thread(target=lambda: ckpt.run_once(all_partitions=True))
    writer.start()
    time.sleep(0.3)
    assert snapshot_store.get(wf.id) is None, "nothing is written before the lag has passed"
    writer.join(5)
    assert time.monotonic() - t0 >= 0.5
    assert snapshot_store.get(wf.id) is not None


def test_one_checkpointer_per_partition_shared_fairly_and_taken_over(
        real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    everything = set(range(backend.keys.partitions))
    a = checkpointer(backend, snapshot_store, lease_ttl=1.0)
    b = checkpointer(backend, snapshot_store, lease_ttl=1.0)
    assert a.leases.refresh(force=True) == everything, "alone, a checkpointer drains every partition"
    assert b.leases.refresh(force=True) == set(), "held partitions are not taken"
    held_a = a.leases.refresh(force=True)  # a sees two checkpointers: keeps its half, frees the rest
    held_b = b.leases.refresh(force=True)
    assert len(held_a) == len(held_b) == len(everything) // 2
    assert held_a | held_b == everything and not held_a & held_b
    holders = {backend.client.get(backend.keys.partition(i).checkpoint_lease) for i in everything}
    assert holders == {a.owner.encode(), b.owner.encode()}

    a.leases.release()  # a stops: b takes everything at its next refresh
    assert b.leases.refresh(force=True) == everything
    c = checkpointer(backend, snapshot_store, lease_ttl=1.0)
    c.leases.refresh(force=True)
    # b dies without releasing: c takes over once b's census entry and leases expire
    wait_until(lambda: c.leases.refresh(force=True) == everything, timeout=5, what="takeover after the TTL")


def test_the_checkpointer_thread_keeps_dirty_ages_low(real_target: tuple[str, str],
                                                      snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    ckpt = checkpointer(backend, snapshot_store, interval=0.3, poll=0.05)
    ckpt.start()
    try:
        wfs = [eng.run(make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name=f"w{i}"))
               for i in range(5)]
        wait_until(lambda: dirty_count(backend) == 0, timeout=10, what="everything checkpointed")
        assert oldest_dirty_age_ms(backend) == 0
        stored = snapshot_store.versions([wf.id for wf in wfs])
        assert all(stored[wf.id] == versions(backend, wf.id)[0] for wf in wfs)
    finally:
        ckpt.stop()
    assert backend.client.get(backend.keys.partition(0).checkpoint_lease) is None, "leases released on stop"
