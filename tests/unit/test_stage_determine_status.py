"""StageExecution.determine_status / failure_status, tasks and navigation."""

from __future__ import annotations

import gc

import pytest

from stabilize_redis.models import (
    JoinType,
    MultiInstanceConfig,
    StageExecution,
    SyntheticStageOwner,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)

S = WorkflowStatus


def _stage_with_tasks(*statuses: WorkflowStatus, **context: object) -> tuple[Workflow, StageExecution]:
    stage = StageExecution.create("t", "main", "main", context=dict(context))
    stage.status = S.RUNNING
    tasks = [TaskExecution.create(f"t{i}", "noop") for i in range(len(statuses))]
    for task, status in zip(tasks, statuses, strict=True):
        task.status = status
    stage.tasks = tasks
    return Workflow.create("app", "wf", [stage]), stage


def _add_synthetic(
    workflow: Workflow, parent: StageExecution, owner: SyntheticStageOwner, status: WorkflowStatus
) -> StageExecution:
    child = StageExecution.create_synthetic("t", "child", parent, owner)
    child.status = status
    workflow.add_stage(child)
    return child


def test_all_tasks_succeeded_gives_succeeded() -> None:
    _, stage = _stage_with_tasks(S.SUCCEEDED, S.SKIPPED)
    assert stage.determine_status() is S.SUCCEEDED


def test_a_terminal_task_fails_the_stage_with_its_failure_status() -> None:
    _, stage = _stage_with_tasks(S.SUCCEEDED, S.TERMINAL)
    assert stage.determine_status() is S.TERMINAL
    _, lenient = _stage_with_tasks(S.TERMINAL, continuePipelineOnFailure=True)
    assert lenient.determine_status() is S.FAILED_CONTINUE
    _, stopping = _stage_with_tasks(S.TERMINAL, failPipeline=False)
    assert stopping.determine_status() is S.STOPPED


def test_halt_outranks_waiting_and_running_items() -> None:
    _, stage = _stage_with_tasks(S.RUNNING, S.PAUSED, S.CANCELED)
    assert stage.determine_status() is S.CANCELED
    _, stage = _stage_with_tasks(S.CANCELED, S.STOPPED)
    assert stage.determine_status() is S.STOPPED


def test_waiting_states_outrank_running_in_paused_buffered_suspended_order() -> None:
    assert _stage_with_tasks(S.RUNNING, S.SUSPENDED, S.BUFFERED)[1].determine_status() is S.BUFFERED
    assert _stage_with_tasks(S.SUSPENDED, S.PAUSED)[1].determine_status() is S.PAUSED
    assert _stage_with_tasks(S.SUCCEEDED, S.SUSPENDED)[1].determine_status() is S.SUSPENDED


def test_unfinished_tasks_keep_the_stage_running() -> None:
    assert _stage_with_tasks(S.SUCCEEDED, S.NOT_STARTED)[1].determine_status() is S.RUNNING
    assert _stage_with_tasks(S.SUCCEEDED, S.REDIRECT)[1].determine_status() is S.RUNNING


def test_failed_continue_task_gives_failed_continue_once_everything_is_done() -> None:
    _, stage = _stage_with_tasks(S.FAILED_CONTINUE, S.SUCCEEDED)
    assert stage.determine_status() is S.FAILED_CONTINUE


def test_a_halted_before_stage_fails_the_stage() -> None:
    workflow, stage = _stage_with_tasks(S.NOT_STARTED)
    _add_synthetic(workflow, stage, SyntheticStageOwner.STAGE_BEFORE, S.TERMINAL)
    assert stage.determine_status() is S.TERMINAL


def test_stage_waits_on_after_stages_and_reports_their_halt() -> None:
    workflow, stage = _stage_with_tasks(S.SUCCEEDED)
    after = _add_synthetic(workflow, stage, SyntheticStageOwner.STAGE_AFTER, S.RUNNING)
    assert stage.determine_status() is S.RUNNING
    after.status = S.STOPPED
    assert stage.determine_status() is S.STOPPED
    after.status = S.SUCCEEDED
    assert stage.determine_status() is S.SUCCEEDED


def test_running_stage_without_tasks_or_before_stages_succeeds() -> None:
    stage = StageExecution.create("noop", "empty", "empty")
    workflow = Workflow.create("app", "wf", [stage])
    assert stage.determine_status() is S.NOT_STARTED
    stage.status = S.RUNNING
    assert stage.determine_status() is S.SUCCEEDED
    assert workflow.stages == [stage]


def test_empty_running_stage_waits_for_its_after_stages() -> None:
    stage = StageExecution.create("noop", "empty", "empty")
    stage.status = S.RUNNING
    workflow = Workflow.create("app", "wf", [stage])
    after = _add_synthetic(workflow, stage, SyntheticStageOwner.STAGE_AFTER, S.NOT_STARTED)
    assert stage.determine_status() is S.RUNNING
    after.status = S.TERMINAL
    assert stage.determine_status() is S.TERMINAL


