"""A PostgreSQL connection that goes silent in the middle of a pass (a black hole, not a refusal)
does not stop checkpointing for good: within the stall timeout the watchdog logs one ERROR line
saying what is stuck and for how long, abandons the pass (it writes nothing more, its leases go
at once) and a fresh loop with a fresh pool takes over."""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import psycopg
import pytest

from stabilize_redis.durability.drain import DrainPass, PassStats
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.durability.watchdog import Abandoned, Fence, FencedStore
from stabilize_redis.models.workflow import Workflow
from tests.durability.support import (
    TcpProxy,
    checkpointer,
    dirty_count,
    engine_with_tasks,
    is_dirty,
    versions,
)
from tests.integration.support import Engine, make_stage, make_workflow, wait_until

STALL_TIMEOUT = 2.0
SNAPSHOT_WRITE = b"workflow_snapshots"  # bytes of the snapshot upsert on the wire



def _stuck_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and "made no progress" in r.getMessage()]


def _run(eng: Engine, prefix: str, n: int) -> list[Workflow]:
    return [eng.run(make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name=f"{prefix}{i}"))
            for i in range(n)]


def _saved(direct: SnapshotStore, eng: Engine, wfs: list[Workflow]) -> bool:
    backend = eng.store.backend
    return direct.versions([wf.id for wf in wfs]) == {wf.id: versions(backend, wf.id)[0] for wf in wfs}


def test_a_pass_stuck_on_a_black_holed_postgres_is_reported_and_replaced(
        real_target: tuple[str, str], pg_dsn: str, pg_schema: str, namespace: str, proxy: TcpProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    store = SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace, timeout=1.0)
    ckpt = checkpointer(backend, store, poll=0.05, max_backoff=0.3, stall_timeout=STALL_TIMEOUT)
    direct = SnapshotStore(pg_dsn, pg_schema, namespace)
    ckpt.start()
    try:
        before = _run(eng, "before", 2)
        wait_until(lambda: _saved(direct, eng, before), timeout=10, what="the first checkpoints")

        proxy.freeze_on(SNAPSHOT_WRITE)  # the next snapshot write, and every connection after it, go silent
        during = _run(eng, "during", 3)
        assert proxy.frozen.wait(10), "a snapshot write reached the proxy"
        frozen_at = time.monotonic()
        wait_until(lambda: _stuck_lines(caplog), timeout=15, what="the watchdog's ERROR line")
        noticed = time.monotonic() - frozen_at
        assert noticed < STALL_TIMEOUT + 3.0, f"the stall was reported after {noticed:.1f}s"
        line = _stuck_lines(caplog)[0]
        assert "stuck in PostgreSQL" in line and "no progress for" in line, line
        wait_until(lambda: ckpt.abandoned_threads == 0, timeout=10,
                   what="the stuck thread to be woken up (its sockets shut down) and to end")

        proxy.thaw()
        after = _run(eng, "after", 2)
        wait_until(lambda: _saved(direct, eng, before + during + after) and dirty_count(backend) == 0,
                   timeout=20, what="every workflow, submitted during and after the stall, in PostgreSQL")
        assert len(_stuck_lines(caplog)) == 1, "one stall, one line"
        assert ckpt.recycles == 1
    finally:
        ckpt.stop()
        store.close()
        direct.close()


def test_checkpointing_resumes_while_the_stuck_connection_stays_silent(
        real_target: tuple[str, str], pg_dsn: str, pg_schema: str, namespace: str, proxy: TcpProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    """Only the connections open now go silent (a firewall that lost their state): the fresh
    pool's new connections work, so nothing waits for the old ones to come back, and their
    server sessions (which may hold locks) are ended."""
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    store = SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace, timeout=1.0)
    ckpt = checkpointer(backend, store, poll=0.05, max_backoff=0.3, stall_timeout=STALL_TIMEOUT)
    direct = SnapshotStore(pg_dsn, pg_schema, namespace)
    ckpt.start()
    try:
        before = _run(eng, "before", 2)
        wait_until(lambda: _saved(direct, eng, before), timeout=10, what="the first checkpoints")
        stuck_owner = ckpt.owner
        stuck_sessions = store.pool.backend_pids()  # type: ignore[attr-defined]
        assert stuck_sessions

        proxy.freeze_on(SNAPSHOT_WRITE, new_connections=False)
        during = _run(eng, "during", 3)
        wait_until(lambda: _stuck_lines(caplog), timeout=15, what="the watchdog's ERROR line")
        secs, micros = backend.client.time()
        reported_ms = int(secs) * 1000 + int(micros) // 1000
        wait_until(lambda: _saved(direct, eng, during) and dirty_count(backend) == 0, timeout=15,
                   what="the fresh loop to checkpoint while the old connection is still black-holed")

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                                            (stuck_sessions,)).fetchone() == (0,),
                       timeout=10, what="the server sessions of the abandoned connections to be ended")
        holders = {backend.client.get(p.checkpoint_lease) for p in backend.keys.all_partitions()}
        assert stuck_owner.encode() not in holders, "the abandoned pass keeps no lease"
        assert ckpt.owner != stuck_owner
        for part in backend.keys.all_partitions():
            by, at = backend.client.hmget(part.checkpoint_info, ["by", "at"])
            assert not (by == stuck_owner.encode() and int(at) >= reported_ms), \
                f"the abandoned pass acknowledged partition {part.index} after it was abandoned"
    finally:
        ckpt.stop()
        store.close()
        direct.close()


def test_an_abandoned_pass_that_returns_late_acknowledges_nothing(
        real_target: tuple[str, str], pg_dsn: str, pg_schema: str, namespace: str, proxy: TcpProxy) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wf = _run(eng, "late", 1)[0]
    fence = Fence(0)
    outcome: list[BaseException | PassStats] = []
    with SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace, timeout=1.0) as store:
        drain = DrainPass(backend, cast(SnapshotStore, FencedStore(store, fence)))

        def run() -> None:
            try:
                outcome.append(drain.run(range(backend.keys.partitions), 0.0, fence.abandoned))
            except Abandoned as e:
                outcome.append(e)

        proxy.freeze_on(SNAPSHOT_WRITE)
        pass_thread = threading.Thread(target=run, daemon=True)
        pass_thread.start()
        assert proxy.frozen.wait(10)
        fence.abandon()  # the watchdog gives up on it; then the stall ends on its own
        proxy.thaw()
        pass_thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Abandoned), outcome
    assert is_dirty(backend, wf.id) and versions(backend, wf.id)[1] == 0, "nothing acknowledged in Redis"
