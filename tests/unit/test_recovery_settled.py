"""The recovery plan re-derives CompleteWorkflow from the settled count (pure, no Redis): when
every top-level stage settled - stages that can never start included - or one ended the
workflow early (TERMINAL, CANCELED); a STOPPED branch alone waits for the others."""

from __future__ import annotations

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.layout import lay_out
from stabilize_redis.durability.recovery_plan import decode_workflow, describe, recovery_messages
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus as S
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import Workflow


def _stage(ref: str, requires: set[str] | None = None) -> StageExecution:
    task = TaskExecution.create(name=f"{ref}-t", implementing_class="work", stage_start=True, stage_end=True)
    return StageExecution(ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=requires or set(), tasks=[task])


def _running(*stages: StageExecution) -> tuple[Workflow, dict[str, StageRecord], dict[str, StageExecution]]:
    wf = Workflow.create(application="t", name="settled", stages=list(stages))
    decoded = decode_workflow({k.encode(): v for k, v in lay_out(wf).items()})
    assert decoded is not None
    stored, records = decoded
    stored.status = S.RUNNING
    return stored, records, {s.ref_id: s for s in stored.stages}


def _set(stage: StageExecution, status: S) -> None:
    stage.status = status
    stage.tasks[0].status = status


def test_a_stopped_branch_waits_for_its_running_sibling() -> None:
    wf, records, st = _running(_stage("a"), _stage("a2", {"a"}), _stage("b"))
    _set(st["a"], S.STOPPED)
    _set(st["b"], S.RUNNING)
    assert describe(recovery_messages(wf, records)) == [f"RunTask({st['b'].tasks[0].id})"]


def test_a_stopped_branch_whose_stages_below_can_never_start_completes_once_the_rest_settled() -> None:
    wf, records, st = _running(_stage("a"), _stage("a2", {"a"}), _stage("a3", {"a2"}), _stage("b"))
    _set(st["a"], S.STOPPED)
    _set(st["b"], S.SUCCEEDED)
    assert describe(recovery_messages(wf, records)) == ["CompleteWorkflow"]


def test_a_terminal_stage_ends_the_workflow_without_waiting() -> None:
    wf, records, st = _running(_stage("a"), _stage("b"))
    _set(st["a"], S.TERMINAL)
    _set(st["b"], S.RUNNING)
    assert describe(recovery_messages(wf, records)) == [f"RunTask({st['b'].tasks[0].id})", "CompleteWorkflow"]
