"""LoopBuilder.while_loop / repeat_until: the loops run out of the box on a plain TaskRegistry.

Each test runs the engine end to end (real Redis and the embedded default) and checks what a user
sees: how often the body ran, the values each pass saw, what the stages after the loop see, and
how a loop that never ends is stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stabilize_redis import StageExecution, Task, TaskRegistry, TaskResult, WorkflowStatus
from stabilize_redis.stages.loop_builder import LoopBuilder
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


class Recorded(Task):
    """Runs ``step(stage)``, recording the context of every execution per stage ref id."""

    def __init__(self, step: Callable[[StageExecution], TaskResult]) -> None:
        self.step = step
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs.setdefault(stage.ref_id, []).append(dict(stage.context))
        return self.step(stage)


def engine(target: Target, **tasks: Task) -> Engine:
    eng = make_engine(target)
    for name, task in tasks.items():
        eng.registry.register(name, task)
    return eng


def passes_done(stage: StageExecution) -> TaskResult:
    return TaskResult.success(outputs={"done_passes": stage.context["retry_iteration"] + 1})


def test_the_loop_tasks_resolve_in_every_registry_without_registration() -> None:
    registry = TaskRegistry()
    assert registry.has("LoopConditionTask") and registry.has("LoopBackTask") and registry.has("LoopEntryTask")
    assert registry.list_tasks() == []
    mine = Recorded(lambda s: TaskResult.success())
    registry.register("LoopBackTask", mine)
    assert registry.get("LoopBackTask") is mine


def test_while_loop_runs_the_body_while_the_condition_holds_then_continues(target: Target) -> None:
    work, after = Recorded(passes_done), Recorded(lambda s: TaskResult.success())
    eng = engine(target, work=work, after=after)
    loop = LoopBuilder.while_loop("done_passes < 3", [make_stage("work", "work")], loop_ref_prefix="retry",
                                  context={"done_passes": 0})
    assert [s.ref_id for s in loop] == ["retry_condition", "work", "retry_loopback"]
    wf = eng.run(make_workflow(*loop, make_stage("after", "after", [loop[-1].ref_id])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [c["retry_iteration"] for c in work.runs["work"]] == [0, 1, 2]
    assert after.runs["after"][0]["done_passes"] == 3
    assert stage_named(wf, "retry_condition").status == WorkflowStatus.SUCCEEDED
    assert stage_named(wf, "work").status == WorkflowStatus.SKIPPED  # jumped over by the exit
    assert stage_named(wf, "retry_loopback").status == WorkflowStatus.SUCCEEDED


def test_while_loop_whose_condition_is_false_at_once_never_runs_the_body(target: Target) -> None:
    work, after = Recorded(passes_done), Recorded(lambda s: TaskResult.success())
    eng = engine(target, work=work, after=after)
    loop = LoopBuilder.while_loop("False", [make_stage("work", "work")], loop_ref_prefix="retry")
    wf = eng.run(make_workflow(*loop, make_stage("after", "after", [loop[-1].ref_id])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert "work" not in work.runs and len(after.runs["after"]) == 1


def test_repeat_until_runs_the_body_until_the_condition_holds(target: Target) -> None:
    def attempt(stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"score": round(0.3 * (stage.context["tune_iteration"] + 1), 1)})

    body, grade, after = Recorded(attempt), Recorded(lambda s: TaskResult.success()), Recorded(
        lambda s: TaskResult.success())
    eng = engine(target, attempt=body, grade=grade, after=after)
    loop = LoopBuilder.repeat_until("score >= 0.8", [make_stage("attempt", "attempt"),
                                                     make_stage("grade", "grade")],
                                    loop_ref_prefix="tune", context={"model": "small"})
    assert [s.ref_id for s in loop] == ["tune_entry", "attempt", "grade", "tune_condition"]
    wf = eng.run(make_workflow(*loop, make_stage("after", "after", ["tune_condition"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [c["tune_iteration"] for c in body.runs["attempt"]] == [0, 1, 2]
    assert [c["score"] for c in grade.runs["grade"]] == [0.3, 0.6, 0.9]  # each pass sees its own score
    assert all(c["model"] == "small" for c in body.runs["attempt"])
    assert after.runs["after"][0]["score"] == 0.9
    assert all(s.status == WorkflowStatus.SUCCEEDED for s in wf.stages)


def test_repeat_until_that_runs_out_of_passes_is_exhausted_and_the_workflow_goes_on(target: Target) -> None:
    body, after = Recorded(lambda s: TaskResult.success(outputs={"green": False})), Recorded(
        lambda s: TaskResult.success())
    eng = engine(target, body=body, after=after)
    loop = LoopBuilder.repeat_until("green", [make_stage("body", "body")], loop_ref_prefix="ci", max_iterations=3)
    wf = eng.run(make_workflow(*loop, make_stage("after", "after", ["ci_condition"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert len(body.runs["body"]) == 3 and len(after.runs["after"]) == 1
    check = stage_named(wf, "ci_condition")
    assert check.status == WorkflowStatus.FAILED_CONTINUE and check.outputs["loop_exhausted"] is True
    assert check.context["error"] == ("loop 'ci' reached its max_iterations (3) without its condition "
                                      "'green' becoming true")


def test_while_loop_that_runs_out_of_passes_is_exhausted_and_the_workflow_goes_on(target: Target) -> None:
    work, after = Recorded(passes_done), Recorded(lambda s: TaskResult.success())
    eng = engine(target, work=work, after=after)
    loop = LoopBuilder.while_loop("True", [make_stage("work", "work")], loop_ref_prefix="retry", max_iterations=2)
    wf = eng.run(make_workflow(*loop, make_stage("after", "after", ["retry_loopback"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert len(work.runs["work"]) == 2
    exit_stage = stage_named(wf, "retry_loopback")
    assert exit_stage.status == WorkflowStatus.FAILED_CONTINUE
    assert (exit_stage.outputs["done_passes"], exit_stage.outputs["loop_exhausted"]) == (2, True)  # last pass's values
    assert exit_stage.context["error"] == ("loop 'retry' reached its max_iterations (2) with its condition "
                                           "'True' still true")
    assert after.runs["after"][0]["done_passes"] == 2


def counting(stage: StageExecution) -> TaskResult:
    return TaskResult.success(outputs={"i": int(stage.context.get("i", 0)) + 1})


def test_each_pass_of_a_while_loop_sees_the_values_the_previous_pass_produced(target: Target) -> None:
    body = Recorded(counting)
    eng = engine(target, body=body)
    wf = eng.run(make_workflow(*LoopBuilder.while_loop("i < 3", [make_stage("body", "body")], "L", 10, {"i": 0})))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [c["i"] for c in body.runs["body"]] == [0, 1, 2]
    assert stage_named(wf, "L_loopback").outputs["i"] == 3


def test_each_pass_of_a_repeat_until_loop_sees_the_values_the_previous_pass_produced(target: Target) -> None:
    body = Recorded(counting)
    eng = engine(target, body=body)
    wf = eng.run(make_workflow(*LoopBuilder.repeat_until("i >= 2", [make_stage("body", "body")], "R", 10, {"i": 0})))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [c["i"] for c in body.runs["body"]] == [0, 1]


def test_a_loop_condition_that_cannot_be_evaluated_fails_the_workflow_with_the_reason(target: Target) -> None:
    eng = engine(target, work=Recorded(lambda s: TaskResult.success()))
    wf = eng.run(make_workflow(*LoopBuilder.while_loop("missing_name > 1", [make_stage("work", "work")])))
    assert wf.status == WorkflowStatus.TERMINAL
    error = stage_named(wf, "loop_condition").context["error"]
    assert error.startswith("loop 'loop': condition 'missing_name > 1' could not be evaluated")