def test_failure_status_uses_the_given_default_when_the_pipeline_should_fail() -> None:
    stage = StageExecution.create("t", "s", "s")
    assert stage.failure_status() is S.TERMINAL
    assert stage.failure_status(default=S.CANCELED) is S.CANCELED
    stage.context["continuePipelineOnFailure"] = True
    assert stage.failure_status(default=S.CANCELED) is S.FAILED_CONTINUE


def test_allow_sibling_stages_to_continue_on_failure_reads_the_context_flag() -> None:
    stage = StageExecution.create("t", "s", "s")
    assert stage.allow_sibling_stages_to_continue_on_failure is False
    stage.context["allowSiblingStagesToContinueOnFailure"] = True
    assert stage.allow_sibling_stages_to_continue_on_failure is True


def test_tasks_link_back_to_their_stage_and_next_task_stops_after_stage_end() -> None:
    stage = StageExecution.create("t", "s", "s")
    first = TaskExecution.create("a", "noop", stage_start=True)
    last = TaskExecution.create("b", "noop", stage_end=True)
    extra = TaskExecution.create("c", "noop")
    stage.tasks = [first, last, extra]
    assert all(t.stage is stage for t in stage.tasks)
    assert stage.first_task() is first and stage.has_tasks()
    assert stage.next_task(first) is last
    assert stage.next_task(last) is None
    assert stage.next_task(extra) is None


def test_output_reducers_round_trip_through_context() -> None:
    stage = StageExecution(ref_id="join", output_reducers={"items": "collect"})
    assert stage.context["_output_reducers"] == {"items": "collect"}
    reloaded = StageExecution(ref_id="join", context=dict(stage.context))
    assert reloaded.output_reducers == {"items": "collect"}


def test_n_of_m_join_rejects_a_negative_threshold() -> None:
    with pytest.raises(ValueError):
        StageExecution(ref_id="j", join_type=JoinType.N_OF_M, join_threshold=-1)


def test_stage_defaults_match_stabilize() -> None:
    stage = StageExecution()
    assert len(stage.id) == 26 and stage.id != StageExecution().id
    assert (stage.ref_id, stage.type, stage.name, stage.status, stage.version) == (
        "",
        "",
        "",
        S.NOT_STARTED,
        0,
    )
    assert stage.requisite_stage_ref_ids == set() and stage.mi_config is None
    assert stage.join_type is JoinType.AND and stage.join_threshold == 0
    assert MultiInstanceConfig.from_dict(MultiInstanceConfig(count=3).to_dict()) == MultiInstanceConfig(
        count=3
    )


def test_navigation_over_the_workflow_graph() -> None:
    a = StageExecution.create("t", "A", "a")
    b = StageExecution.create("t", "B", "b", requisite_stage_ref_ids={"a"})
    c = StageExecution.create("t", "C", "c", requisite_stage_ref_ids={"a", "b"})
    workflow = Workflow.create("app", "wf", [a, b, c])
    before = _add_synthetic(workflow, c, SyntheticStageOwner.STAGE_BEFORE, S.NOT_STARTED)
    assert a.is_initial() and c.is_join() and not b.is_join()
    assert a.downstream_stages() == [b, c]
    assert c.upstream_stages() == [a, b]
    assert c.before_stages() == [before] and c.first_before_stages() == [before] and c.after_stages() == []
    assert before.is_synthetic() and before.parent() is c
    assert [s.ref_id for s in before.ancestors()] == ["c", "a", "b"]
    with pytest.raises(ValueError):
        a.parent()
    a.status = S.SUCCEEDED
    assert not c.all_upstream_stages_complete()
    b.status = S.SKIPPED
    assert c.all_upstream_stages_complete()


def test_upstream_failure_is_seen_through_not_started_stages() -> None:
    a = StageExecution.create("t", "A", "a")
    b = StageExecution.create("t", "B", "b", requisite_stage_ref_ids={"a"})
    c = StageExecution.create("t", "C", "c", requisite_stage_ref_ids={"b"})
    workflow = Workflow.create("app", "wf", [a, b, c])  # stages hold only a weakref: keep it alive
    assert not c.any_upstream_stages_failed()
    a.status = S.TERMINAL
    assert c.any_upstream_stages_failed()
    assert workflow.stages[2] is c


def test_stage_holds_only_a_weak_reference_to_its_workflow() -> None:
    stage = StageExecution.create("t", "s", "s")
    Workflow.create("app", "wf", [stage])
    gc.collect()
    assert not stage.has_execution()
    with pytest.raises(ValueError):
        _ = stage.execution
    workflow = Workflow.create("app", "wf", [])
    stage.set_execution_strong(workflow)
    del workflow
    gc.collect()
    assert stage.has_execution()
