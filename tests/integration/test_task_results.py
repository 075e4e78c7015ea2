"""Every TaskResult path, error class, timeout, skip, cancel and pause, end to end."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from stabilize_redis import (
    Orchestrator,
    PermanentError,
    RetryableTask,
    SkippableTask,
    StageExecution,
    Task,
    TaskExecution,
    TaskResult,
    TransientError,
    WorkflowStatus,
    is_cancellation_requested,
)
from tests.integration.support import (
    Engine,
    count_by_entity,
    fast,
    make_engine,
    make_stage,
    make_workflow,
    ms,
    stage_named,
    wait_until,
)

Target = tuple[str | None, str]


class Counting(Task):
    """Counts executions and remembers when each started (time.time())."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.contexts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, stage: StageExecution) -> int:
        with self._lock:
            self.calls.append(time.time())
            self.contexts.append(dict(stage.context))
            return len(self.calls)

    @property
    def count(self) -> int:
        return len(self.calls)

    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        return TaskResult.success()


class Returns(Counting):
    def __init__(self, result: TaskResult) -> None:
        super().__init__()
        self.result = result

    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        return self.result


def chain(first_task: str, then_task: str = "after", first_context: dict[str, Any] | None = None) -> Any:
    return make_workflow(make_stage("first", first_task, context=first_context),
                         make_stage("second", then_task, requires={"first"}))


def engine_with_after(target: Target, **config: Any) -> tuple[Engine, Counting]:
    eng = make_engine(target, fast(**config)) if config else make_engine(target)
    after = Counting()
    eng.registry.register("after", after)
    return eng, after


# -- success and running ---------------------------------------------------------------------


class Producer(Counting):
    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        return TaskResult.success(outputs={"artifact": "build-42", "files": ["a", "b"]},
                                  context={"stage_only": True})


def test_success_outputs_reach_downstream_context_but_stage_context_stays_local(target: Target) -> None:
    eng, after = engine_with_after(target)
    eng.registry.register("produce", Producer())

    result = eng.run(chain("produce"))

    assert result.status == WorkflowStatus.SUCCEEDED
    first = stage_named(result, "first")
    assert first.outputs == {"artifact": "build-42", "files": ["a", "b"]}
    assert first.context["stage_only"] is True
    assert after.contexts[0]["artifact"] == "build-42" and after.contexts[0]["files"] == ["a", "b"]
    assert "stage_only" not in after.contexts[0]


class PollThenSucceed(Counting):
    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls

    def execute(self, stage: StageExecution) -> TaskResult:
        n = self.record(stage)
        if n < self.polls:
            return TaskResult.running(context={"polled": n})
        return TaskResult.success(outputs={"polls": n, "last_seen_polled": stage.context.get("polled")})


