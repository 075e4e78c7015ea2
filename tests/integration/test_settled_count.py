"""The settled count: every top-level stage that reaches a final status (or can never start
because an upstream halted) is counted once, and the commit that counts the last one releases
CompleteWorkflow once - on every path, without any handler polling or waiting for a retry
budget. CancelStage settles its stage in its own commit, so the workflow ends at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from stabilize_redis import StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.durability.recovery import find_stalled
from stabilize_redis.queue.messages import CancelStage, CompleteWorkflow, Message
from tests.integration.support import (
    Engine,
    fast,
    make_engine,
    make_stage,
    make_workflow,
    stage_named,
    wait_until,
)
from tests.integration.test_stalled_recovery import _drop_messages_of

Target = tuple[str | None, str]
S = WorkflowStatus

# A CompleteWorkflow that re-queued itself (the old STOPPED path) would give up after 3 polls.
CONFIG = fast(max_stage_wait_retries=3)


def handled(eng: Engine, kind: type[Message]) -> list[Message]:
    """Every message of type ``kind`` the engine's processor handles from now on."""
    handler = eng.processor.dispatcher.handlers[kind]
    seen: list[Message] = []
    original = handler.handle

    def handle(message: Message, delivery: Any) -> str:
        seen.append(message)
        return original(message, delivery)

    handler.handle = handle  # type: ignore[method-assign]
    return seen


def results(eng: Engine, **by_ref: TaskResult) -> None:
    """Register task 't' returning ``by_ref[stage ref]`` (default: success)."""
    def task(stage: StageExecution) -> TaskResult:
        return by_ref.get(stage.ref_id, TaskResult.success(outputs={stage.ref_id: True}))

    eng.registry.register("t", task)


def two_branches(context_a: dict[str, Any] | None = None) -> list[StageExecution]:
    """a -> a2, and b -> b2 beside it."""
    return [make_stage("a", context=context_a), make_stage("a2", requires={"a"}),
            make_stage("b"), make_stage("b2", requires={"b"})]


def test_a_stopped_branch_lets_the_others_finish_and_the_workflow_succeeds_without_polling(target: Target) -> None:
    eng = make_engine(target, CONFIG)
    results(eng, a=TaskResult.terminal("stop this branch"))
    completions = handled(eng, CompleteWorkflow)

    done = eng.run(make_workflow(*two_branches({"failPipeline": False})))

    assert done.status == S.SUCCEEDED
    assert {s.ref_id: s.status for s in done.stages} == {
        "a": S.STOPPED, "a2": S.NOT_STARTED, "b": S.SUCCEEDED, "b2": S.SUCCEEDED}
    assert [m.retry_count for m in completions] == [0], "CompleteWorkflow released once, never re-queued"
    assert len(eng.events(done.id, "workflow.completed")) == 1


def test_a_stopped_branch_with_complete_other_branches_then_fail_ends_terminal(target: Target) -> None:
    eng = make_engine(target, CONFIG)
    results(eng, a=TaskResult.terminal("stop this branch"))
    completions = handled(eng, CompleteWorkflow)

    done = eng.run(make_workflow(*two_branches({"failPipeline": False, "completeOtherBranchesThenFail": True})))

    assert done.status == S.TERMINAL
    assert stage_named(done, "b2").status == S.SUCCEEDED, "the other branch ran to its end first"
    assert len(completions) == 1


