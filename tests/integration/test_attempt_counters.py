"""A task's transient retries and its messages' deliveries are counted apart: retries in the
stage record (bounded by ``task_max_attempts``), deliveries in each message (bounded by
``message_max_attempts``). A handler failure never uses up a task attempt, and a task's
retries never use up the deliveries of the message that runs it."""

from __future__ import annotations

from typing import Any

from stabilize_redis import StageExecution, TaskResult, TransientError, WorkflowStatus
from stabilize_redis.queue.messages import RunTask
from tests.integration.support import Engine, fast, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


class Flaky:
    """Raises TransientError on its first ``failures`` executions, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.executions = 0

    def __call__(self, stage: StageExecution) -> TaskResult:
        self.executions += 1
        if self.executions <= self.failures:
            raise TransientError(f"not yet ({self.executions})", retry_after=0)
        return TaskResult.success()


def fail_commits_after(eng: Engine, task: Flaky, executions: set[int]) -> list[int]:
    """Make the commit of the RunTask that just ran execution number N raise once, for each N in
    ``executions`` (a handler failure after the task ran); returns the N it failed at."""
    backend = eng.store.backend
    original = backend.commit
    failed: list[int] = []

    def commit(transition: Any, message: Any, delivery: Any) -> str:
        n = task.executions
        if isinstance(message, RunTask) and n in executions and n not in failed:
            failed.append(n)
            raise RuntimeError(f"injected handler failure after execution {n}")
        return original(transition, message, delivery)

    backend.commit = commit  # type: ignore[method-assign]
    return failed


def test_a_task_on_its_last_transient_retry_survives_a_handler_failure(target: Target) -> None:
    eng = make_engine(target, fast(task_max_attempts=10, message_max_attempts=10))
    task = Flaky(failures=9)  # executions 2..10 are its nine transient retries
    eng.registry.register("t", task)
    failed = fail_commits_after(eng, task, {10})

    done = eng.run(make_workflow(make_stage("flaky")), timeout=20)

    assert failed == [10]
    assert eng.store.backend.dead_letters() == [], "one handler failure is not the message's tenth"
    assert done.status == WorkflowStatus.SUCCEEDED
    assert task.executions == 11, "the execution whose commit failed ran again (at least once)"


def test_task_retries_stay_bounded_by_task_max_attempts_and_handler_failures_use_none(target: Target) -> None:
    eng = make_engine(target, fast(task_max_attempts=4))
    task = Flaky(failures=100)
    eng.registry.register("t", task)
    failed = fail_commits_after(eng, task, {2})

    done = eng.run(make_workflow(make_stage("flaky")), timeout=20)

    stage = stage_named(done, "flaky")
    assert failed == [2]
    assert (done.status, stage.status) == (WorkflowStatus.TERMINAL, WorkflowStatus.TERMINAL)
    assert stage.context["exception"]["details"]["attempts"] == 4
    assert task.executions == 5, "four counted attempts, plus the one whose commit failed"
    assert eng.store.backend.dead_letters() == []