def test_running_is_polled_until_success(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = PollThenSucceed(polls=4)
    eng.registry.register("poll", task)

    result = eng.run(chain("poll"))

    assert result.status == WorkflowStatus.SUCCEEDED
    assert task.count == 4
    assert stage_named(result, "first").outputs == {"polls": 4, "last_seen_polled": 3}
    assert after.count == 1
    events = eng.events(result.id)
    first_task = stage_named(result, "first").tasks[0]
    assert count_by_entity(events, "task.started")[first_task.id] == 1
    assert count_by_entity(events, "task.completed")[first_task.id] == 1


# -- failure statuses ------------------------------------------------------------------------


def test_terminal_fails_stage_and_workflow_and_downstream_never_starts(target: Target) -> None:
    eng, after = engine_with_after(target)
    eng.registry.register("fail", Returns(TaskResult.terminal("disk full")))

    result = eng.run(chain("fail"))

    first, second = stage_named(result, "first"), stage_named(result, "second")
    assert first.status == WorkflowStatus.TERMINAL
    assert first.context["error"] == "disk full"
    assert first.tasks[0].status == WorkflowStatus.TERMINAL
    assert result.status == WorkflowStatus.TERMINAL
    assert second.status == WorkflowStatus.NOT_STARTED
    assert after.count == 0
    assert count_by_entity(eng.events(result.id), "workflow.failed") == {result.id: 1}
    assert count_by_entity(eng.events(result.id), "stage.failed") == {first.id: 1}


def test_failed_continue_marks_stage_and_workflow_still_succeeds(target: Target) -> None:
    eng, after = engine_with_after(target)
    eng.registry.register("soft", Returns(TaskResult.failed_continue("flaky lint", outputs={"lint": "partial"})))

    result = eng.run(chain("soft"))

    first = stage_named(result, "first")
    assert first.status == WorkflowStatus.FAILED_CONTINUE
    assert first.context["error"] == "flaky lint"
    assert stage_named(result, "second").status == WorkflowStatus.SUCCEEDED
    assert after.count == 1 and after.contexts[0]["lint"] == "partial"
    assert result.status == WorkflowStatus.SUCCEEDED


def test_continue_pipeline_on_failure_turns_terminal_into_failed_continue(target: Target) -> None:
    eng, after = engine_with_after(target)
    eng.registry.register("fail", Returns(TaskResult.terminal("nope")))

    result = eng.run(chain("fail", first_context={"continuePipelineOnFailure": True}))

    assert stage_named(result, "first").status == WorkflowStatus.FAILED_CONTINUE
    assert after.count == 1
    assert result.status == WorkflowStatus.SUCCEEDED


# -- errors ----------------------------------------------------------------------------------


class FlakyThenOk(Counting):
    """Raises TransientError (retry_after, context_update) on its first execution."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after

    def execute(self, stage: StageExecution) -> TaskResult:
        n = self.record(stage)
        if n == 1:
            raise TransientError("rate limited", retry_after=self.retry_after,
                                 context_update={"processed_items": 10})
        return TaskResult.success(outputs={"resumed_from": stage.context.get("processed_items")})


def test_transient_error_is_retried_with_context_update_after_retry_after(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = FlakyThenOk(retry_after=0.4)
    eng.registry.register("flaky", task)

    result = eng.run(chain("flaky"))

    assert result.status == WorkflowStatus.SUCCEEDED
    assert task.count == 2
    # context_update was merged before the retry and the retry saw it.
    assert "processed_items" not in task.contexts[0]
    assert task.contexts[1]["processed_items"] == 10
    assert stage_named(result, "first").outputs == {"resumed_from": 10}
    # retry_after (0.4 s) is honoured, not the 10 ms task backoff.
    assert task.calls[1] - task.calls[0] >= 0.4
    retried = [e for e in eng.events(result.id) if e["event_type"] == "task.retried"]
    assert len(retried) == 1 and "rate limited" in retried[0]["data"]["error"]


class AlwaysTransient(Counting):
    def execute(self, stage: StageExecution) -> TaskResult:
        n = self.record(stage)
        raise TransientError(f"upstream unavailable (attempt {n})", retry_after=0.01)


def test_transient_error_fails_after_task_max_attempts_with_last_error(target: Target) -> None:
    eng, after = engine_with_after(target, task_max_attempts=4)
    task = AlwaysTransient()
    eng.registry.register("down", task)

    result = eng.run(chain("down"))

    first = stage_named(result, "first")
    assert task.count == 4
    assert first.status == WorkflowStatus.TERMINAL
    assert result.status == WorkflowStatus.TERMINAL
    details = first.context["exception"]["details"]
    assert details["error"] == "upstream unavailable (attempt 4) (code=101)"
    assert details["exception_type"] == "TransientError"
    assert after.count == 0


class Raises(Counting):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        raise self.error


@pytest.mark.parametrize("error", [PermanentError("bad credentials"), ValueError("bad input"),
                                   KeyError("missing_key")], ids=["PermanentError", "ValueError", "KeyError"])
def test_permanent_errors_fail_the_stage_on_the_first_execution(target: Target, error: Exception) -> None:
    eng, after = engine_with_after(target)
    task = Raises(error)
    eng.registry.register("perm", task)

    result = eng.run(chain("perm"))

    first = stage_named(result, "first")
    assert task.count == 1
    assert first.status == WorkflowStatus.TERMINAL
    assert result.status == WorkflowStatus.TERMINAL
    details = first.context["exception"]["details"]
    assert details["exception_type"] == type(error).__name__
    assert str(error) in details["error"]
    assert after.count == 0
    assert not [e for e in eng.events(result.id) if e["event_type"] == "task.retried"]


# -- timeouts --------------------------------------------------------------------------------


class SlowPoller(RetryableTask):
    """Polls forever; its timeout is tiny."""

    def __init__(self, on_timeout_result: TaskResult | None) -> None:
        self.on_timeout_result = on_timeout_result
        self.executions = 0
        self.timeouts: list[str] = []

    def get_timeout(self) -> timedelta:
        return timedelta(milliseconds=200)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(milliseconds=20)

    def execute(self, stage: StageExecution) -> TaskResult:
        self.executions += 1
        return TaskResult.running()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        self.timeouts.append(stage.ref_id)
        return self.on_timeout_result


def test_retryable_task_timeout_calls_on_timeout_and_uses_its_result(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = SlowPoller(TaskResult.success(outputs={"gave_up_gracefully": True}))
    eng.registry.register("slow", task)

    result = eng.run(chain("slow"))

    first = stage_named(result, "first")
    assert task.timeouts == ["first"]
    assert task.executions >= 2
    assert first.status == WorkflowStatus.SUCCEEDED
    assert first.outputs == {"gave_up_gracefully": True}
    assert after.count == 1 and after.contexts[0]["gave_up_gracefully"] is True
    assert result.status == WorkflowStatus.SUCCEEDED
    # The task ran until its lifetime cap, measured from its start.
    task_exec = first.tasks[0]
    assert ms(task_exec.end_time) - ms(task_exec.start_time) >= 200


def test_retryable_task_timeout_without_on_timeout_result_is_terminal(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = SlowPoller(None)
    eng.registry.register("slow", task)

    result = eng.run(chain("slow"))

    first = stage_named(result, "first")
    assert task.timeouts == ["first"]
    assert first.status == WorkflowStatus.TERMINAL
    assert "timed out" in first.context["error"]
    assert result.status == WorkflowStatus.TERMINAL
    assert after.count == 0


class PollForever(Counting):
    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        return TaskResult.running()


def test_stage_timeout_ms_ends_a_task_that_never_finishes(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = PollForever()
    eng.registry.register("forever", task)

    started = time.monotonic()
    result = eng.run(chain("forever", first_context={"stageTimeoutMs": 300}))

    first = stage_named(result, "first")
    assert first.status == WorkflowStatus.TERMINAL
    assert "timed out" in first.context["error"]
    assert result.status == WorkflowStatus.TERMINAL
    assert task.count >= 2
    assert time.monotonic() - started < 10
    assert ms(first.tasks[0].end_time) - ms(first.tasks[0].start_time) >= 300


class BlocksUntilCancelled(Counting):
    """Runs longer than its stage timeout, checking the cancellation token."""

    def __init__(self) -> None:
        super().__init__()
        self.saw_cancellation = threading.Event()

    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if is_cancellation_requested():
                self.saw_cancellation.set()
                return TaskResult.canceled()
            time.sleep(0.005)
        return TaskResult.success(outputs={"finished": True})


def test_stage_timeout_ms_abandons_a_long_execution_and_signals_its_token(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = BlocksUntilCancelled()
    eng.registry.register("block", task)

    result = eng.run(chain("block", first_context={"stageTimeoutMs": 300}))

    first = stage_named(result, "first")
    assert first.status == WorkflowStatus.TERMINAL
    assert "timed out" in first.context["error"]
    assert task.count == 1
    assert task.saw_cancellation.wait(5), "the timed-out execution's token was not cancelled"
    assert "finished" not in first.outputs


# -- skipping --------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [False, {"type": "expression", "expression": "flag == 1"}],
                         ids=["false", "expression"])
def test_disabled_stage_is_skipped_and_downstream_still_runs(target: Target, enabled: Any) -> None:
    eng, after = engine_with_after(target)
    skipped_task = Counting()
    eng.registry.register("never", skipped_task)
    eng.registry.register("flag", Returns(TaskResult.success(outputs={"flag": 0})))
    wf = make_workflow(
        make_stage("decide", "flag"),
        make_stage("maybe", "never", requires={"decide"}, context={"stageEnabled": enabled}),
        make_stage("last", "after", requires={"maybe"}),
    )

    result = eng.run(wf)

    maybe = stage_named(result, "maybe")
    assert maybe.status == WorkflowStatus.SKIPPED
    assert skipped_task.count == 0
    assert maybe.tasks[0].status == WorkflowStatus.NOT_STARTED
    assert stage_named(result, "last").status == WorkflowStatus.SUCCEEDED
    assert after.count == 1
    assert result.status == WorkflowStatus.SUCCEEDED
    events = eng.events(result.id)
    assert count_by_entity(events, "stage.skipped") == {maybe.id: 1}
    assert maybe.id not in count_by_entity(events, "stage.started")


def test_stage_enabled_expression_true_runs_the_stage(target: Target) -> None:
    eng, after = engine_with_after(target)
    maybe_task = Counting()
    eng.registry.register("maybe", maybe_task)
    eng.registry.register("flag", Returns(TaskResult.success(outputs={"flag": 1})))
    wf = make_workflow(
        make_stage("decide", "flag"),
        make_stage("maybe", "maybe", requires={"decide"},
                   context={"stageEnabled": {"type": "expression", "expression": "flag == 1"}}),
        make_stage("last", "after", requires={"maybe"}),
    )

    result = eng.run(wf)

    assert stage_named(result, "maybe").status == WorkflowStatus.SUCCEEDED
    assert maybe_task.count == 1 and after.count == 1
    assert result.status == WorkflowStatus.SUCCEEDED


class Optional(SkippableTask):
    def __init__(self) -> None:
        self.ran = 0

    def is_enabled(self, stage: StageExecution) -> bool:
        return bool(stage.context.get("run_optional"))

    def do_execute(self, stage: StageExecution) -> TaskResult:
        self.ran += 1
        return TaskResult.success(outputs={"optional": "ran"})


@pytest.mark.parametrize("run_optional", [False, True])
def test_skippable_task_runs_only_when_enabled(target: Target, run_optional: bool) -> None:
    eng, after = engine_with_after(target)
    task = Optional()
    eng.registry.register("optional", task)

    result = eng.run(chain("optional", first_context={"run_optional": run_optional}))

    first = stage_named(result, "first")
    assert task.ran == (1 if run_optional else 0)
    assert first.tasks[0].status == (WorkflowStatus.SUCCEEDED if run_optional else WorkflowStatus.SKIPPED)
    assert first.status.is_successful
    assert after.count == 1
    assert result.status == WorkflowStatus.SUCCEEDED


# -- cancellation ----------------------------------------------------------------------------


class WaitsForCancel(Counting):
    def __init__(self) -> None:
        super().__init__()
        self.running = threading.Event()
        self.saw_cancellation = threading.Event()

    def execute(self, stage: StageExecution) -> TaskResult:
        self.record(stage)
        self.running.set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if is_cancellation_requested():
                self.saw_cancellation.set()
                return TaskResult.canceled()
            time.sleep(0.005)
        return TaskResult.success(outputs={"not_canceled": True})


def test_client_cancel_stops_a_cooperative_running_task(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = WaitsForCancel()
    eng.registry.register("wait", task)
    processor = eng.new_processor(concurrency=4)
    wf = chain("wait")
    eng.client.submit(wf)
    processor.start()
    try:
        assert task.running.wait(10), "the task never started"
        eng.client.cancel(wf.id, user="alice", reason="no longer needed")
        result = eng.client.wait(wf.id, timeout=15)
    finally:
        processor.stop()

    assert task.saw_cancellation.is_set()
    assert result.status == WorkflowStatus.CANCELED
    assert result.is_canceled and result.canceled_by == "alice"
    assert result.cancellation_reason == "no longer needed"
    first = stage_named(result, "first")
    assert first.status == WorkflowStatus.CANCELED
    assert first.tasks[0].status == WorkflowStatus.CANCELED
    assert "not_canceled" not in first.outputs
    # As in stabilize, every unfinished top-level stage is canceled; the downstream never ran.
    assert stage_named(result, "second").status == WorkflowStatus.CANCELED
    assert after.count == 0
    assert count_by_entity(eng.events(wf.id), "workflow.canceled") == {wf.id: 1}


def test_orchestrator_cancel_ends_a_polling_workflow(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = PollForever()
    eng.registry.register("forever", task)
    processor = eng.new_processor(concurrency=2)
    wf = chain("forever")
    orchestrator = Orchestrator(eng.queue, store=eng.store)
    orchestrator.start(wf)
    processor.start()
    try:
        wait_until(lambda: task.count >= 2, 10, "the task to be polled twice")
        orchestrator.cancel(wf, user="bob", reason="abort")
        result = eng.client.wait(wf.id, timeout=15)
        polls_at_end = task.count
        # The poll already scheduled is delivered and dropped; nothing is left behind.
        wait_until(lambda: eng.queue.size() == 0, 10, "the queue to drain")
    finally:
        processor.stop()

    assert result.status == WorkflowStatus.CANCELED
    assert stage_named(result, "first").status == WorkflowStatus.CANCELED
    assert stage_named(result, "second").status == WorkflowStatus.CANCELED
    assert after.count == 0
    # Polling stops once the workflow is canceled (at most one poll was already in flight).
    assert task.count <= polls_at_end + 1


def test_cancel_reaches_a_task_running_in_another_processor(target: Target) -> None:
    """The processor that handles the cancel is not the one running the task: the running
    task's token is still signalled."""
    eng, after = engine_with_after(target)
    task = WaitsForCancel()
    eng.registry.register("wait", task)
    runner = eng.new_processor(concurrency=1)
    wf = chain("wait")
    eng.client.submit(wf)
    runner.start()
    canceller = eng.new_processor(concurrency=2)
    try:
        assert task.running.wait(10), "the task never started"
        # The runner's only slot is busy, so the canceller handles the cancel messages.
        canceller.start()
        eng.client.cancel(wf.id, user="carol", reason="stop")
        result = eng.client.wait(wf.id, timeout=15)
        assert task.saw_cancellation.wait(10), "the running task's token was not cancelled"
    finally:
        canceller.stop()
        runner.stop()

    assert result.status == WorkflowStatus.CANCELED
    assert stage_named(result, "first").status == WorkflowStatus.CANCELED
    assert "not_canceled" not in stage_named(result, "first").outputs
    assert after.count == 0


def test_cancel_of_a_workflow_that_never_started(target: Target) -> None:
    eng, after = engine_with_after(target)
    never = Counting()
    eng.registry.register("never", never)
    wf = chain("never")
    eng.store.store(wf)

    eng.client.cancel(wf.id, user="dave", reason="changed my mind")
    eng.processor.process_all(timeout=10)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.CANCELED
    assert result.canceled_by == "dave"
    assert [s.status for s in result.stages] == [WorkflowStatus.CANCELED, WorkflowStatus.CANCELED]
    assert never.count == 0 and after.count == 0
    # A StartWorkflow arriving afterwards starts nothing.
    Orchestrator(eng.queue).start(wf)
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.CANCELED
    assert never.count == 0


# -- pause -----------------------------------------------------------------------------------


class PausesOnFirstRun(Counting):
    """Its first execution pauses the workflow (as an operator would) and asks to be polled."""

    def __init__(self, eng: Engine) -> None:
        super().__init__()
        self.eng = eng

    def execute(self, stage: StageExecution) -> TaskResult:
        n = self.record(stage)
        if n == 1:
            self.eng.store.pause(stage.execution.id, "me")
            return TaskResult.running()
        return TaskResult.success(outputs={"runs": n})


def test_paused_workflow_holds_until_unpaused_then_succeeds(target: Target) -> None:
    eng, after = engine_with_after(target)
    task = PausesOnFirstRun(eng)
    eng.registry.register("pausing", task)
    wf = chain("pausing")

    paused = eng.run(wf)

    assert paused.status == WorkflowStatus.PAUSED
    assert paused.paused is not None and paused.paused.paused_by == "me"
    first = stage_named(paused, "first")
    assert first.status == WorkflowStatus.PAUSED
    assert first.tasks[0].status == WorkflowStatus.PAUSED
    assert task.count == 1 and after.count == 0
    assert eng.queue.size() == 0

    Orchestrator(eng.queue, store=eng.store).unpause(wf)
    eng.processor.process_all(timeout=20)

    result = eng.store.retrieve(wf.id)
    first = stage_named(result, "first")
    assert (result.status, first.status, first.tasks[0].status) == (
        WorkflowStatus.SUCCEEDED, WorkflowStatus.SUCCEEDED, WorkflowStatus.SUCCEEDED)
    assert task.count == 2 and after.count == 1
    assert stage_named(result, "first").outputs == {"runs": 2}
    assert result.paused is not None and result.paused.resume_time is not None
    assert result.paused.paused_ms >= 0


def test_unpause_right_after_pause_resumes_the_workflow(target: Target) -> None:
    """An operator pauses and at once unpauses, before any task has noticed the pause: the
    workflow must carry on, not stay paused."""
    eng, after = engine_with_after(target)
    task = PollThenSucceed(polls=3)
    eng.registry.register("poll", task)
    wf = chain("poll")
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() and task.count >= 1, 10, "the first poll")

    eng.store.pause(wf.id, "me")
    Orchestrator(eng.queue, store=eng.store).unpause(wf)
    eng.processor.process_all(timeout=20)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED, [(s.ref_id, s.status) for s in result.stages]
    assert task.count == 3 and after.count == 1


