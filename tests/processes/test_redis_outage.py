"""A worker rides out Redis being away: started before Redis it waits (one line per state
change) and serves once Redis is up; during an outage each loop logs a few lines, not a
traceback a second; after Redis comes back (empty, on the same port) new work completes; and
the lost-namespace guard still refuses a namespace that Redis lost meanwhile. Every test runs
its own redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stabilize_redis import WorkflowStatus, connect
from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST
from stabilize_redis.durability.snapshots import SnapshotStore
from tests.durability.conftest import pg_dsn, pg_schema  # noqa: F401 - fixtures
from tests.durability.support import checkpointer
from tests.integration.support import wait_until
from tests.processes.outage_support import PrivateRedis, WorkerProcess, chain, owned

OUTAGE_S = 10.0


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with owned(PrivateRedis()) as redis_server:
        yield redis_server


def test_worker_started_before_redis_waits_and_serves_once_redis_is_up(
        server: PrivateRedis, namespace: str, tmp_path: Path) -> None:
    worker = WorkerProcess(server.url, namespace, tmp_path / "worker.log")
    try:
        waiting = worker.wait_for_line("waiting for Redis", "down (ConnectionError")
        assert "retrying" in waiting and "Traceback" not in "\n".join(worker.lines())
        server.start()
        worker.wait_for_line("waiting for Redis", "recovered after")
        client = connect(server.url, namespace, dsn="")
        wf = client.submit(chain(2))
        assert client.wait(wf, timeout=60).status == WorkflowStatus.SUCCEEDED
        start_up = [line for line in worker.lines() if "waiting for Redis" in line]
        assert len(start_up) <= 3, start_up  # down, at most one "still down", recovered
    finally:
        assert worker.stop() == 0, "\n".join(worker.lines()[-40:])


def _loops(lines: list[str], state: str) -> list[str]:
    """The loop names of the outage lines ``<loop>: <state>...`` (one per line found)."""
    return [line.split(f": {state}")[0].split(": ")[-1] for line in lines if f": {state}" in line]


@pytest.mark.slow
def test_an_outage_logs_a_few_lines_and_work_submitted_after_redis_restarts_completes(
        server: PrivateRedis, namespace: str, tmp_path: Path) -> None:
    server.start()
    client = connect(server.url, namespace, dsn="")
    worker = WorkerProcess(server.url, namespace, tmp_path / "worker.log", "--visibility-timeout", "3")
    try:
        before = client.submit(chain(2))
        assert client.wait(before, timeout=60).status == WorkflowStatus.SUCCEEDED
        mark = len(worker.lines())

        server.kill()
        threading.Event().wait(OUTAGE_S)  # the outage itself: Redis stays away this long
        assert worker.proc.poll() is None, "the worker rides the outage out"
        server.start()  # empty, same port

        after = client.submit(chain(2))
        assert client.wait(after, timeout=60).status == WorkflowStatus.SUCCEEDED
        worker.wait_for_line("read: recovered after", after=mark)
        wait_until(lambda: len(_loops(worker.lines()[mark:], "recovered after")) == len(
            _loops(worker.lines()[mark:], "down (")), 30, "every loop that went down to recover")
        during = worker.lines()[mark:]
    finally:
        assert worker.stop() == 0, "\n".join(worker.lines()[-40:])
    assert len(during) < 30, "\n".join(during)
    assert not [line for line in during if "Traceback" in line], "\n".join(during)
    downs = _loops(during, "down (")
    assert "read" in downs and "cancel listener" in downs, "\n".join(during)
    assert len(downs) == len(set(downs)), "one 'down' line per loop"


@pytest.mark.slow
def test_a_worker_waiting_for_redis_still_refuses_a_namespace_redis_lost(
        server: PrivateRedis, namespace: str, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:  # noqa: F811
    server.start()
    client = connect(server.url, namespace, dsn="")
    client.submit(chain(1))
    with SnapshotStore(pg_dsn, pg_schema, namespace) as store:
        checkpointer(client.backend, store).run_once(interval=0.0, all_partitions=True)
    server.kill()  # the namespace's data goes with it; PostgreSQL knows the namespace

    worker = WorkerProcess(server.url, namespace, tmp_path / "worker.log", "--dsn", pg_dsn, "--schema", pg_schema)
    try:
        worker.wait_for_line("waiting for Redis", "down (ConnectionError")
        server.start()  # back, empty
        assert worker.proc.wait(60) == EXIT_NAMESPACE_LOST
    finally:
        worker.stop()
    text = "\n".join(worker.lines())
    assert "refusing to start" in text and "stabilize-redis restore" in text
    assert not server.client().exists(client.backend.keys.meta), "a refusing worker creates nothing"
