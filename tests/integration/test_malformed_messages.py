"""Forged queue entries — malformed, misrouted, or naming nothing that exists — each end in the
dead-letter stream exactly once with their reason, never ack another stream's entry, and never
slow a healthy workflow running alongside."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import Delivery, MisroutedDeliveryError
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.durability.recovery import find_stalled
from stabilize_redis.queue.messages import (
    CancelStage,
    CancelWorkflow,
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    Message,
    PauseTask,
    ResumeStage,
    RunTask,
    SkipStage,
    StartStage,
    StartTask,
    StartWorkflow,
)
from tests.integration.support import FAST, Engine, make_engine, make_stage, make_workflow, wait_until

Target = tuple[str | None, str]


class Greet(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"greeting": "hi"})


def engine(target: Target) -> Engine:
    eng = make_engine(target, FAST)
    eng.registry.register("greet", Greet)
    return eng


def forge(eng: Engine, partition: int, fields: dict[str, str], entry_id: str | bytes = "*") -> bytes:
    """XADD an entry straight into a partition's ready stream, as a buggy producer would."""
    backend = eng.queue.backend
    entry: bytes = backend.client.xadd(backend.keys.partition(partition).ready, fields, id=entry_id)
    return entry


def home(eng: Engine, workflow_id: str) -> int:
    return eng.queue.backend.part(workflow_id).index


def healthy(eng: Engine) -> str:
    wf = make_workflow(make_stage("hello", "greet"), make_stage("after", "greet", requires=["hello"]))
    return eng.client.submit(wf)


