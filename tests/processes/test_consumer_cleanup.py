"""The consumer groups do not collect the consumers of workers that are gone: a worker that
stops gracefully deletes its own consumer entries, and the entries of killed workers are
deleted once their pending entries were reclaimed and they stayed idle long enough - without
losing an entry. Every test runs its own redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stabilize_redis import TaskResult, WorkflowStatus, connect
from tests.integration.support import make_engine, make_stage, make_workflow, wait_until
from tests.processes.outage_support import PrivateRedis, WorkerProcess, chain, consumers, owned


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with owned(PrivateRedis().start()) as redis_server:
        yield redis_server


def test_a_worker_stopped_gracefully_leaves_no_consumer_behind(server: PrivateRedis, namespace: str) -> None:
    eng = make_engine((server.url, namespace))
    eng.registry.register("t", lambda stage: TaskResult.success())
    processor = eng.new_processor(concurrency=4)
    processor.start()
    try:
        flows = [make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name=f"w{i}") for i in range(20)]
        for wf in flows:
            eng.client.submit(wf)
        for wf in flows:
            assert eng.client.wait(wf.id, timeout=30).status == WorkflowStatus.SUCCEEDED
        assert consumers(server.client(), namespace), "the worker's consumer entries exist while it runs"
    finally:
        processor.stop()
    assert consumers(server.client(), namespace) == {}


@pytest.mark.slow
def test_consumers_of_killed_workers_are_deleted_and_no_entry_is_lost(
        server: PrivateRedis, namespace: str, tmp_path: Path) -> None:
    client = connect(server.url, namespace, dsn="")
    raw = server.client()
    visibility = ("--visibility-timeout", "1")
    survivor = WorkerProcess(server.url, namespace, tmp_path / "survivor.log", *visibility)
    flows: list[str] = []
    try:
        for i in range(10):
            flows += [client.submit(chain(3, work_s=0.3, name=f"round{i}")) for _ in range(3)]
            victim = WorkerProcess(server.url, namespace, tmp_path / f"victim{i}.log", *visibility)

            def busy(pid: int = victim.pid) -> bool:
                return int(raw.hget(f"{namespace}:test:running", str(pid)) or 0) > 0

            wait_until(busy, 60, f"worker {i} to run a task")
            victim.kill()  # SIGKILL mid-task: its consumer entry and pending entries stay behind
        for wf in flows:
            assert client.wait(wf, timeout=120).status == WorkflowStatus.SUCCEEDED
        # Dead consumers go once their entries were reclaimed and they idled 3 visibility
        # timeouts; only the survivor may still be listed.
        wait_until(lambda: {n.split("-")[-2] for n in consumers(raw, namespace)} <= {str(survivor.pid)}, 60,
                   "the consumers of the killed workers to be deleted")
    finally:
        assert survivor.stop() == 0, "\n".join(survivor.lines()[-40:])
    assert consumers(raw, namespace) == {}
    counts = client.queue.counts()
    assert counts == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    for wf in flows:
        events = client.events(wf)
        assert sorted(e["event_type"] for e in events).count("stage.completed") == 3, wf
