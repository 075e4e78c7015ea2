"""In-flight entries: a live worker keeps its long task (heartbeats), and an entry whose
consumer died is reclaimed after the visibility timeout. Real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import Delivery
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, ms, stage_named

RealTarget = tuple[str, str]
VISIBILITY = 1.0


class LongTask(Task):
    """Works for ~3x the visibility timeout (the work itself, not a synchronisation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.executions = 0
        self.lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self.lock:
            self.executions += 1
        time.sleep(self.seconds)
        return TaskResult.success(outputs={"worked_s": self.seconds})


def test_long_task_is_not_run_twice_while_its_worker_lives(real_target: RealTarget,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    eng = make_engine(real_target)
    backend = eng.queue.backend
    reclaimed: list[int] = []
    original_reclaim = backend.reclaim

    def counting_reclaim(consumer: str, min_idle_ms: int, count: int = 100) -> list[Delivery]:
        found = original_reclaim(consumer, min_idle_ms, count)
        reclaimed.append(len(found))
        return found

    monkeypatch.setattr(backend, "reclaim", counting_reclaim)
    task = LongTask(3 * VISIBILITY)
    eng.registry.register("long", task)
    workers = [eng.new_processor(concurrency=2, visibility_timeout=VISIBILITY) for _ in range(2)]
    wf = make_workflow(make_stage("long", "long"), make_stage("after", "long_after", requires={"long"}))
    eng.registry.register("long_after", lambda stage: TaskResult.success())
    for w in workers:
        w.start()
    try:
        eng.client.submit(wf)
        result = eng.client.wait(wf.id, timeout=20)
    finally:
        for w in workers:
            w.stop()

    assert result.status == WorkflowStatus.SUCCEEDED
    assert task.executions == 1
    # The workers did look for idle entries while the task ran, and found none to take over.
    assert len(reclaimed) >= 4 and sum(reclaimed) == 0
    long = stage_named(result, "long")
    assert ms(long.end_time) - ms(long.start_time) >= 3 * VISIBILITY * 1000
    assert eng.queue.counts() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


def test_entry_of_a_dead_consumer_is_reclaimed_after_the_visibility_timeout(real_target: RealTarget) -> None:
    eng: Engine = make_engine(real_target)
    eng.registry.register("quick", lambda stage: TaskResult.success(outputs={"done": True}))
    wf = make_workflow(make_stage("quick", "quick"))
    eng.client.submit(wf)
    # A consumer takes the first entry (RunTask of "quick") and dies without acknowledging it.
    [taken] = eng.queue.backend.fetch("dead-consumer", 1, None)
    taken_at = time.time()
    assert taken.message_id and eng.queue.counts()["in_flight"] == 1

    worker = eng.new_processor(concurrency=2, visibility_timeout=VISIBILITY)
    worker.start()
    try:
        result = eng.client.wait(wf.id, timeout=20)
    finally:
        worker.stop()

    assert result.status == WorkflowStatus.SUCCEEDED
    assert stage_named(result, "quick").outputs == {"done": True}
    # Not taken over before the entry had been idle for the visibility timeout.
    assert ms(stage_named(result, "quick").tasks[0].end_time) / 1000.0 - taken_at >= VISIBILITY - 0.05
    assert eng.queue.counts() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    events = eng.events(wf.id)
    assert [e["event_type"] for e in events].count("workflow.started") == 1
    assert [e["event_type"] for e in events].count("stage.started") == 1
