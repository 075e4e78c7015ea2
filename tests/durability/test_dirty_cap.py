"""Without a DSN the dirty sets stay bounded (a worker trims them while no checkpointer is in
the census), and a checkpointer that starts later still saves every workflow, finished or not,
whose mark was trimmed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.dirty_cap import DirtyCapSettings, DirtyRepair, trim_dirty
from stabilize_redis.durability.embedded import start_in_worker
from stabilize_redis.durability.leases import PartitionLeases
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.models.workflow import Workflow
from tests.durability.support import checkpointer, dirty_count, engine_with_tasks, versions
from tests.integration.support import Engine, make_stage, make_workflow, wait_until
from workers.cli import main


def _largest_dirty_set(backend: RedisBackend) -> int:
    pipe = backend.client.pipeline(transaction=False)
    for part in backend.keys.all_partitions():
        pipe.zcard(part.dirty)
    return max(int(n) for n in pipe.execute())


def _trimmed_markers(backend: RedisBackend) -> int:
    return sum(1 for part in backend.keys.all_partitions() if backend.client.exists(part.dirty_trimmed))


def _mixed(eng: Engine, n: int) -> list[Workflow]:
    """n finished workflows and n that are not (stored, never started)."""
    done = [eng.run(make_workflow(make_stage("a"), name=f"done{i}")) for i in range(n)]
    waiting = [make_workflow(make_stage("a"), name=f"waiting{i}") for i in range(n)]
    for wf in waiting:
        eng.store.store(wf)
    return done + waiting


def test_without_a_dsn_a_worker_keeps_the_dirty_sets_bounded(real_target: tuple[str, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILIZE_DIRTY_MAX_SIZE", "1")
    monkeypatch.setenv("STABILIZE_DIRTY_TRIM_INTERVAL", "0.1")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    _mixed(eng, 20)
    assert dirty_count(backend) == 40
    durability: Any = start_in_worker(backend, dsn="")
    try:
        wait_until(lambda: _largest_dirty_set(backend) <= 1, timeout=10, what="the dirty sets to be trimmed")
        _mixed(eng, 10)  # more changes: still bounded
        wait_until(lambda: _largest_dirty_set(backend) <= 1, timeout=10, what="the new marks to be trimmed")
        assert _trimmed_markers(backend) > 0, "trimmed partitions are marked for re-marking"
    finally:
        if durability is not None:
            durability.stop()


def test_a_checkpointer_starting_later_saves_every_workflow_whose_mark_was_trimmed(
        real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wfs = _mixed(eng, 15)
    assert trim_dirty(backend, DirtyCapSettings(max_size=0)) == 30
    assert dirty_count(backend) == 0 and _trimmed_markers(backend) > 0

    ckpt = checkpointer(backend, snapshot_store, poll=0.05, interval=0.0)
    ckpt.start()
    try:
        wait_until(lambda: snapshot_store.versions([wf.id for wf in wfs])
                   == {wf.id: versions(backend, wf.id)[0] for wf in wfs},
                   timeout=20, what="every workflow, finished or not, at its current version in PostgreSQL")
        wait_until(lambda: _trimmed_markers(backend) == 0 and dirty_count(backend) == 0, timeout=10,
                   what="the trimmed markers to be cleared")
        assert ckpt.remarked == 30
    finally:
        ckpt.stop()


def test_nothing_is_trimmed_while_a_checkpointer_is_in_the_census(real_target: tuple[str, str]) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    _mixed(eng, 3)
    live = PartitionLeases(backend, "a-live-checkpointer")
    live.refresh(force=True)  # joins the census
    assert trim_dirty(backend, DirtyCapSettings(max_size=0)) == 0
    assert dirty_count(backend) == 6 and _trimmed_markers(backend) == 0
    live.release()  # leaves it
    assert trim_dirty(backend, DirtyCapSettings(max_size=0)) == 6


def test_a_trim_during_the_walk_makes_the_walk_run_again(real_target: tuple[str, str]) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wfs = _mixed(eng, 20)
    trim_dirty(backend, DirtyCapSettings(max_size=0))
    everything = set(range(backend.keys.partitions))
    repair = DirtyRepair(backend, pages=1)  # one page per pass: walks stay under way
    repair.run(everything)
    assert len(repair.walking) >= 2, "walks are under way"
    wfs += _mixed(eng, 20)
    trim_dirty(backend, DirtyCapSettings(max_size=0))  # a trim while they walk
    repair.run(everything, force=True)  # finishes the walks begun before it: their markers stay
    assert _trimmed_markers(backend) > 0
    repair.run(everything, force=True)  # looks again and walks again
    assert _trimmed_markers(backend) == 0
    assert dirty_count(backend) == len(wfs), "every unsaved workflow is marked again"


def test_status_shows_trimmed_partitions_and_quarantined_workflows(
        real_target: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    done = eng.run(make_workflow(make_stage("a"), name="trimmed"))
    trim_dirty(backend, DirtyCapSettings(max_size=0))
    part = backend.part(done.id)
    backend.client.hset(part.quarantine, done.id, json.dumps({"reason": "refused by PostgreSQL"}))

    assert main(["status", "--url", real_target[0], "--namespace", real_target[1]]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["partition"]: r for r in report["rows"]}
    assert rows[part.index]["dirty_trimmed"] is True and rows[part.index]["quarantined"] == 1
    assert sum(r["dirty_trimmed"] for r in report["rows"]) == 1
    assert report["totals"]["quarantined"] == 1
