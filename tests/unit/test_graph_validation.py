"""Stage-graph validation, ordering and Workflow.create."""

from __future__ import annotations

import pytest

from stabilize_redis.dag.topological import (
    CircularDependencyError,
    InvalidStageGraphError,
    find_initial_stages,
    find_terminal_stages,
    get_execution_layers,
    topological_sort,
    validate_dag,
    validate_stage_graph,
)
from stabilize_redis.models import StageExecution, SyntheticStageOwner, Workflow, WorkflowType


def stage(ref: str, *requires: str) -> StageExecution:
    return StageExecution.create("t", ref, ref, requisite_stage_ref_ids=set(requires))


def refs(stages: list[StageExecution]) -> list[str]:
    return [s.ref_id for s in stages]


def test_unknown_requisite_is_rejected_naming_both_stages() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create("app", "wf", [stage("test"), stage("deploy", "tset")])
    assert str(info.value) == "unknown_ref: stage 'deploy' requires unknown stage 'tset'"


def test_duplicate_ref_is_rejected_naming_the_ref() -> None:
    with pytest.raises(InvalidStageGraphError, match=r"^duplicate_ref: .*'build'"):
        validate_stage_graph([stage("build"), stage("build")])


def test_self_edge_is_rejected_naming_the_stage() -> None:
    with pytest.raises(InvalidStageGraphError, match=r"^self_edge: stage 'loop'"):
        validate_stage_graph([stage("loop", "loop")])


def test_cycle_is_rejected_naming_the_stages_in_it() -> None:
    stages = [stage("start"), stage("a", "start", "c"), stage("b", "a"), stage("c", "b"), stage("tail", "c")]
    with pytest.raises(CircularDependencyError) as info:
        Workflow.create("app", "wf", stages)
    err = info.value
    assert isinstance(err, ValueError)
    assert set(err.cycle) == {"a", "b", "c"} and err.cycle[0] == err.cycle[-1]
    for ref in ("a", "b", "c"):
        assert f"'{ref}'" in str(err)
    assert "start" not in err.cycle and "'tail'" in str(err)


def test_graph_errors_are_value_errors() -> None:
    assert issubclass(InvalidStageGraphError, ValueError)
    assert issubclass(CircularDependencyError, ValueError)


def test_create_orchestration_skips_validation() -> None:
    workflow = Workflow.create_orchestration("app", "adhoc", [stage("a", "missing")])
    assert workflow.type is WorkflowType.ORCHESTRATION


def test_topological_sort_is_deterministic_and_keeps_list_order_among_ready_stages() -> None:
    stages = [stage("d", "b", "c"), stage("c", "a"), stage("b", "a"), stage("a"), stage("e")]
    assert refs(topological_sort(stages)) == ["a", "c", "b", "d", "e"]
    assert refs(topological_sort(list(reversed(stages)))) == ["e", "a", "b", "c", "d"]


def test_execution_layers_group_independent_stages() -> None:
    stages = [stage("a"), stage("b", "a"), stage("c", "a"), stage("d", "b", "c")]
    assert [refs(layer) for layer in get_execution_layers(stages)] == [["a"], ["b", "c"], ["d"]]


def test_initial_and_terminal_stages_ignore_synthetic_ones() -> None:
    a, b = stage("a"), stage("b", "a")
    workflow = Workflow.create("app", "wf", [a, b])
    workflow.add_stage(StageExecution.create_synthetic("t", "pre", b, SyntheticStageOwner.STAGE_BEFORE))
    assert refs(find_initial_stages(workflow.stages)) == ["a"]
    assert refs(find_terminal_stages(workflow.stages)) == ["b"]
    assert refs(workflow.initial_stages()) == ["a"] and len(workflow.top_level_stages()) == 2


def test_synthetic_stages_are_validated_as_part_of_the_graph() -> None:
    parent = stage("parent")
    first = StageExecution.create_synthetic("t", "first", parent, SyntheticStageOwner.STAGE_BEFORE)
    second = StageExecution.create_synthetic("t", "second", parent, SyntheticStageOwner.STAGE_BEFORE)
    second.requisite_stage_ref_ids = {first.ref_id}
    assert validate_dag([parent, first, second])
    first.requisite_stage_ref_ids = {second.ref_id}
    with pytest.raises(CircularDependencyError):
        validate_stage_graph([parent, first, second])
    first.requisite_stage_ref_ids = {"nope"}
    with pytest.raises(InvalidStageGraphError, match="unknown_ref"):
        validate_stage_graph([parent, first, second])


def test_workflow_lookup_by_id_raises_but_by_ref_returns_none() -> None:
    a = stage("a")
    workflow = Workflow.create("app", "wf", [a])
    assert workflow.stage_by_id(a.id) is a and workflow.stage_by_ref_id("a") is a
    assert workflow.stage_by_ref_id("zzz") is None
    with pytest.raises(ValueError):
        workflow.stage_by_id("zzz")
    workflow.remove_stage(a.id)
    assert workflow.stages == []


def test_pause_and_resume_record_the_paused_duration() -> None:
    from stabilize_redis.models import WorkflowStatus

    workflow = Workflow.create("app", "wf", [stage("a")])
    workflow.pause("alice")
    assert workflow.status is WorkflowStatus.PAUSED and workflow.paused is not None
    assert workflow.paused.is_paused and workflow.paused.paused_by == "alice"
    workflow.resume()
    assert workflow.status is WorkflowStatus.RUNNING and not workflow.paused.is_paused
    assert workflow.paused.paused_ms >= 0
    workflow.cancel("bob", "no longer needed")
    assert (workflow.is_canceled, workflow.canceled_by, workflow.cancellation_reason) == (
        True,
        "bob",
        "no longer needed",
    )


def test_trigger_round_trips_through_dict() -> None:
    from stabilize_redis.models import Trigger

    trigger = Trigger(type="webhook", user="ci", parameters={"x": 1}, artifacts=[{"a": 1}], payload={"p": 2})
    assert Trigger.from_dict(trigger.to_dict()) == trigger
    assert Trigger.from_dict({}) == Trigger()
