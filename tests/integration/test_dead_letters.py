"""Messages that cannot be handled end in the dead-letter stream with their reason; the worker
keeps going, and operators can list, replay and clear dead letters."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.handlers.base import Handler
from stabilize_redis.queue.messages import (
    InvalidWorkflowId,
    Message,
    StartWaitingWorkflows,
    StartWorkflow,
)
from tests.integration.support import Engine, fast, make_engine, make_stage, make_workflow, wait_until

Target = tuple[str | None, str]


class Greet(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"greeting": "hi"})


def engine(target: Target, **config: Any) -> Engine:
    eng = make_engine(target, fast(**config))
    eng.registry.register("greet", Greet)
    return eng


def raw_entry(eng: Engine, message_id: str, payload: str, partition: int = 0) -> None:
    """XADD an entry straight to a partition's ready stream, as a buggy producer would."""
    eng.queue.backend.client.xadd(eng.queue.backend.keys.partition(partition).ready,
                                  {"id": message_id, "m": payload})


def test_undecodable_entry_is_dead_lettered_and_the_worker_keeps_going(target: Target) -> None:
    eng = engine(target)
    raw_entry(eng, "x", "not json")
    wf = make_workflow(make_stage("hello", "greet"))
    eng.client.submit(wf)
    processor = eng.new_processor(concurrency=2)
    processor.start()
    try:
        result = eng.client.wait(wf.id, timeout=15)
        wait_until(lambda: eng.queue.dlq_size() == 1, 10, "the bad entry to be dead-lettered")
    finally:
        processor.stop()

    assert result.status == WorkflowStatus.SUCCEEDED
    rows = eng.queue.list_dlq()
    assert len(rows) == 1
    row = rows[0]
    assert row["reason"] == "undecodable"
    assert row["message_id"] == "x" and row["payload"] == "not json"
    assert row["type"] is None
    assert "JSON" in row["error"]
    assert row["partition"] == 0 and row["id"].startswith("0/")
    assert eng.queue.dlq_size() == 1
    assert eng.queue.counts()["ready"] == 0 and eng.queue.counts()["in_flight"] == 0


@pytest.mark.parametrize(
    ("payload", "reason", "error_part"),
    [
        (json.dumps({"type": "LaunchMissiles", "execution_id": "w1"}), "undecodable",
         "unknown message type 'LaunchMissiles'"),
        (json.dumps({"type": "StartWorkflow", "execution_id": "w1", "bogus": 1}), "undecodable", "bogus"),
        (json.dumps(["StartWorkflow"]), "undecodable", "JSON object"),
        (StartWaitingWorkflows(pipeline_config_id="p").encode(), "no_handler",
         "no handler for StartWaitingWorkflows"),
        (InvalidWorkflowId(execution_id="w1").encode(), "diagnostic_marker", "InvalidWorkflowId"),
    ],
    ids=["unknown-type", "unknown-field", "not-an-object", "no-handler", "diagnostic-marker"],
)
def test_unhandleable_messages_are_dead_lettered_with_their_reason(target: Target, payload: str, reason: str,
                                                                   error_part: str) -> None:
    eng = engine(target)
    if reason == "no_handler":  # a worker built without the handler of a type (every built-in type has one)
        del eng.processor._handlers[StartWaitingWorkflows]
    raw_entry(eng, "m1", payload, partition=3)
    wf = make_workflow(make_stage("hello", "greet"))

    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    [row] = eng.queue.list_dlq()
    assert row["reason"] == reason
    assert error_part in row["error"]
    assert row["message_id"] == "m1" and row["payload"] == payload and row["partition"] == 3
    assert eng.queue.size() == 0


class AlwaysFails(Handler):
    """Replaces the StartWorkflow handler; raises on every call."""

    message_type = StartWorkflow

    def __init__(self) -> None:  # no HandlerContext needed
        self.calls = 0
        self.lock = threading.Lock()

    def handle(self, message: Message, delivery: Delivery | None) -> str:
        with self.lock:
            self.calls += 1
            n = self.calls
        raise RuntimeError(f"database exploded (call {n})")


def fail_until_dead(target: Target) -> tuple[Engine, Any, AlwaysFails, Handler]:
    eng = engine(target, message_max_attempts=3, handler_retry_delay_s=0.01, handler_retry_max_delay_s=0.05)
    original = eng.processor._handlers[StartWorkflow]
    failing = AlwaysFails()
    eng.processor.replace_handler(failing)
    wf = make_workflow(make_stage("hello", "greet"))
    eng.start(wf)
    eng.processor.process_all(timeout=15)
    return eng, wf, failing, original


def test_failing_handler_is_retried_then_dead_lettered_with_its_last_error(target: Target) -> None:
    eng, wf, failing, _ = fail_until_dead(target)

    assert failing.calls == 3
    [row] = eng.queue.list_dlq()
    assert row["reason"] == "max_attempts"
    assert row["error"] == "RuntimeError: database exploded (call 3)"
    assert row["attempts"] == 3
    assert row["type"] == "StartWorkflow"
    assert json.loads(row["payload"])["execution_id"] == wf.id
    assert row["message_id"] == json.loads(row["payload"])["message_id"]
    assert eng.queue.size() == 0
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.NOT_STARTED
    assert eng.queue.list_dlq(message_type="StartWorkflow") == [row]
    assert eng.queue.list_dlq(message_type="RunTask") == []


def test_replayed_dead_letter_runs_again_once_the_cause_is_fixed(target: Target) -> None:
    eng, wf, failing, original = fail_until_dead(target)
    [row] = eng.queue.list_dlq()
    eng.processor.replace_handler(original)

    assert eng.queue.replay_dlq(row["id"]) is True
    assert eng.queue.list_dlq() == []
    eng.processor.process_all(timeout=15)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert result.stages[0].outputs == {"greeting": "hi"}
    assert failing.calls == 3
    # Replaying an entry that no longer exists reports it, as does an id no dead letter can have
    # (stabilize's integer row ids, a missing or out-of-range partition, a malformed entry id).
    assert eng.queue.replay_dlq(row["id"]) is False
    for bogus in (999999, "abc", "0/abc", "99999/1-1", "/1-1"):
        assert eng.queue.replay_dlq(bogus) is False, bogus


def test_replay_dlq_accepts_an_entry_id_with_its_partition(target: Target) -> None:
    eng, wf, _, original = fail_until_dead(target)
    [row] = eng.queue.list_dlq()
    eng.processor.replace_handler(original)
    partition, entry = row["id"].split("/", 1)

    assert eng.queue.replay_dlq(entry, partition=int(partition)) is True
    eng.processor.process_all(timeout=15)

    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED


def test_clear_dlq_removes_every_dead_letter_and_reports_how_many(target: Target) -> None:
    eng = engine(target)
    for i, partition in enumerate((0, 1, 5)):
        raw_entry(eng, f"bad{i}", "{", partition=partition)
    eng.processor.process_all(timeout=10)
    assert eng.queue.dlq_size() == 3
    assert sorted(r["partition"] for r in eng.queue.list_dlq()) == [0, 1, 5]
    assert len(eng.queue.list_dlq(limit=2)) == 2

    assert eng.queue.clear_dlq() == 3

    assert eng.queue.list_dlq() == [] and eng.queue.dlq_size() == 0
    assert eng.queue.clear_dlq() == 0