@pytest.mark.parametrize(("result", "context", "stage_status", "workflow_status", "messages"), [
    (TaskResult.success(), {}, S.SUCCEEDED, S.SUCCEEDED, 0),
    (TaskResult.failed_continue("soft"), {}, S.FAILED_CONTINUE, S.SUCCEEDED, 0),
    (TaskResult.terminal("stop"), {"failPipeline": False}, S.STOPPED, S.SUCCEEDED, 1),
    (TaskResult.terminal("boom"), {}, S.TERMINAL, S.TERMINAL, 1),
    (TaskResult.canceled(), {}, S.CANCELED, S.CANCELED, 1),
], ids=["succeeded", "failed-continue", "stopped", "terminal", "canceled"])
def test_every_path_completes_the_workflow_exactly_once(
        target: Target, result: TaskResult, context: dict[str, Any], stage_status: WorkflowStatus,
        workflow_status: WorkflowStatus, messages: int) -> None:
    eng = make_engine(target, CONFIG)
    results(eng, a=result)
    completions = handled(eng, CompleteWorkflow)

    done = eng.run(make_workflow(make_stage("a", context=context), make_stage("a2", requires={"a"}),
                                 make_stage("b")))

    assert stage_named(done, "a").status == stage_status
    assert stage_named(done, "a2").status == (S.SUCCEEDED if stage_status in (S.SUCCEEDED, S.FAILED_CONTINUE)
                                              else S.CANCELED if workflow_status == S.CANCELED else S.NOT_STARTED)
    assert done.status == workflow_status
    # Continuable paths complete in the last stage's own commit; the others through exactly
    # one CompleteWorkflow, never re-queued.
    assert len(completions) == messages and all(m.retry_count == 0 for m in completions)
    ends = [e for e in eng.events(done.id) if e["event_type"] in
            ("workflow.completed", "workflow.failed", "workflow.canceled")]
    assert len(ends) == 1


def polling_engine(target: Target) -> tuple[Engine, threading.Event]:
    """Task 't' succeeds; task 'poll' returns running() until the returned event is set."""
    eng = make_engine(target, CONFIG)
    release = threading.Event()

    def poll(stage: StageExecution) -> TaskResult:
        return TaskResult.success() if release.is_set() else TaskResult.running()

    eng.registry.register("t", lambda stage: TaskResult.success())
    eng.registry.register("poll", poll)
    return eng, release


def running(eng: Engine, wf_id: str, ref: str) -> Callable[[], bool]:
    return lambda: stage_named(eng.store.retrieve(wf_id), ref).status == S.RUNNING


def test_cancel_stage_ends_its_workflow_at_once(target: Target) -> None:
    eng, _ = polling_engine(target)
    wf = make_workflow(make_stage("a", "poll"), make_stage("b", requires={"a"}), make_stage("c", requires={"b"}))
    eng.client.submit(wf)
    eng.processor.start()
    try:
        wait_until(running(eng, wf.id, "a"), 10, "stage a running")
        eng.queue.push(CancelStage(execution_id=wf.id, stage_id=stage_named(wf, "a").id))
        done = eng.client.wait(wf.id, timeout=5)  # the stall sweep would come after 30 s
    finally:
        eng.processor.stop()
    assert done.status == S.CANCELED
    assert {s.ref_id: s.status for s in done.stages} == {"a": S.CANCELED, "b": S.CANCELED, "c": S.CANCELED}


def test_cancel_stage_of_one_branch_lets_the_other_finish_then_the_workflow_is_canceled(target: Target) -> None:
    eng, release = polling_engine(target)
    wf = make_workflow(make_stage("a", "poll"), make_stage("a2", requires={"a"}), make_stage("b", "poll"))
    eng.client.submit(wf)
    eng.processor.start()
    try:
        wait_until(running(eng, wf.id, "b"), 10, "stage b running")
        eng.queue.push(CancelStage(execution_id=wf.id, stage_id=stage_named(wf, "a").id))
        wait_until(lambda: stage_named(eng.store.retrieve(wf.id), "a").status == S.CANCELED, 10, "a canceled")
        assert eng.store.retrieve(wf.id).status == S.RUNNING, "b is still running"
        release.set()
        done = eng.client.wait(wf.id, timeout=5)
    finally:
        eng.processor.stop()
    assert done.status == S.CANCELED
    assert (stage_named(done, "b").status, stage_named(done, "a2").status) == (S.SUCCEEDED, S.CANCELED)


def test_a_lost_complete_workflow_is_re_derived_from_the_settled_count(target: Target) -> None:
    eng = make_engine(target, CONFIG)
    results(eng, a=TaskResult.terminal("stop this branch"))
    wf = eng.start(make_workflow(*two_branches({"failPipeline": False})))

    def settled() -> bool:
        eng.processor.process_one()
        stages = eng.store.retrieve(wf.id).stages
        return all(s.status.is_complete for s in stages if s.ref_id != "a2")

    wait_until(settled, 10, "every branch settled")
    backend = eng.store.backend
    assert _drop_messages_of(backend, wf.id) == 1  # the CompleteWorkflow the last commit released
    report = find_stalled(backend, older_than_s=0)
    assert report.recovered == [wf.id]
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == S.SUCCEEDED
