"""Postgres being unreachable never stops the engine: the checkpointer reports it once, backs
off, keeps everything dirty, and catches up when Postgres answers again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stabilize_redis import WorkflowStatus
from stabilize_redis.durability.snapshots import SnapshotStore
from tests.conftest import free_port
from tests.durability.support import TcpProxy, checkpointer, dirty_count, engine_with_tasks, versions
from tests.integration.support import make_stage, make_workflow, wait_until


@pytest.fixture
def proxy(pg_dsn: str) -> Iterator[TcpProxy]:
    p = TcpProxy("127.0.0.1", 5432)
    try:
        yield p
    finally:
        p.down()


def _outage_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "PostgreSQL unreachable" in r.getMessage()]


def test_catch_up_after_postgres_comes_back(real_target: tuple[str, str], pg_dsn: str, pg_schema: str,
                                            namespace: str, proxy: TcpProxy,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    store = SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace, timeout=1.0)
    ckpt = checkpointer(backend, store, poll=0.05, max_backoff=0.5)
    ckpt.start()  # the proxy is down: Postgres is unreachable from the start
    try:
        wfs = [eng.run(make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name=f"w{i}"))
               for i in range(10)]
        assert all(wf.status == WorkflowStatus.SUCCEEDED for wf in wfs), "the engine runs without Postgres"
        wait_until(lambda: ckpt.failing == ["postgres"], timeout=10, what="the outage to be noticed")
        wait_until(lambda: store.pool.get_stats().get("requests_errors", 0) >= 3, timeout=15,
                   what="several failed attempts")
        assert dirty_count(backend) == 10
        assert len(_outage_messages(caplog)) == 1, "an outage is reported once"

        proxy.up()
        wait_until(lambda: dirty_count(backend) == 0, timeout=20, what="the checkpointer to catch up")
        assert ckpt.failing == []
        assert any("recovered" in r.getMessage() for r in caplog.records)
        with SnapshotStore(pg_dsn, pg_schema, namespace) as direct:
            stored = direct.versions([wf.id for wf in wfs])
        assert stored == {wf.id: versions(backend, wf.id)[0] for wf in wfs}

        # a second outage mid-run: reported once more, and caught up again
        proxy.down()
        more = [eng.run(make_workflow(make_stage("a"), name=f"x{i}")) for i in range(3)]
        wait_until(lambda: ckpt.failing == ["postgres"], timeout=15, what="the second outage")
        proxy.up()
        wait_until(lambda: dirty_count(backend) == 0, timeout=20, what="the second catch-up")
        assert len(_outage_messages(caplog)) == 2
        with SnapshotStore(pg_dsn, pg_schema, namespace) as direct:
            assert set(direct.versions([wf.id for wf in more])) == {wf.id for wf in more}
    finally:
        ckpt.stop()
        store.close()


def test_dead_port_first_then_the_real_dsn(real_target: tuple[str, str], pg_dsn: str, pg_schema: str,
                                           namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wfs = [eng.run(make_workflow(make_stage("a"), name=f"w{i}")) for i in range(5)]
    dead = SnapshotStore(pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}"), pg_schema, namespace,
                         timeout=1.0)
    failing = checkpointer(backend, dead, poll=0.05, max_backoff=0.2)
    failing.start()
    try:
        wait_until(lambda: failing.failing == ["postgres"], timeout=10, what="the dead port to be noticed")
    finally:
        failing.stop()
        dead.close()
    assert dirty_count(backend) == 5, "nothing was acknowledged while Postgres was unreachable"

    with SnapshotStore(pg_dsn, pg_schema, namespace) as real:
        live = checkpointer(backend, real, poll=0.05)
        live.start()
        try:
            wait_until(lambda: dirty_count(backend) == 0, timeout=10, what="the catch-up")
        finally:
            live.stop()
        assert set(real.versions([wf.id for wf in wfs])) == {wf.id for wf in wfs}


def test_redis_restart_is_survived(pg_dsn: str, pg_schema: str, namespace: str, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A private Redis is killed and restarted empty on the same port (its script cache gone):
    the checkpointer reports Redis once, then works again (NOSCRIPT is handled)."""
    from stabilize_redis.backend.registry import forget_backends
    from tests.conftest import start_private_redis

    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    port = free_port()
    server = start_private_redis(port, workdir=str(tmp_path))
    forget_backends()
    try:
        eng = engine_with_tasks((f"redis://127.0.0.1:{port}/0", namespace))
        backend = eng.store.backend
        with SnapshotStore(pg_dsn, pg_schema, namespace) as store:
            ckpt = checkpointer(backend, store, poll=0.05, max_backoff=0.3)
            first = eng.run(make_workflow(make_stage("a"), name="before"))
            ckpt.start()
            try:
                wait_until(lambda: store.get(first.id) is not None, timeout=10, what="the first checkpoint")
                server.kill()
                server.wait()
                wait_until(lambda: ckpt.failing == ["redis"], timeout=10, what="the Redis outage to be noticed")
                server = start_private_redis(port, workdir=str(tmp_path))
                eng = engine_with_tasks((f"redis://127.0.0.1:{port}/0", namespace))
                eng.store.backend._ensure_groups()  # the restarted server is empty
                second = eng.run(make_workflow(make_stage("a"), name="after"))
                # the checkpoint lands before the pass that wrote it clears the outage flag
                wait_until(lambda: store.get(second.id) is not None and ckpt.failing == [], timeout=15,
                           what="checkpoints after the restart, and the outage cleared")
            finally:
                ckpt.stop()
        messages = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(messages) == 1
    finally:
        server.kill()
        server.wait()
        forget_backends()
