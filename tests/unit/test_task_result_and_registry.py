"""TaskResult factories, task interfaces and TaskRegistry resolution."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from stabilize_redis.errors import TaskNotFoundError as EngineTaskNotFoundError
from stabilize_redis.models import StageExecution, WorkflowStatus
from stabilize_redis.tasks import (
    CallableTask,
    NoOpTask,
    OverridableTimeoutRetryableTask,
    SkippableTask,
    Task,
    TaskNotFoundError,
    TaskRegistry,
    TaskResult,
    WaitTask,
)

S = WorkflowStatus


def test_factories_set_the_documented_status() -> None:
    assert TaskResult.success().status is S.SUCCEEDED
    assert TaskResult.running().status is S.RUNNING
    assert TaskResult.skipped().status is S.SKIPPED
    assert TaskResult.canceled().status is S.CANCELED
    assert TaskResult.stopped().status is S.STOPPED
    assert TaskResult.suspend().status is S.SUSPENDED
    assert TaskResult.redirect().status is S.REDIRECT


def test_terminal_and_failed_continue_record_the_error_in_context() -> None:
    caller_ctx = {"attempt": 2}
    result = TaskResult.terminal("boom", context=caller_ctx)
    assert result.status is S.TERMINAL and result.context == {"attempt": 2, "error": "boom"}
    assert caller_ctx == {"attempt": 2}
    soft = TaskResult.failed_continue("meh", outputs={"partial": True})
    assert (
        soft.status is S.FAILED_CONTINUE
        and soft.context["error"] == "meh"
        and soft.outputs == {"partial": True}
    )


def test_jump_to_is_a_redirect_with_a_target() -> None:
    result = TaskResult.jump_to("implement", context={"why": "tests failed"}, outputs={"n": 1})
    assert result.status is S.REDIRECT and result.target_stage_ref_id == "implement"
    assert result.context == {"why": "tests failed"} and result.outputs == {"n": 1}
    assert TaskResult.redirect().target_stage_ref_id is None


def test_builder_and_merge_outputs() -> None:
    built = TaskResult.builder(S.SUCCEEDED).context({"a": 1}).add_context("b", 2).add_output("o", 3).build()
    assert (built.status, built.context, built.outputs) == (S.SUCCEEDED, {"a": 1, "b": 2}, {"o": 3})
    merged = built.merge_outputs(TaskResult.success(outputs={"o": 4, "p": 5}, context={"a": 9}))
    assert merged.status is S.SUCCEEDED and merged.outputs == {"o": 4, "p": 5} and merged.context["a"] == 9
    assert built.merge_outputs(None) is built


class Deploy(Task):
    calls = 0

    def __init__(self) -> None:
        self.instance_state = 0

    def execute(self, stage: StageExecution) -> TaskResult:
        Deploy.calls += 1
        return TaskResult.success(outputs={"deployed": True})

    @property
    def aliases(self) -> list[str]:
        return ["ship"]


def test_class_registrations_are_instantiated_anew_on_each_get() -> None:
    registry = TaskRegistry()
    registry.register("deploy", Deploy)
    first, second = registry.get("deploy"), registry.get("deploy")
    assert isinstance(first, Deploy) and first is not second


def test_instances_are_returned_as_is_and_callables_are_wrapped() -> None:
    registry = TaskRegistry()
    noop = NoOpTask()
    registry.register("noop", noop)
    assert registry.get("noop") is noop

    @registry.task("hello", aliases=["hi"])
    def hello(stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"greeting": stage.context["name"]})

    task = registry.get("hi")
    assert isinstance(task, CallableTask) and task.name == "hello"
    assert task.execute(StageExecution(context={"name": "ada"})).outputs == {"greeting": "ada"}
    assert hello.__name__ == "hello"


def test_task_own_aliases_resolve() -> None:
    registry = TaskRegistry()
    registry.register("deploy", Deploy)
    assert registry.has("ship") and isinstance(registry.get("ship"), Deploy)
    assert registry.list_tasks() == ["deploy"]


def test_duplicate_registration_overwrites_unless_strict() -> None:
    registry = TaskRegistry()
    registry.register("x", NoOpTask)
    registry.register("x", Deploy)
    assert isinstance(registry.get("x"), Deploy)
    with pytest.raises(ValueError):
        registry.register("x", NoOpTask, strict=True)


def test_unknown_task_raises_task_not_found_naming_it() -> None:
    registry = TaskRegistry()
    with pytest.raises(TaskNotFoundError) as info:
        registry.get("missing")
    assert info.value.task_type == "missing" and "missing" in str(info.value)
    assert isinstance(info.value, EngineTaskNotFoundError)


def test_get_by_class_tries_exact_then_last_dotted_part_then_lowercase() -> None:
    registry = TaskRegistry()
    registry.register_class(Deploy)
    registry.register("wait", WaitTask)
    assert isinstance(registry.get_by_class("Deploy"), Deploy)
    assert isinstance(registry.get_by_class("my.module.Deploy"), Deploy)
    assert isinstance(registry.get_by_class("stabilize.tasks.Wait"), WaitTask)
    with pytest.raises(TaskNotFoundError):
        registry.get_by_class("pkg.Unknown")


def test_clear_forgets_everything() -> None:
    registry = TaskRegistry()
    registry.register("deploy", Deploy)
    registry.register_verifier("v", lambda stage: None)
    registry.clear()
    assert not registry.has("deploy") and not registry.has("ship") and not registry.has_verifier("v")


def test_overridable_timeout_prefers_stage_timeout_ms() -> None:
    class Poll(OverridableTimeoutRetryableTask):
        def get_timeout(self) -> timedelta:
            return timedelta(minutes=5)

        def execute(self, stage: StageExecution) -> TaskResult:
            return TaskResult.running()

    task = Poll()
    assert task.get_dynamic_timeout(StageExecution()) == timedelta(minutes=5)
    assert task.get_dynamic_timeout(StageExecution(context={"stageTimeoutMs": 1500})) == timedelta(
        seconds=1.5
    )
    assert task.get_dynamic_backoff_period(StageExecution(), timedelta(0)) == timedelta(seconds=1)


def test_skippable_task_execute_delegates_to_do_execute() -> None:
    class Maybe(SkippableTask):
        def is_enabled(self, stage: StageExecution) -> bool:
            return bool(stage.context.get("on"))

        def do_execute(self, stage: StageExecution) -> TaskResult:
            return TaskResult.success(outputs={"ran": True})

    task = Maybe()
    assert not task.is_enabled(StageExecution())
    assert task.execute(StageExecution()).outputs == {"ran": True}


def test_wait_task_runs_until_wait_time_has_elapsed_since_its_recorded_start() -> None:
    task = WaitTask()
    assert task.get_timeout() == timedelta(hours=24)
    stage = StageExecution(context={"waitTime": 30})
    first = task.execute(stage)
    assert first.status is S.RUNNING and isinstance(first.context["waitStartTime"], int)
    stage.context.update(first.context)
    assert task.execute(stage).status is S.RUNNING
    stage.context["waitStartTime"] = int(time.time() * 1000) - 31_000
    done = task.execute(stage)
    assert done.status is S.SUCCEEDED and done.outputs["waitedSeconds"] >= 30
    assert task.execute(StageExecution(context={"waitTime": 0})).status is S.SUCCEEDED


def test_default_task_hooks() -> None:
    task = NoOpTask()
    stage = StageExecution()
    assert task.on_timeout(stage) is None and task.on_cancel(stage) is None
    task.on_cleanup(stage)
    assert task.aliases == []
