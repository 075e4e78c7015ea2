"""Values that Redis would take but that could never be encoded, run or checkpointed (NaN,
±Infinity, NUL characters, integers beyond 64 bits, nesting too deep) are refused where they
enter: at submit with an error naming the key path, and at task completion by failing the
task with that reason — once, in one commit, never retried or dead-lettered, and without
holding up any other workflow."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from stabilize_redis import (
    Orchestrator,
    StageExecution,
    Task,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
    WorkflowValidationError,
)
from stabilize_redis.handlers import run_task
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` dicts nested one in another (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def unvalidated(*stages: StageExecution, context: dict[str, Any] | None = None, name: str = "poisoned",
                application: str = "itest") -> Workflow:
    return Workflow(application=application, name=name, stages=list(stages), context=dict(context or {}))


def with_task_field(field: str, value: str) -> StageExecution:
    stage = make_stage("build", "compile")
    setattr(stage.tasks[0], field, value)
    return stage


def with_stage_field(field: str, value: str) -> StageExecution:
    stage = make_stage("build", "compile")
    setattr(stage, field, value)
    return stage


# Each case: a workflow factory and the parts the error message must contain.
SUBMIT_CASES: dict[str, tuple[Callable[[], Workflow], list[str]]] = {
    "nan-in-list-in-context": (
        lambda: unvalidated(make_stage("build", context={"a": {"b": [0, 1, 2, float("nan")]}})),
        ["stage 'build'", "context.a.b[3]", "nan"]),
    "infinity-in-workflow-context": (
        lambda: unvalidated(make_stage("build"), context={"limits": {"max": float("inf")}}),
        ["workflow context.limits.max", "inf"]),
    "minus-infinity-in-outputs": (
        lambda: unvalidated(make_stage("build", outputs={"low": float("-inf")})),
        ["stage 'build'", "outputs.low", "-inf"]),
    "nul-in-string": (
        lambda: unvalidated(make_stage("build", context={"cmd": "make\x00all"})),
        ["stage 'build'", "context.cmd", "NUL"]),
    "nul-in-key": (
        lambda: unvalidated(make_stage("build", context={"env": {"PATH\x00": "/bin"}})),
        ["stage 'build'", "context.env", "NUL"]),
    "int-beyond-64-bits": (
        lambda: unvalidated(make_stage("build", context={"seed": 2**70})),
        ["stage 'build'", "context.seed", "64-bit"]),
    "int-below-64-bits": (
        lambda: unvalidated(make_stage("build", outputs={"rows": [1, -(2**63) - 1]})),
        ["stage 'build'", "outputs.rows[1]", "64-bit"]),
    "nesting-600-deep": (
        lambda: unvalidated(make_stage("build", context={"tree": nested(600)})),
        ["stage 'build'", "context.tree.a.a", "nest"]),
    "nan-in-trigger": (
        lambda: _with_trigger(unvalidated(make_stage("build")), {"ratio": float("nan")}),
        ["trigger", "parameters.ratio", "nan"]),
    "nul-in-workflow-name": (lambda: unvalidated(make_stage("build"), name="deploy\x00prod"), ["name", "NUL"]),
    "nul-in-application": (lambda: unvalidated(make_stage("build"), application="app\x00"), ["application", "NUL"]),
    "nul-in-stage-name": (lambda: unvalidated(with_stage_field("name", "Bu\x00ild")), ["stage 'build'", "name", "NUL"]),
    "nul-in-ref-id": (lambda: unvalidated(with_stage_field("ref_id", "bu\x00ild")), ["ref_id", "NUL"]),
    "nul-in-stage-type": (lambda: unvalidated(with_stage_field("type", "ty\x00pe")), ["stage 'build'", "type", "NUL"]),
    "nul-in-task-name": (lambda: unvalidated(with_task_field("name", "t\x00")),
                         ["stage 'build'", "tasks[0].name", "NUL"]),
    "nul-in-implementing-class": (lambda: unvalidated(with_task_field("implementing_class", "comp\x00ile")),
                                  ["stage 'build'", "tasks[0].implementing_class", "NUL"]),
}


def _with_trigger(wf: Workflow, parameters: dict[str, Any]) -> Workflow:
    wf.trigger.parameters = parameters
    return wf


def assert_nothing_written(eng: Engine, wf: Workflow) -> None:
    assert eng.client.backend.workflow_ids() == []
    assert not eng.store.exists(wf.id)
    assert eng.queue.size() == 0
    assert eng.store.events(wf.id) == []


@pytest.mark.parametrize("case", list(SUBMIT_CASES))
def test_submit_rejects_a_value_that_cannot_be_stored_naming_its_path(target: Target, case: str) -> None:
    eng = make_engine(target)
    build, expected = SUBMIT_CASES[case]
    wf = build()

    with pytest.raises(WorkflowValidationError) as info:
        eng.client.submit(wf)

    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\x00" not in message  # the error itself must be storable and printable
    assert_nothing_written(eng, wf)


ENTRY_POINTS: dict[str, Callable[[Engine, Workflow], Any]] = {
    "client.submit": lambda eng, wf: eng.client.submit(wf),
    "store.store": lambda eng, wf: eng.store.store(wf),
    "Orchestrator.start": lambda eng, wf: Orchestrator(eng.queue, store=eng.store).start(wf),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", ["nan-in-list-in-context", "nul-in-workflow-name", "int-beyond-64-bits"])
def test_every_entry_point_that_stores_a_workflow_rejects_it(target: Target, entry: str, case: str) -> None:
    eng = make_engine(target)
    build, expected = SUBMIT_CASES[case]
    wf = build()

    with pytest.raises(WorkflowValidationError) as info:
        ENTRY_POINTS[entry](eng, wf)

    assert all(part in str(info.value) for part in expected), str(info.value)
    assert_nothing_written(eng, wf)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ten_thousand_deep_context_is_rejected_cleanly(target: Target, entry: str) -> None:
    eng = make_engine(target)
    wf = unvalidated(make_stage("build", context={"tree": nested(10_000)}))

    with pytest.raises(WorkflowValidationError, match=r"stage 'build': context\.tree(\.a)+: .*nest"):
        ENTRY_POINTS[entry](eng, wf)

    assert_nothing_written(eng, wf)


# -- task results -------------------------------------------------------------------------------


class Emits(Task):
    """Counts its executions; returns ``result`` or raises ``error``."""

    def __init__(self, result: TaskResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.count = 0
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.count += 1
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


RESULT_CASES: dict[str, tuple[Callable[[], Emits], list[str]]] = {
    "int-beyond-64-bits": (lambda: Emits(TaskResult.success(outputs={"big": 2**70})), ["outputs.big", "64-bit"]),
    "nan-output": (lambda: Emits(TaskResult.success(outputs={"ratio": float("nan")})), ["outputs.ratio", "nan"]),
    "nul-in-context": (lambda: Emits(TaskResult.success(context={"log": "ok\x00"})), ["context.log", "NUL"]),
    "600-deep-outputs": (lambda: Emits(TaskResult.success(outputs={"tree": nested(600)})),
                         ["outputs.tree.a", "nest"]),
    "nan-while-running": (lambda: Emits(TaskResult.running(context={"progress": float("nan")})),
                          ["context.progress", "nan"]),
    "nan-retry-after": (lambda: Emits(error=TransientError("rate limited", retry_after=float("nan"))),
                        ["retry_after", "nan"]),
    "infinite-retry-after": (lambda: Emits(error=TransientError("rate limited", retry_after=float("inf"))),
                             ["retry_after", "inf"]),
    "negative-retry-after": (lambda: Emits(error=TransientError("rate limited", retry_after=-5)),
                             ["retry_after", "-5"]),
    "retry-after-beyond-a-day": (lambda: Emits(error=TransientError("later", retry_after=30 * 86400)),
                                 ["retry_after", "86400"]),
    "retry-after-not-a-number": (lambda: Emits(error=TransientError("later", retry_after="soon")),  # type: ignore[arg-type]
                                 ["retry_after", "'soon'"]),
    "nan-in-context-update": (lambda: Emits(error=TransientError("flaky", context_update={"seen": float("nan")})),
                              ["context_update.seen", "nan"]),
}


class Healthy(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"done": stage.ref_id})


def run_beside_a_healthy_workflow(target: Target, task: Emits) -> tuple[Engine, Workflow, Workflow]:
    """Submit a workflow whose first task is ``task`` and a healthy one, process both in the
    background, and return both once complete (TimeoutError if either never completes)."""
    eng = make_engine(target)
    eng.registry.register("poison", task)
    eng.registry.register("ok", Healthy())
    bad = make_workflow(make_stage("emit", "poison"), make_stage("after", "ok", requires={"emit"}), name="bad")
    good = make_workflow(make_stage("a", "ok"), make_stage("b", "ok", requires={"a"}), name="good")
    eng.client.submit(bad)
    eng.client.submit(good)
    eng.processor.start()
    try:
        done_bad = eng.client.wait(bad.id, timeout=10)
        done_good = eng.client.wait(good.id, timeout=10)
    finally:
        eng.processor.stop()
    return eng, done_bad, done_good


def assert_failed_once_with(eng: Engine, task: Emits, bad: Workflow, good: Workflow, expected: list[str]) -> None:
    assert bad.status == WorkflowStatus.TERMINAL
    emit, after = stage_named(bad, "emit"), stage_named(bad, "after")
    assert emit.status == WorkflowStatus.TERMINAL
    assert emit.tasks[0].status == WorkflowStatus.TERMINAL
    details = emit.tasks[0].task_exception_details["exception"]["details"]
    assert emit.context["exception"]["details"] == details
    for part in expected:
        assert part in details["error"], f"{part!r} not in {details['error']!r}"
    assert details["exception_type"] == "StateEncodingError" and details["transient"] is False
    assert task.count == 1
    assert after.status == WorkflowStatus.NOT_STARTED
    assert emit.outputs == {}
    assert eng.queue.dlq_size() == 0
    assert eng.events(bad.id, "task.retried") == []
    assert good.status == WorkflowStatus.SUCCEEDED


@pytest.mark.parametrize("case", list(RESULT_CASES))
def test_task_result_that_cannot_be_stored_fails_the_task_once(target: Target, case: str) -> None:
    build, expected = RESULT_CASES[case]
    task = build()

    eng, bad, good = run_beside_a_healthy_workflow(target, task)

    assert_failed_once_with(eng, task, bad, good, expected)


def test_result_the_check_lets_through_but_the_encoder_refuses_still_fails_the_task(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for any value the up-front check misses: without the check, 2**70 reaches msgpack.
    monkeypatch.setattr(run_task, "vet_outcome", lambda outcome, where: outcome, raising=False)
    task = Emits(TaskResult.success(outputs={"big": 2**70}))

    eng, bad, good = run_beside_a_healthy_workflow(target, task)

    assert_failed_once_with(eng, task, bad, good, ["stage 'emit'", "cannot be encoded", "OverflowError"])


class FailsWithNulText(Task):
    """First a transient error, then a permanent one, both with a NUL in their text."""

    def __init__(self) -> None:
        self.count = 0

    def execute(self, stage: StageExecution) -> TaskResult:
        self.count += 1
        if self.count == 1:
            raise TransientError("busy\x00now", retry_after=0.01)
        raise ValueError("bad\x00input")


def test_error_text_with_a_nul_is_escaped_wherever_it_is_recorded(target: Target) -> None:
    eng = make_engine(target)
    task = FailsWithNulText()
    eng.registry.register("nul", task)

    result = eng.run(make_workflow(make_stage("emit", "nul")))

    assert result.status == WorkflowStatus.TERMINAL and task.count == 2
    details = stage_named(result, "emit").tasks[0].task_exception_details["exception"]["details"]
    assert details["error"] == "bad\\x00input"
    retried = eng.events(result.id, "task.retried")
    assert [e["data"]["error"] for e in retried] == ["busy\\x00now (code=101)"]
    assert all("\x00" not in json.dumps(e) and "\\u0000" not in json.dumps(e) for e in eng.events(result.id))
