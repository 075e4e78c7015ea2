"""recover_on_start semantics without data loss: a RUNNING workflow whose next message was lost
(an AOF everysec window) is found and continued; one with any message anywhere (ready, in
flight, delayed) is never touched, so a task still executing is never run twice."""

from __future__ import annotations

import json
import threading
from collections import Counter

from stabilize_redis import StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.recovery import StallSweeper, find_stalled
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until


def _counting_engine(target: tuple[str | None, str]) -> tuple[Engine, Counter[str]]:
    eng = make_engine(target)
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def t(stage: StageExecution) -> TaskResult:
        with lock:
            runs[stage.ref_id] += 1
        return TaskResult.success(outputs={f"out_{stage.ref_id}": 1})

    eng.registry.register("t", t)
    return eng, runs


def _drop_messages_of(backend: RedisBackend, workflow_id: str) -> int:
    """Delete every ready-stream entry and delayed message of a workflow (a lost AOF window)."""
    part = backend.part(workflow_id)
    dropped = 0
    for entry_id, fields in backend.client.xrange(part.ready):
        if json.loads(fields[b"m"]).get("execution_id") == workflow_id:
            backend.client.xack(part.ready, "workers", entry_id)
            dropped += backend.client.xdel(part.ready, entry_id)
    for msg_id, payload in backend.client.hgetall(part.delayed_payloads).items():
        if json.loads(payload).get("execution_id") == workflow_id:
            backend.client.hdel(part.delayed_payloads, msg_id)
            dropped += backend.client.zrem(part.delayed, msg_id)
    return dropped


def _run_until(eng: Engine, wf_id: str, ref: str, status: WorkflowStatus) -> None:
    def reached() -> bool:
        eng.processor.process_one()
        return stage_named(eng.store.retrieve(wf_id), ref).status == status

    wait_until(reached, 10, f"stage {ref} {status.name}")


def test_running_workflow_whose_next_message_was_lost_is_continued(target: tuple[str | None, str]) -> None:
    eng, runs = _counting_engine(target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["b"])))
    _run_until(eng, wf.id, "a", WorkflowStatus.SUCCEEDED)
    backend = eng.store.backend
    assert _drop_messages_of(backend, wf.id) == 1  # the StartStage(b) a's completion released

    report = find_stalled(backend, older_than_s=0)

    assert report.recovered == [wf.id] and report.messages == 1
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert runs == Counter({"a": 1, "b": 1, "c": 1}), "a completed task is never run again"
    started = Counter(e["entity_id"] for e in eng.events(wf.id, "stage.started"))
    assert set(started.values()) == {1}


def test_workflow_with_a_ready_or_in_flight_message_is_left_alone(target: tuple[str | None, str]) -> None:
    eng, _ = _counting_engine(target)
    eng.start(make_workflow(make_stage("a")))
    backend = eng.store.backend
    eng.processor.process_one()  # the workflow is RUNNING and StartStage(a) is ready
    assert find_stalled(backend, older_than_s=0).stalled == 0

    delivered = backend.fetch("someone-else", 10, None)  # now in flight, never acknowledged
    assert delivered
    report = find_stalled(backend, older_than_s=0)
    assert (report.running, report.stalled, report.recovered) == (1, 0, [])
    assert backend.size() == 1


def test_workflow_waiting_on_a_delayed_poll_is_left_alone(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    eng.registry.register("t", lambda stage: TaskResult.running())
    wf = eng.start(make_workflow(make_stage("a")))
    backend = eng.store.backend

    def polling() -> bool:
        eng.processor.process_one()
        return backend.queue_counts()["delayed"] == 1

    wait_until(polling, 10, "a delayed poll")
    report = find_stalled(backend, older_than_s=0)
    assert report.running == 1 and report.stalled == 0
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.RUNNING


def test_recently_changed_workflow_is_not_a_candidate(target: tuple[str | None, str]) -> None:
    eng, _ = _counting_engine(target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", requires=["a"])))
    _run_until(eng, wf.id, "a", WorkflowStatus.SUCCEEDED)
    _drop_messages_of(eng.store.backend, wf.id)
    report = find_stalled(eng.store.backend, older_than_s=3600)
    assert (report.running, report.quiet, report.recovered) == (1, 0, [])


def test_one_state_is_recovered_once_even_if_its_messages_vanish_again(target: tuple[str | None, str]) -> None:
    eng, _ = _counting_engine(target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", requires=["a"])))
    _run_until(eng, wf.id, "a", WorkflowStatus.SUCCEEDED)
    backend = eng.store.backend
    _drop_messages_of(backend, wf.id)
    assert find_stalled(backend, older_than_s=0).recovered == [wf.id]
    assert find_stalled(backend, older_than_s=0).stalled == 0, "its messages are there now"

    _drop_messages_of(backend, wf.id)
    again = find_stalled(backend, older_than_s=0, guard_ttl_s=60)
    assert again.stalled == 1 and again.recovered == [] and again.skipped == 1
    assert backend.size() == 0


def test_recover_on_start_continues_stalled_workflows(target: tuple[str | None, str]) -> None:
    eng, runs = _counting_engine(target)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("b", requires=["a"])))
    _run_until(eng, wf.id, "a", WorkflowStatus.SUCCEEDED)
    _drop_messages_of(eng.store.backend, wf.id)

    processor = eng.new_processor(recover_on_start=True)
    processor.start()
    try:
        done = eng.client.wait(wf.id, timeout=10)
    finally:
        processor.stop()
    assert done.status == WorkflowStatus.SUCCEEDED
    assert runs == Counter({"a": 1, "b": 1})


def test_one_sweeper_per_interval_across_workers(target: tuple[str | None, str]) -> None:
    eng, _ = _counting_engine(target)
    first = StallSweeper(eng.store.backend, interval=30, older_than_s=0)
    second = StallSweeper(eng.store.backend, interval=30, older_than_s=0)
    assert first.run_once() is not None
    assert second.run_once() is None, "the lease spaces sweeps across workers"
