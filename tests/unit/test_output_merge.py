"""The output-merge rule behind Workflow.get_context()."""

from __future__ import annotations

from stabilize_redis.dag.outputs import merge_outputs_in_order
from stabilize_redis.models import StageExecution, Workflow


def test_scalars_are_last_wins() -> None:
    assert merge_outputs_in_order([{"a": 1, "b": 1}, {"a": 2}]) == {"a": 2, "b": 1}


def test_lists_concatenate_without_duplicates_keeping_first_occurrence_order() -> None:
    merged = merge_outputs_in_order([{"xs": [3, 1]}, {"xs": [1, 2, 3, 4]}, {"xs": [4, 5]}])
    assert merged == {"xs": [3, 1, 2, 4, 5]}


def test_unhashable_list_items_are_deduplicated_by_equality() -> None:
    merged = merge_outputs_in_order([{"xs": [{"id": 1}]}, {"xs": [{"id": 1}, {"id": 2}]}])
    assert merged["xs"] == [{"id": 1}, {"id": 2}]


def test_a_non_list_value_replaces_a_list_and_vice_versa() -> None:
    assert merge_outputs_in_order([{"k": [1]}, {"k": "s"}]) == {"k": "s"}
    assert merge_outputs_in_order([{"k": "s"}, {"k": [1]}]) == {"k": [1]}


def test_merge_never_mutates_the_inputs() -> None:
    first = {"xs": [1]}
    merge_outputs_in_order([first, {"xs": [2]}])
    assert first == {"xs": [1]}


def test_workflow_context_merges_stage_outputs_in_dependency_order_not_list_order() -> None:
    late = StageExecution.create("t", "late", "late", requisite_stage_ref_ids={"early"})
    early = StageExecution.create("t", "early", "early")
    late.outputs = {"v": "late", "xs": ["b"]}
    early.outputs = {"v": "early", "xs": ["a", "b"]}
    workflow = Workflow.create("app", "wf", [late, early])
    assert workflow.get_context() == {"v": "late", "xs": ["a", "b"]}
    assert early.outputs == {"v": "early", "xs": ["a", "b"]}