def test_client_wait_returns_a_paused_workflow(target: Target) -> None:
    """``Client.wait`` returns once the workflow is paused with nothing running (as documented),
    rather than blocking until its timeout."""
    eng, after = engine_with_after(target)
    task = PausesOnFirstRun(eng)
    eng.registry.register("pausing", task)
    wf = chain("pausing")
    eng.run(wf)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.PAUSED

    started = time.monotonic()
    waited = eng.client.wait(wf.id, timeout=2)

    assert waited.status == WorkflowStatus.PAUSED
    assert time.monotonic() - started < 1.5


# -- missing task ----------------------------------------------------------------------------


def test_unregistered_task_fails_the_workflow_with_a_clear_error(target: Target) -> None:
    eng, after = engine_with_after(target)

    result = eng.run(chain("no_such_task"))

    first = stage_named(result, "first")
    assert first.status == WorkflowStatus.TERMINAL
    assert result.status == WorkflowStatus.TERMINAL
    assert "no_such_task" in first.context["error"]
    assert "no task registered" in first.context["error"]
    assert after.count == 0
    assert eng.queue.size() == 0


class CleansUp(Task):
    """Succeeds (or fails, for stages with context fail=True) and counts its on_cleanup calls."""

    def __init__(self) -> None:
        self.cleanups: list[tuple[str, str]] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.terminal("asked to fail") if stage.context.get("fail") else TaskResult.success()

    def on_cleanup(self, stage: StageExecution) -> None:
        self.cleanups.append((stage.ref_id, stage.status.name))


def test_on_cleanup_runs_once_per_task_after_its_stage_has_ended(target: Target) -> None:
    eng = make_engine(target)
    task = CleansUp()
    eng.registry.register("clean", task)
    ok = make_stage("ok", "clean")
    ok.tasks.append(TaskExecution.create(name="second", implementing_class="clean", stage_end=True))
    ok.tasks[0].stage_end = False
    result = eng.run(make_workflow(ok, make_stage("bad", "clean", ["ok"], context={"fail": True})))
    assert result.status == WorkflowStatus.TERMINAL
    assert sorted(task.cleanups) == [("bad", "TERMINAL"), ("ok", "SUCCEEDED"), ("ok", "SUCCEEDED")]
