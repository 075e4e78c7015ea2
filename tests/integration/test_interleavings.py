"""Two decisions made from one snapshot, committed one after the other (``interleave``): the
read set of each holds every field it depended on (the workflow meta included), so exactly the
decisions that cannot both stand CONFLICT, and the one made again on the new state is right."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from stabilize_redis import JoinType, StageExecution, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.queue.messages import (
    CancelStage,
    CancelWorkflow,
    CompleteWorkflow,
    Message,
    PauseTask,
    RunTask,
    StartStage,
    new_message_id,
)
from tests.integration.interleave import interleave
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]
S = WorkflowStatus


class Gate:
    """Tasks 'poll' (running() until opened, then success), 'ok' and 'fail' (TERMINAL);
    counts executions by stage ref."""

    def __init__(self, eng: Engine) -> None:
        self.open = threading.Event()
        self.runs: dict[str, int] = {}
        eng.registry.register("poll", self._poll)
        eng.registry.register("ok", self._ok)
        eng.registry.register("fail", lambda stage: TaskResult.terminal("boom"))

    def _count(self, stage: StageExecution) -> None:
        self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1

    def _poll(self, stage: StageExecution) -> TaskResult:
        self._count(stage)
        return TaskResult.success() if self.open.is_set() else TaskResult.running()

    def _ok(self, stage: StageExecution) -> TaskResult:
        self._count(stage)
        return TaskResult.success()


def setup(target: Target, *stages: StageExecution) -> tuple[Engine, Gate, Workflow]:
    eng = make_engine(target)
    gate = Gate(eng)
    wf = make_workflow(*stages)
    eng.client.submit(wf)
    return eng, gate, wf


def advance_until(eng: Engine, wf: Workflow, done: Callable[[Workflow], bool], what: str) -> None:
    def step() -> bool:
        eng.processor.process_one()
        return done(eng.store.retrieve(wf.id))

    wait_until(step, 10, what)


def status_of(ref: str, status: WorkflowStatus) -> Callable[[Workflow], bool]:
    return lambda wf: stage_named(wf, ref).status == status


def handle(eng: Engine, message: Message) -> Callable[[], object]:
    message.message_id = message.message_id or new_message_id()
    return lambda: eng.processor.dispatcher.handlers[type(message)].handle(message, None)


def run_task(wf: Workflow, ref: str) -> RunTask:
    stage = stage_named(wf, ref)
    return RunTask(execution_id=wf.id, stage_id=stage.id, task_id=stage.tasks[0].id,
                   task_type=stage.tasks[0].implementing_class)


def started(eng: Engine, wf: Workflow, ref: str) -> int:
    sid = stage_named(wf, ref).id
    return sum(1 for e in eng.events(wf.id, "stage.started") if e["entity_id"] == sid)


def test_pause_task_racing_an_unpause_runs_the_task_on(target: Target) -> None:
    eng, gate, wf = setup(target, make_stage("a", "poll"))
    advance_until(eng, wf, status_of("a", S.RUNNING), "a running")
    eng.store.pause(wf.id, "ops")
    pause = PauseTask(execution_id=wf.id, stage_id=stage_named(wf, "a").id, task_id=stage_named(wf, "a").tasks[0].id)

    result = interleave(eng.store.backend, lambda: eng.store.resume(wf.id), handle(eng, pause))

    assert result.conflicts == 1, "PauseTask decided from the PAUSED meta, which changed"
    now = eng.store.retrieve(wf.id)
    assert (now.status, stage_named(now, "a").status) == (S.RUNNING, S.RUNNING)
    gate.open.set()
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == S.SUCCEEDED, "the re-decided PauseTask queued the task again"


def test_start_stage_racing_a_cancel_workflow_never_starts_the_stage(target: Target) -> None:
    eng, gate, wf = setup(target, make_stage("a", "ok"), make_stage("c", "ok"),
                          make_stage("b", "ok", requires={"a", "c"}))
    advance_until(eng, wf, lambda w: all(stage_named(w, r).status == S.SUCCEEDED for r in "ac"), "a and c done")
    start = StartStage(execution_id=wf.id, stage_id=stage_named(wf, "b").id)

    result = interleave(eng.store.backend, handle(eng, CancelWorkflow(execution_id=wf.id, user="ops")),
                        handle(eng, start))

    assert result.conflicts == 1
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert done.status == S.CANCELED
    assert started(eng, wf, "b") == 0 and "b" not in gate.runs, "no stage starts in a canceled workflow"


@pytest.mark.parametrize(("join", "conflicts"), [(JoinType.AND, 0), (JoinType.DISCRIMINATOR, 1)])
def test_two_upstreams_completing_into_one_join_start_it_once(target: Target, join: JoinType,
                                                              conflicts: int) -> None:
    eng, gate, wf = setup(target, make_stage("a", "poll"), make_stage("c", "poll"),
                          make_stage("j", "ok", requires={"a", "c"}, join_type=join))
    advance_until(eng, wf, lambda w: all(stage_named(w, r).status == S.RUNNING for r in "ac"), "a and c running")
    gate.open.set()

    result = interleave(eng.store.backend, handle(eng, run_task(wf, "a")), handle(eng, run_task(wf, "c")))

    # Counting into an AND join commutes (no conflict; the second count releases it). A
    # discriminator is started inside the first completion's commit, which the second read.
    assert result.conflicts == conflicts
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == S.SUCCEEDED
    assert started(eng, wf, "j") == 1 and gate.runs["j"] == 1


@pytest.mark.parametrize("cancel_first", [True, False], ids=["cancel-first", "completion-first"])
def test_cancel_stage_racing_the_task_completion(target: Target, cancel_first: bool) -> None:
    eng, gate, wf = setup(target, make_stage("a", "poll"), make_stage("b", "ok", requires={"a"}))
    advance_until(eng, wf, status_of("a", S.RUNNING), "a running")
    gate.open.set()
    cancel = handle(eng, CancelStage(execution_id=wf.id, stage_id=stage_named(wf, "a").id))
    complete = handle(eng, run_task(wf, "a"))

    result = interleave(eng.store.backend, *((cancel, complete) if cancel_first else (complete, cancel)))

    assert result.conflicts == 1, "both decided to finish stage a"
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    if cancel_first:  # the completion is discarded; the canceled stage settles the workflow
        assert (done.status, stage_named(done, "a").status, stage_named(done, "b").status) == (
            S.CANCELED, S.CANCELED, S.CANCELED)
        assert "b" not in gate.runs
    else:  # the cancel finds a finished stage and leaves it
        assert (done.status, stage_named(done, "a").status, gate.runs["b"]) == (S.SUCCEEDED, S.SUCCEEDED, 1)


@pytest.mark.parametrize("late_stage_first", [True, False], ids=["late-stage-first", "complete-first"])
def test_complete_workflow_racing_a_late_stage(target: Target, late_stage_first: bool) -> None:
    eng, gate, wf = setup(target, make_stage("a", "fail"), make_stage("b", "poll"))
    advance_until(eng, wf, lambda w: stage_named(w, "a").status == S.TERMINAL
                  and stage_named(w, "b").status == S.RUNNING, "a failed, b running")
    gate.open.set()
    late = handle(eng, run_task(wf, "b"))
    complete = handle(eng, CompleteWorkflow(execution_id=wf.id))

    result = interleave(eng.store.backend, *((late, complete) if late_stage_first else (complete, late)))

    assert result.conflicts == 1
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert done.status == S.TERMINAL
    assert stage_named(done, "b").status == S.SUCCEEDED, "a finished stage is never canceled afterwards"
    ends = [e for e in eng.events(wf.id) if e["event_type"] in ("workflow.completed", "workflow.failed")]
    assert len(ends) == 1
