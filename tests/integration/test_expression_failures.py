"""A condition expression that fails to evaluate is visible to operators -- in the stage's
context, the workflow's event log and a WARNING log -- without changing which stages run."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from stabilize_redis import SplitType, StageExecution, Task, TaskResult, WorkflowStatus
from tests.integration.support import count_by_entity, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]

FAILED = "stage.expression_failed"


class Counting(Task):
    """Counts executions; succeeds with ``outputs``."""

    def __init__(self, outputs: dict[str, Any] | None = None) -> None:
        self.outputs = outputs or {}
        self.count = 0
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.count += 1
        return TaskResult.success(outputs=self.outputs)


def warnings_naming(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and all(p in r.getMessage() for p in parts)]


BROKEN_ENABLED = {"type": "expression", "expression": "no_such_flag == 1"}


@pytest.mark.parametrize("started_by", ["launch", "upstream commit", "join"])
def test_failing_stage_enabled_expression_runs_the_stage_and_reports_the_error(
        target: Target, caplog: pytest.LogCaptureFixture, started_by: str) -> None:
    eng = make_engine(target)
    maybe_task, other = Counting(), Counting()
    eng.registry.register("maybe", maybe_task)
    eng.registry.register("other", other)
    ups = {"launch": set(), "upstream commit": {"a"}, "join": {"a", "b"}}[started_by]
    wf = make_workflow(
        make_stage("a", "other"), make_stage("b", "other"),
        make_stage("maybe", "maybe", requires=ups, context={"stageEnabled": BROKEN_ENABLED}),
        make_stage("last", "other", requires={"maybe"}),
    )

    with caplog.at_level(logging.WARNING):
        result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    maybe = stage_named(result, "maybe")
    assert maybe.status == WorkflowStatus.SUCCEEDED and maybe_task.count == 1
    assert stage_named(result, "last").status == WorkflowStatus.SUCCEEDED
    assert "unknown name 'no_such_flag'" in maybe.context["stageEnabledError"]
    failures = eng.events(result.id, FAILED)
    assert [(e["entity_id"], e["data"]["expression"]) for e in failures] == [(maybe.id, "stageEnabled")]
    assert failures[0]["data"]["error"] == maybe.context["stageEnabledError"]
    assert count_by_entity(eng.events(result.id), "stage.started")[maybe.id] == 1
    assert warnings_naming(caplog, result.id, "maybe", "stageEnabled", "no_such_flag")


def test_failing_split_condition_skips_only_its_branch_and_reports_the_error(
        target: Target, caplog: pytest.LogCaptureFixture) -> None:
    eng = make_engine(target)
    tasks = {name: Counting({"go": "left"} if name == "route" else None)
             for name in ("route", "left", "right", "plain", "end")}
    for name, task in tasks.items():
        eng.registry.register(name, task)
    wf = make_workflow(
        make_stage("route", "route", split_type=SplitType.OR,
                   split_conditions={"left": "go == 'left'", "right": "1 // (go == 'right') > 0"}),
        make_stage("left", "left", requires={"route"}),
        make_stage("right", "right", requires={"route"}),
        make_stage("plain", "plain", requires={"route"}),
        make_stage("end", "end", requires={"left", "right", "plain"}),
    )

    with caplog.at_level(logging.WARNING):
        result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    statuses = {ref: stage_named(result, ref).status for ref in ("left", "right", "plain", "end")}
    assert statuses == {"left": WorkflowStatus.SUCCEEDED, "right": WorkflowStatus.SKIPPED,
                        "plain": WorkflowStatus.SUCCEEDED, "end": WorkflowStatus.SUCCEEDED}
    assert tasks["right"].count == 0
    route = stage_named(result, "route")
    errors = route.context["splitConditionErrors"]
    assert list(errors) == ["right"] and "division by zero" in errors["right"]
    failures = eng.events(result.id, FAILED)
    assert [(e["entity_id"], e["data"]["expression"], e["data"]["downstream_ref_id"], e["data"]["error"])
            for e in failures] == [(route.id, "splitConditions", "right", errors["right"])]
    assert count_by_entity(eng.events(result.id), "stage.skipped") == {stage_named(result, "right").id: 1}
    assert warnings_naming(caplog, result.id, "route", "'right'", "division by zero")
