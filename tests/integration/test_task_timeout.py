"""``EngineConfig.default_task_timeout_s`` (``STABILIZE_DEFAULT_TASK_TIMEOUT_S``) bounds every task
that has no timeout of its own: one still RUNNING past it fails TERMINAL as timed out. A
RetryableTask's own timeout, or the stage's ``stageTimeoutMs``, is used instead."""

from __future__ import annotations

import time
from datetime import timedelta

from stabilize_redis import (
    RetryableTask,
    StageExecution,
    Task,
    TaskResult,
    WorkflowStatus,
    is_cancellation_requested,
)
from tests.integration.support import fast, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]
S = WorkflowStatus


class Forever(Task):
    """A plain Task that keeps answering running(); records its on_timeout calls."""

    def __init__(self) -> None:
        self.timeouts: list[str] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.running()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        self.timeouts.append(stage.ref_id)
        return None


class Patient(RetryableTask):
    """Runs 0.5 s in all, polling; its own timeout is a minute."""

    def get_timeout(self) -> timedelta:
        return timedelta(minutes=1)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(milliseconds=20)

    def execute(self, stage: StageExecution) -> TaskResult:
        first = stage.context.setdefault("first_poll", time.time())
        if time.time() - first < 0.5:
            return TaskResult.running(context={"first_poll": first})
        return TaskResult.success()


def test_a_task_still_running_past_the_default_timeout_fails_terminal_as_timed_out(target: Target) -> None:
    eng = make_engine(target, fast(default_task_timeout_s=0.3))
    task = Forever()
    eng.registry.register("t", task)
    started = time.monotonic()

    done = eng.run(make_workflow(make_stage("wait"), make_stage("after", requires={"wait"})), timeout=10)

    assert done.status == S.TERMINAL
    stage = stage_named(done, "wait")
    assert stage.status == S.TERMINAL and stage.tasks[0].status == S.TERMINAL
    assert "timed out after 0.3s" in stage.context["error"]
    assert task.timeouts == ["wait"], "on_timeout is called once"
    assert stage_named(done, "after").status == S.NOT_STARTED
    assert time.monotonic() - started < 5


def test_a_retryable_task_is_bounded_by_its_own_timeout_not_the_default(target: Target) -> None:
    eng = make_engine(target, fast(default_task_timeout_s=0.1))
    eng.registry.register("t", Patient())

    done = eng.run(make_workflow(make_stage("wait")), timeout=10)

    assert done.status == S.SUCCEEDED


def test_stage_timeout_ms_is_used_instead_of_the_default(target: Target) -> None:
    eng = make_engine(target, fast(default_task_timeout_s=30))
    eng.registry.register("t", Forever())

    done = eng.run(make_workflow(make_stage("wait", context={"stageTimeoutMs": 200})), timeout=10)

    assert stage_named(done, "wait").status == S.TERMINAL
    assert "timed out after 0.2s" in stage_named(done, "wait").context["error"]


class SlowCall(RetryableTask):
    """One call takes ``call_s`` (cooperatively: it stops early on its cancellation token); its
    lifecycle timeout is long, its per-call limit ``per_call`` (None: no limit of its own)."""

    def __init__(self, per_call: timedelta | None) -> None:
        self.per_call = per_call
        self.saw_token = False

    def get_timeout(self) -> timedelta:
        return timedelta(seconds=30)

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        return self.per_call

    def execute(self, stage: StageExecution) -> TaskResult:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if is_cancellation_requested():
                self.saw_token = True
                break
            time.sleep(0.005)
        return TaskResult.success(outputs={"finished": True})

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        return TaskResult.failed_continue("call timed out", outputs={"timed_out": True})


def test_a_call_over_its_per_call_limit_times_out_though_the_task_has_time_left(target: Target) -> None:
    eng = make_engine(target)
    bounded, unbounded = SlowCall(timedelta(milliseconds=150)), SlowCall(None)
    eng.registry.register("bounded", bounded)
    eng.registry.register("unbounded", unbounded)
    wf = eng.run(make_workflow(make_stage("a", "bounded"), make_stage("b", "unbounded")))
    assert stage_named(wf, "a").status == WorkflowStatus.FAILED_CONTINUE
    assert stage_named(wf, "a").outputs == {"timed_out": True} and bounded.saw_token
    assert stage_named(wf, "b").outputs == {"finished": True} and not unbounded.saw_token  # the default: no own limit
