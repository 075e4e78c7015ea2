"""Redis at ``maxmemory`` with ``noeviction`` refuses writes that need memory (XADD, HSET, ...)
but still serves reads, acks and claims. A worker started then waits and serves once memory is
freed; a running worker keeps reading while promotion and commits fail, loses nothing, and
resumes by itself when memory is freed. A partition whose promotion fails for its own reasons
holds no other partition up. Every test runs its own redis-server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from stabilize_redis import TaskResult, Workflow, WorkflowStatus, connect
from stabilize_redis.keys import CONSUMER_GROUP, partition_of
from stabilize_redis.queue.messages import StartWorkflow
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, wait_until
from tests.processes.outage_support import PrivateRedis, WorkerProcess, chain, fill, free, owned

MAXMEMORY = ("--maxmemory-policy", "noeviction")  # maxmemory itself: set by ``fill``


@pytest.fixture
def full_redis() -> Iterator[PrivateRedis]:
    with owned(PrivateRedis(*MAXMEMORY).start()) as server:
        yield server


@pytest.fixture
def engine(full_redis: PrivateRedis, namespace: str) -> Engine:
    eng = make_engine((full_redis.url, namespace))
    eng.registry.register("t", lambda stage: TaskResult.success(outputs={"done": stage.ref_id}))
    return eng


def _messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def _delayed_start(eng: Engine, wf: Workflow, delay_s: float) -> None:
    """Store ``wf`` and push its StartWorkflow ``delay_s`` from now (a delayed message)."""
    eng.store.store(wf)
    eng.queue.push(StartWorkflow(execution_id=wf.id, execution_type=wf.type.name), delay=timedelta(seconds=delay_s))


def test_worker_started_on_a_full_redis_waits_and_serves_once_memory_is_freed(
        full_redis: PrivateRedis, namespace: str, tmp_path: Path) -> None:
    raw = full_redis.client()
    filled = fill(raw, namespace)
    worker = WorkerProcess(full_redis.url, namespace, tmp_path / "worker.log")
    try:
        worker.wait_for_line("waiting for Redis", "down (OutOfMemoryError")
        free(raw, namespace, filled)
        worker.wait_for_line("waiting for Redis", "recovered after")
        client = connect(full_redis.url, namespace, dsn="")
        wf = client.submit(chain(2))
        assert client.wait(wf, timeout=60).status == WorkflowStatus.SUCCEEDED
    finally:
        assert worker.stop() == 0, "\n".join(worker.lines()[-40:])


def test_reads_go_on_while_promotion_and_commits_fail_for_lack_of_memory_and_all_resumes_when_freed(
        full_redis: PrivateRedis, engine: Engine, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis")
    raw = full_redis.client()
    ready_wf = make_workflow(make_stage("a"), name="ready")
    engine.client.submit(ready_wf)  # its first message waits in the ready stream
    delayed_wf = make_workflow(make_stage("a"), name="delayed")
    _delayed_start(engine, delayed_wf, 0.05)
    ready_part = engine.queue.backend.part(ready_wf.id)
    delayed_part = engine.queue.backend.part(delayed_wf.id)
    filled = fill(raw, namespace)
    [(_, due_ms)] = raw.zrange(delayed_part.delayed, 0, 0, withscores=True)
    wait_until(lambda: _server_ms(raw) > due_ms, 5, "the delayed message to be due")

    processor = engine.new_processor(concurrency=2, visibility_timeout=2.0)
    processor.start()
    try:
        # Promotion fails (its XADD needs memory), yet XREADGROUP goes on: the ready message is
        # delivered; its commit fails too and the entry stays pending - delivered once, kept by
        # its worker (not redelivered, not dead-lettered).
        wait_until(lambda: raw.xpending(ready_part.ready, CONSUMER_GROUP)["pending"] == 1, 20,
                   "the ready message to be read while promotion fails")
        wait_until(lambda: _messages(caplog, "message handling: down (OutOfMemoryError"), 20,
                   "the commit of the ready message to fail for lack of memory")
        assert _messages(caplog, "promote delayed messages: down (OutOfMemoryError")
        [pending] = raw.xpending_range(ready_part.ready, CONSUMER_GROUP, "-", "+", 10)
        assert pending["times_delivered"] == 1
        assert raw.zcard(delayed_part.delayed) == 1, "the delayed message is still waiting"
        assert processor.is_running

        free(raw, namespace, filled)
        assert engine.client.wait(ready_wf.id, timeout=30).status == WorkflowStatus.SUCCEEDED
        assert engine.client.wait(delayed_wf.id, timeout=30).status == WorkflowStatus.SUCCEEDED
        wait_until(lambda: _messages(caplog, "promote delayed messages: recovered"), 20, "promotion to recover")
    finally:
        processor.stop()
    assert len(_messages(caplog, "message handling: recovered")) == 1
    assert engine.queue.counts() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


def _server_ms(client: redis.Redis) -> int:
    secs, micros = client.time()
    return int(secs) * 1000 + int(micros) // 1000


def test_a_partition_whose_promotion_fails_does_not_hold_up_the_others(
        full_redis: PrivateRedis, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis")
    backend = engine.queue.backend
    broken = backend.keys.partition(0)
    full_redis.client().set(broken.done, b"not a sorted set")  # promote_delayed fails there: WRONGTYPE
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name="elsewhere")
    while partition_of(wf.id, backend.keys.partitions) == 0:
        wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), name="elsewhere")
    _delayed_start(engine, wf, 0.3)

    processor = engine.new_processor(visibility_timeout=2.0)
    processor.start()
    try:
        assert engine.client.wait(wf.id, timeout=30).status == WorkflowStatus.SUCCEEDED
    finally:
        processor.stop()
    downs = _messages(caplog, "promote delayed messages: down (")
    assert len(downs) == 1 and "WRONGTYPE" in downs[0] and f"1 of {backend.keys.partitions} partitions" in downs[0]
