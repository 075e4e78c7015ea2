"""stabilize's Queue API on Redis streams: poll/ack/reschedule by hand, locking, ensure and
clear. Real Redis and the embedded default."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from stabilize_redis import RedisQueue, WorkflowStatus
from stabilize_redis.keys import CONSUMER_GROUP
from stabilize_redis.queue.messages import CompleteTask, Message, RunTask, StartStage, StartWorkflow
from tests.conftest import delete_namespace
from tests.integration.support import wait_until

Target = tuple[str | None, str]


def queue_of(target: Target, **kw: object) -> RedisQueue:
    url, ns = target
    return RedisQueue(url, namespace=ns, **kw)  # type: ignore[arg-type]


def test_a_pushed_message_is_polled_then_acked_away(target: Target) -> None:
    queue = queue_of(target)
    queue.push(StartWorkflow(execution_id="test-123"))
    assert queue.size() == 1

    polled = queue.poll_one()
    assert isinstance(polled, StartWorkflow) and polled.execution_id == "test-123" and polled.message_id
    queue.ack(polled)

    assert queue.size() == 0 and queue.poll_one() is None


def test_a_delayed_message_is_not_polled_before_it_is_due(target: Target) -> None:
    queue = queue_of(target)
    queue.push(StartWorkflow(execution_id="later"), delay=timedelta(hours=1))

    assert queue.size() == 1 and queue.poll_one() is None
    queue.push(StartWorkflow(execution_id="soon"), delay=0.05)
    soon = wait_until(queue.poll_one, 5, "the due message")
    assert soon.execution_id == "soon"


def test_messages_of_one_workflow_come_out_in_push_order(target: Target) -> None:
    queue = queue_of(target)
    queue.push(StartWorkflow(execution_id="exec-1"))
    queue.push(StartStage(execution_id="exec-1", stage_id="stage-1"))
    queue.push(CompleteTask(execution_id="exec-1", stage_id="stage-1", task_id="task-1",
                            status=WorkflowStatus.SUCCEEDED))

    kinds = []
    for _ in range(3):
        message = queue.poll_one()
        assert message is not None
        kinds.append(type(message))
        queue.ack(message)
    assert kinds == [StartWorkflow, StartStage, CompleteTask]
    assert isinstance(message, CompleteTask) and message.status == WorkflowStatus.SUCCEEDED


def test_a_polled_message_is_locked_until_acked(target: Target) -> None:
    first, second = queue_of(target), queue_of(target)
    first.push(StartWorkflow(execution_id="lock-test"))

    polled = first.poll_one()
    assert polled is not None
    assert first.poll_one() is None and second.poll_one() is None
    second.ack(polled)  # not handed out by this queue: ignored
    assert first.size() == 1
    first.ack(polled)
    assert first.size() == 0


def test_a_message_its_poller_never_acked_is_handed_out_again_after_the_lock(target: Target) -> None:
    crashed = queue_of(target, lock_duration=0.2)
    survivor = queue_of(target, lock_duration=0.2)
    crashed.push(StartWorkflow(execution_id="orphan"))
    assert crashed.poll_one() is not None

    again = wait_until(survivor.poll_one, 5, "the reclaimed message")
    assert again.execution_id == "orphan"
    survivor.ack(again)
    assert survivor.size() == 0


def test_ack_removes_the_entry_from_the_stream_it_was_read_from(target: Target) -> None:
    queue = queue_of(target)
    keys = queue.backend.keys
    a = next(f"wf-{i}" for i in range(500) if keys.for_workflow(f"wf-{i}").index == 0)
    b = next(f"wf-{i}" for i in range(500) if keys.for_workflow(f"wf-{i}").index == 1)
    queue.push(StartWorkflow(execution_id=a))
    queue.push(StartWorkflow(execution_id=b))

    taken = [queue.poll_one(), queue.poll_one()]
    assert {m.execution_id for m in taken if m is not None} == {a, b}
    for message in taken:
        assert message is not None
        queue.ack(message)

    client = queue.backend.client
    assert [client.xlen(keys.partition(i).ready) for i in (0, 1)] == [0, 0]
    assert [client.xpending(keys.partition(i).ready, CONSUMER_GROUP)["pending"] for i in (0, 1)] == [0, 0]


def test_poll_runs_the_callback_and_acks(target: Target) -> None:
    queue = queue_of(target)
    queue.push(StartWorkflow(execution_id="cb"))
    seen: list[Message] = []

    assert queue.poll(seen.append) is True
    assert [m.workflow_id for m in seen] == ["cb"] and queue.size() == 0
    assert queue.poll(seen.append) is False

    queue.push(StartWorkflow(execution_id="boom"))

    def fail(message: Message) -> None:
        raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        queue.poll(fail)
    assert queue.size() == 1 and queue.poll_one() is None  # still locked


def test_a_rescheduled_message_comes_back_after_its_delay_with_one_more_attempt(target: Target) -> None:
    queue = queue_of(target)
    queue.push(StartWorkflow(execution_id="retry-me"))
    message = queue.poll_one()
    assert message is not None

    queue.reschedule(message, timedelta(seconds=0.2))
    assert queue.size() == 1 and queue.poll_one() is None
    again = wait_until(queue.poll_one, 5, "the rescheduled message")
    assert again.message_id == message.message_id and again.attempts == message.attempts + 1
    with pytest.raises(ValueError):
        queue.reschedule(StartWorkflow(execution_id="never-polled", message_id="x"), 0)


def test_rescheduling_a_message_past_its_attempts_dead_letters_it(target: Target) -> None:
    queue = queue_of(target, max_attempts=2)
    queue.push(StartWorkflow(execution_id="tired"))
    for _ in range(2):
        message = wait_until(queue.poll_one, 5, "the message")
        queue.reschedule(message, 0)

    assert queue.size() == 0 and queue.dlq_size() == 1
    assert queue.list_dlq()[0]["reason"] == "max_attempts" and queue.list_dlq()[0]["attempts"] == 2


def test_ensure_pushes_only_when_no_equal_message_is_queued(target: Target) -> None:
    queue = queue_of(target)
    run = RunTask(execution_id="wf-e", stage_id="s", task_id="t", task_type="x")

    assert queue.ensure(run) is True
    assert queue.ensure(RunTask(execution_id="wf-e", stage_id="s", task_id="t", task_type="x")) is False
    assert queue.ensure(RunTask(execution_id="wf-e", stage_id="s", task_id="other", task_type="x")) is True
    polled = queue.poll_one()
    assert polled is not None
    assert queue.ensure(RunTask(execution_id="wf-e", stage_id="s", task_id="t", task_type="x")) is False  # in flight
    queue.push(StartStage(execution_id="wf-e", stage_id="later"), delay=3600)
    assert queue.ensure(StartStage(execution_id="wf-e", stage_id="later")) is False  # delayed
    assert queue.size() == 3


def test_a_queue_finds_a_pending_message_for_a_task(target: Target) -> None:
    queue = queue_of(target)
    queue.push(RunTask(execution_id="wf-p", stage_id="s", task_id="task-42", task_type="x"), delay=3600)

    assert queue.has_pending_message_for_task("task-42")
    assert not queue.has_pending_message_for_task("task-4")


def test_an_undecodable_entry_is_dead_lettered_and_the_next_message_is_polled(target: Target) -> None:
    queue = queue_of(target)
    keys = queue.backend.keys
    wid = next(f"wf-{i}" for i in range(500) if keys.for_workflow(f"wf-{i}").index == 0)
    queue.backend.client.xadd(keys.partition(0).ready, {"id": "junk-1", "m": b"{not json"})
    queue.push(StartWorkflow(execution_id=wid))

    polled = queue.poll_one()

    assert polled is not None and polled.execution_id == wid
    assert [(r["message_id"], r["reason"]) for r in queue.list_dlq()] == [("junk-1", "undecodable")]


def test_clear_deletes_this_namespaces_queued_messages_only(target: Target, namespace: str) -> None:
    url, ns = target
    queue = queue_of(target)
    other = RedisQueue(url, namespace=f"{ns}x")
    try:
        other.push(StartWorkflow(execution_id="keep"))
        queue.push(StartWorkflow(execution_id="a"))
        queue.push(StartWorkflow(execution_id="b"), delay=3600)
        polled = queue.poll_one()
        assert polled is not None
        queue.backend.client.xadd(queue.backend.keys.partition(0).dead, {"id": "d", "m": b"{}", "reason": "x"})

        assert queue.clear() == 2

        assert queue.size() == 0 and queue.dlq_size() == 1 and other.size() == 1
        queue.push(StartWorkflow(execution_id="after-clear"))
        after = queue.poll_one()
        assert after is not None and after.execution_id == "after-clear"
    finally:
        if url is not None:
            delete_namespace(url, f"{ns}x")


def test_extend_lock_keeps_a_slow_message_from_being_handed_out_again(target: Target) -> None:
    slow = queue_of(target, lock_duration=0.3)
    other = queue_of(target, lock_duration=0.3)
    slow.push(StartWorkflow(execution_id="slow"))
    message = slow.poll_one()
    assert message is not None

    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:
        assert slow.extend_lock(message)
        assert other.poll_one() is None
    assert not other.extend_lock(message)
    slow.ack(message)
    assert slow.size() == 0