def assert_succeeded_and_drained(eng: Engine, workflow_id: str) -> None:
    result = eng.store.retrieve(workflow_id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert [s.outputs for s in result.stages] == [{"greeting": "hi"}] * 2
    counts = eng.queue.counts()
    assert counts["ready"] == 0 and counts["in_flight"] == 0 and counts["delayed"] == 0


def valid(message: Message, message_id: str) -> str:
    message.message_id = message_id
    return message.encode()


MALFORMED: dict[str, tuple[dict[str, str], str]] = {
    "enum-list": ({"id": "bad-1", "m": json.dumps({"type": "CompleteTask", "execution_id": "w",
                                                   "stage_id": "s", "task_id": "t",
                                                   "status": ["SUCCEEDED"]})}, "CompleteTask.status"),
    "enum-dict": ({"id": "bad-2", "m": json.dumps({"type": "ContinueParentStage", "execution_id": "w",
                                                   "stage_id": "s", "phase": {"x": 1}})},
                  "ContinueParentStage.phase"),
    "100000-deep": ({"id": "bad-3", "m": "[" * 100_000 + "]" * 100_000}, "nest"),
    "list-stage-id": ({"id": "bad-4", "m": json.dumps({"type": "StartStage", "execution_id": "w",
                                                       "stage_id": ["s1", "s2"]})}, "StartStage.stage_id"),
    "bool-attempts": ({"id": "bad-5", "m": json.dumps({"type": "StartWorkflow", "execution_id": "w",
                                                       "attempts": True})}, "StartWorkflow.attempts"),
    "string-retry-count": ({"id": "bad-6", "m": json.dumps({"type": "CompleteWorkflow", "execution_id": "w",
                                                            "retry_count": "2"})},
                           "CompleteWorkflow.retry_count"),
    "no-m-field": ({"id": "bad-7"}, "'m'"),
    "no-id-field": ({"m": valid(StartWorkflow(execution_id="w"), "bad-8")}, "'id'"),
}


@pytest.mark.parametrize("kind", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_entry_is_dead_lettered_once_as_undecodable(target: Target, kind: str) -> None:
    eng = engine(target)
    fields, error_part = MALFORMED[kind]
    forge(eng, home(eng, "w"), fields)
    wid = healthy(eng)

    eng.processor.process_all(timeout=20)

    [row] = eng.queue.list_dlq()
    assert row["reason"] == "undecodable"
    assert error_part in row["error"]
    assert row["payload"] == fields.get("m", "") and row["message_id"] == fields.get("id", "")
    assert_succeeded_and_drained(eng, wid)


def test_background_worker_dead_letters_every_malformed_entry_and_keeps_going(real_target: Target) -> None:
    eng = engine(real_target)
    for i, (fields, _) in enumerate(MALFORMED.values()):
        forge(eng, i % eng.queue.backend.keys.partitions, fields)
    wid = healthy(eng)
    processor = eng.new_processor(concurrency=2)
    processor.start()
    try:
        result = eng.client.wait(wid, timeout=15)
        wait_until(lambda: eng.queue.dlq_size() == len(MALFORMED), 10, "every forged entry dead-lettered")
        wait_until(lambda: eng.queue.counts()["in_flight"] == 0, 10, "nothing left in flight")
    finally:
        processor.stop()

    assert result.status == WorkflowStatus.SUCCEEDED
    rows = eng.queue.list_dlq()
    assert sorted((r["message_id"], r["reason"]) for r in rows) == sorted(
        (f.get("id", ""), "undecodable") for f, _ in MALFORMED.values())
    assert_succeeded_and_drained(eng, wid)


def colliding_entry(eng: Engine, workflow_id: str, message: Message) -> tuple[int, bytes, Any]:
    """Put ``message`` into a partition that is not the workflow's, under the id of the live
    entry waiting in the workflow's own partition; returns (that partition, id, live fields)."""
    backend = eng.queue.backend
    own = backend.part(workflow_id)
    [(live_id, live_fields)] = backend.client.xrange(own.ready)
    other = (own.index + 1) % backend.keys.partitions
    forge(eng, other, {"id": message.message_id or "", "m": message.encode()}, entry_id=live_id)
    return other, live_id, live_fields


def test_message_in_the_wrong_partition_is_dead_lettered_and_never_acks_the_colliding_live_entry(
        target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    backend = eng.queue.backend
    forged = StartWorkflow(execution_id=wid, message_id="misrouted-1")
    other, live_id, live_fields = colliding_entry(eng, wid, forged)

    [delivery] = backend.fetch("forger", 10, None, partitions=[other])
    assert delivery.entry_id == live_id.decode()
    assert eng.processor.dispatcher.dispatch(delivery) == "dead"

    own = backend.part(wid).ready
    assert backend.client.xrange(own, live_id, live_id) == [(live_id, live_fields)]
    [row] = eng.queue.list_dlq()
    assert row["reason"] == "wrong_partition" and row["partition"] == other
    assert row["message_id"] == "misrouted-1" and wid in row["error"]
    assert f"partition {home(eng, wid)}" in row["error"]
    eng.processor.process_all(timeout=20)
    assert_succeeded_and_drained(eng, wid)
    assert len(eng.queue.list_dlq()) == 1


def test_replaying_a_wrong_partition_letter_sends_it_to_its_workflows_partition(target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    backend = eng.queue.backend
    forged = StartWorkflow(execution_id=wid, message_id="misrouted-3")
    other, _, _ = colliding_entry(eng, wid, forged)
    [delivery] = backend.fetch("forger", 10, None, partitions=[other])
    assert eng.processor.dispatcher.dispatch(delivery) == "dead"
    [row] = eng.queue.list_dlq()

    assert backend.replay_dead(row["partition"], row["id"].split("/", 1)[1])
    assert eng.queue.list_dlq() == []
    own = backend.part(wid).ready
    assert [f[b"id"] for _, f in backend.client.xrange(own)].count(b"misrouted-3") == 1
    eng.processor.process_all(timeout=20)
    assert eng.queue.list_dlq() == [], "handled in its own partition, not dead-lettered again"
    assert_succeeded_and_drained(eng, wid)


def test_commit_refuses_a_delivery_read_from_another_partition(target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    backend = eng.queue.backend
    forged = StartWorkflow(execution_id=wid, message_id="misrouted-2")
    other, live_id, live_fields = colliding_entry(eng, wid, forged)
    delivery = Delivery(other, live_id.decode(), "misrouted-2", forged.encode().encode())

    with pytest.raises(MisroutedDeliveryError, match=f"partition {other}"):
        backend.commit(Transition(wid), forged, delivery)

    assert backend.client.xrange(backend.part(wid).ready, live_id, live_id) == [(live_id, live_fields)]
    assert backend.client.zscore(backend.part(wid).done, "misrouted-2") is None
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wid).status == WorkflowStatus.SUCCEEDED


def _stage_and_task(eng: Engine, wid: str) -> tuple[str, str]:
    stage = eng.store.retrieve(wid).stages[0]
    return stage.id, stage.tasks[0].id


UNKNOWN: dict[str, Any] = {
    # name: (build(wid, stage id, task id) -> message, words the error must contain)
    "StartWorkflow-no-workflow": (lambda w, s, t: StartWorkflow(execution_id="ghost-wf"), "workflow ghost-wf"),
    "CancelWorkflow-no-workflow": (lambda w, s, t: CancelWorkflow(execution_id="ghost-wf"), "workflow ghost-wf"),
    "CompleteWorkflow-no-workflow": (lambda w, s, t: CompleteWorkflow(execution_id="ghost-wf"),
                                     "workflow ghost-wf"),
    "RunTask-no-workflow": (lambda w, s, t: RunTask(execution_id="ghost-wf", stage_id=s, task_id=t),
                            "workflow ghost-wf"),
    "StartStage-no-stage": (lambda w, s, t: StartStage(execution_id=w, stage_id="ghost-stage"),
                            "stage ghost-stage"),
    "CompleteStage-no-stage": (lambda w, s, t: CompleteStage(execution_id=w, stage_id="ghost-stage"),
                               "stage ghost-stage"),
    "SkipStage-no-stage": (lambda w, s, t: SkipStage(execution_id=w, stage_id="ghost-stage"), "stage ghost-stage"),
    "CancelStage-no-stage": (lambda w, s, t: CancelStage(execution_id=w, stage_id="ghost-stage"),
                             "stage ghost-stage"),
    "ResumeStage-no-stage": (lambda w, s, t: ResumeStage(execution_id=w, stage_id="ghost-stage"),
                             "stage ghost-stage"),
    "StartTask-no-task": (lambda w, s, t: StartTask(execution_id=w, stage_id=s, task_id="ghost-task"),
                          "task ghost-task"),
    "RunTask-no-task": (lambda w, s, t: RunTask(execution_id=w, stage_id=s, task_id="ghost-task"),
                        "task ghost-task"),
    "CompleteTask-no-task": (lambda w, s, t: CompleteTask(execution_id=w, stage_id=s, task_id="ghost-task"),
                             "task ghost-task"),
    "PauseTask-no-task": (lambda w, s, t: PauseTask(execution_id=w, stage_id=s, task_id="ghost-task"),
                          "task ghost-task"),
}


@pytest.mark.parametrize("case", list(UNKNOWN), ids=list(UNKNOWN))
def test_message_naming_a_missing_target_is_dead_lettered_once_as_unknown_target(target: Target,
                                                                                 case: str) -> None:
    eng = engine(target)
    wid = healthy(eng)
    sid, tid = _stage_and_task(eng, wid)
    build, words = UNKNOWN[case]
    message: Message = build(wid, sid, tid)
    message.message_id = f"ghost-{case}"
    forge(eng, home(eng, message.workflow_id), {"id": message.message_id, "m": message.encode()})

    eng.processor.process_all(timeout=20)

    [row] = eng.queue.list_dlq()
    assert row["reason"] == "unknown_target"
    assert words in row["error"] and row["message_id"] == message.message_id
    assert row["type"] == type(message).__name__
    assert_succeeded_and_drained(eng, wid)


def test_a_handler_called_without_a_delivery_still_records_an_unknown_target(target: Target) -> None:
    eng = engine(target)
    message = CancelWorkflow(execution_id="ghost-wf", message_id="direct-1")

    outcome = eng.processor._handlers[CancelWorkflow].handle(message, None)

    assert outcome == "dead"
    [row] = eng.queue.list_dlq()
    assert row["reason"] == "unknown_target" and "workflow ghost-wf" in row["error"]
    assert row["partition"] == home(eng, "ghost-wf") and row["message_id"] == "direct-1"


def test_a_message_in_flight_when_the_namespace_data_is_lost_is_not_dead_lettered(target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    backend = eng.queue.backend
    [delivery] = backend.fetch("worker", 10, None, partitions=[home(eng, wid)])
    lost = list(backend.client.scan_iter(match=f"{eng.namespace}:*"))
    backend.client.delete(*lost)  # the whole namespace at once, as a flush would

    assert eng.processor.dispatcher.dispatch(delivery) != "dead"

    assert backend.client.xlen(backend.part(wid).dead) == 0


def test_a_redelivered_duplicate_of_a_processed_message_is_acked_silently_even_without_target(
        target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    eng.processor.process_all(timeout=20)
    backend = eng.queue.backend
    processed = backend.client.zrange(backend.part(wid).processed(wid), 0, 0)[0].decode()
    ghost = StartStage(execution_id=wid, stage_id="ghost-stage", message_id=processed)
    forge(eng, home(eng, wid), {"id": processed, "m": ghost.encode()})

    eng.processor.process_all(timeout=20)

    assert eng.queue.list_dlq() == []
    assert_succeeded_and_drained(eng, wid)


def test_late_messages_for_finished_stages_and_tasks_are_no_ops_not_dead_letters(target: Target) -> None:
    eng = engine(target)
    wid = healthy(eng)
    eng.processor.process_all(timeout=20)
    sid, tid = _stage_and_task(eng, wid)
    late: list[Message] = [
        StartWorkflow(execution_id=wid), CompleteWorkflow(execution_id=wid), CancelWorkflow(execution_id=wid),
        StartStage(execution_id=wid, stage_id=sid), CompleteStage(execution_id=wid, stage_id=sid),
        SkipStage(execution_id=wid, stage_id=sid), CancelStage(execution_id=wid, stage_id=sid),
        ResumeStage(execution_id=wid, stage_id=sid), StartTask(execution_id=wid, stage_id=sid, task_id=tid),
        RunTask(execution_id=wid, stage_id=sid, task_id=tid, task_type="greet"),
        CompleteTask(execution_id=wid, stage_id=sid, task_id=tid),
        PauseTask(execution_id=wid, stage_id=sid, task_id=tid),
    ]
    for message in late:
        eng.queue.push(message)

    eng.processor.process_all(timeout=20)

    assert eng.queue.list_dlq() == []
    assert_succeeded_and_drained(eng, wid)


@pytest.mark.parametrize("letter", ["100000-deep", "unknown-stage"])
def test_stalled_sweep_still_recovers_a_workflow_beside_such_dead_letters(target: Target, letter: str) -> None:
    eng = engine(target)
    wid = healthy(eng)
    backend = eng.queue.backend
    own = backend.part(wid)
    [(lost, _)] = backend.client.xrange(own.ready)
    backend.client.xdel(own.ready, lost)  # its next message is lost: the workflow is stalled
    payload = "[" * 100_000 + "]" * 100_000 if letter == "100000-deep" else \
        StartStage(execution_id=wid, stage_id="ghost-stage").encode()
    forge(eng, own.index, {"id": "letter-1", "m": payload})
    eng.processor.process_all(timeout=20)
    assert [r["message_id"] for r in eng.queue.list_dlq()] == ["letter-1"]

    report = find_stalled(backend, older_than_s=0)

    assert report.recovered == [wid]
    eng.processor.process_all(timeout=20)
    assert_succeeded_and_drained(eng, wid)
