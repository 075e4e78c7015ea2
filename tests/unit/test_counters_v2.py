"""Counters, version 2, without Redis: thresholds laid out beside the counters, the recount
(``layout.settlement``) that layout, CompleteWorkflow and recovery share, and the plan a
transition hands to ``lua/commit.lua``."""

from __future__ import annotations

import json
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.layout import lay_out, settlement
from stabilize_redis.decisions.transition import Transition, completion_payload
from stabilize_redis.durability.recovery_plan import decode_workflow
from stabilize_redis.keys import (
    COMPLETION_FIELD,
    HALTED_COUNTER,
    SETTLED_COUNTER,
    counter_field,
    dead_counter,
    join_counter,
    settled_flag_field,
    threshold_field,
)
from stabilize_redis.models.stage import JoinType, StageExecution
from stabilize_redis.models.status import WorkflowStatus as S
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import CompleteWorkflow, StartStage, decode_message


def _stage(ref: str, requires: set[str] | None = None, status: S = S.NOT_STARTED, **kw: Any) -> StageExecution:
    task = TaskExecution.create(name=f"{ref}-t", implementing_class="work", stage_start=True, stage_end=True)
    task.status = status
    return StageExecution(ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=requires or set(),
                          tasks=[task], status=status, **kw)


def _fields(*stages: StageExecution) -> tuple[Workflow, dict[str, bytes]]:
    wf = Workflow.create(application="t", name="counters", stages=list(stages))
    return wf, lay_out(wf)


def _records(fields: dict[str, bytes]) -> dict[str, StageRecord]:
    decoded = decode_workflow({k.encode(): v for k, v in fields.items()})
    assert decoded is not None
    return decoded[1]


def _ids(wf: Workflow) -> dict[str, str]:
    return {s.ref_id: s.id for s in wf.stages}


def _plan(t: Transition) -> dict[str, Any]:
    return dict(json.loads(t.to_script_args("m1", "", "workers")[0]))


# -- layout -------------------------------------------------------------------------------------


def test_layout_stores_each_join_threshold_beside_its_counter() -> None:
    wf, fields = _fields(_stage("a"), _stage("b"), _stage("c"),
                         _stage("and", {"a", "b", "c"}),
                         _stage("first", {"a", "b", "c"}, join_type=JoinType.DISCRIMINATOR),
                         _stage("two", {"a", "b", "c"}, join_type=JoinType.N_OF_M, join_threshold=2))
    ids = _ids(wf)
    assert fields[threshold_field(join_counter(ids["and"]))] == b"3"
    assert fields[threshold_field(join_counter(ids["first"]))] == b"1"
    assert fields[threshold_field(join_counter(ids["two"]))] == b"2"
    # The number of halted upstreams at which each join can no longer be met.
    assert fields[threshold_field(dead_counter(ids["and"]))] == b"1"
    assert fields[threshold_field(dead_counter(ids["first"]))] == b"3"
    assert fields[threshold_field(dead_counter(ids["two"]))] == b"2"
    assert threshold_field(join_counter(ids["a"])) not in fields
    assert fields[threshold_field(SETTLED_COUNTER)] == b"6"
    assert fields[counter_field(SETTLED_COUNTER)] == b"0"


def test_layout_counts_the_statuses_a_workflow_is_stored_with() -> None:
    wf, fields = _fields(_stage("a", status=S.SUCCEEDED), _stage("b", status=S.STOPPED),
                         _stage("c", {"a"}), _stage("d", {"b"}), _stage("e", {"d"}))
    ids = _ids(wf)
    assert fields[counter_field(join_counter(ids["c"]))] == b"1"
    assert counter_field(join_counter(ids["d"])) not in fields
    # b halted: d can never start, nor can e; all three are settled as halted.
    assert fields[counter_field(dead_counter(ids["d"]))] == b"1"
    assert fields[counter_field(dead_counter(ids["e"]))] == b"1"
    assert {ref: fields.get(settled_flag_field(sid)) for ref, sid in ids.items()} == {
        "a": b"1", "b": b"h", "c": None, "d": b"h", "e": b"h"}
    assert fields[counter_field(SETTLED_COUNTER)] == b"4"
    assert fields[counter_field(HALTED_COUNTER)] == b"3"
    assert COMPLETION_FIELD not in fields


# -- the recount ------------------------------------------------------------------------------


def test_a_stopped_branch_settles_with_everything_below_it() -> None:
    wf, fields = _fields(_stage("a"), _stage("b", {"a"}), _stage("c", {"b"}), _stage("x"))
    records, ids = _records(fields), _ids(wf)
    records[ids["a"]].stage.status = S.STOPPED
    counts = settlement(records)
    assert counts.settled == {ids["a"]: True, ids["b"]: True, ids["c"]: True}
    assert not counts.complete
    records[ids["x"]].stage.status = S.SUCCEEDED
    assert settlement(records).complete


def test_a_discriminator_settles_only_when_every_upstream_halted() -> None:
    wf, fields = _fields(_stage("a"), _stage("b"), _stage("j", {"a", "b"}, join_type=JoinType.DISCRIMINATOR))
    records, ids = _records(fields), _ids(wf)
    records[ids["a"]].stage.status = S.TERMINAL
    assert ids["j"] not in settlement(records).settled
    records[ids["b"]].stage.status = S.CANCELED
    assert settlement(records).settled[ids["j"]] is True


def test_n_of_m_settles_once_its_threshold_cannot_be_reached() -> None:
    wf, fields = _fields(_stage("a"), _stage("b"), _stage("c"),
                         _stage("j", {"a", "b", "c"}, join_type=JoinType.N_OF_M, join_threshold=2))
    records, ids = _records(fields), _ids(wf)
    records[ids["a"]].stage.status = S.TERMINAL
    assert ids["j"] not in settlement(records).settled
    records[ids["b"]].stage.status = S.STOPPED
    assert settlement(records).settled[ids["j"]] is True


def test_a_running_or_paused_stage_is_not_settled() -> None:
    wf, fields = _fields(_stage("a"), _stage("b"))
    records, ids = _records(fields), _ids(wf)
    records[ids["a"]].stage.status = S.RUNNING
    records[ids["b"]].stage.status = S.PAUSED
    assert settlement(records).settled == {}


# -- the plan -----------------------------------------------------------------------------------


def test_a_counter_op_names_the_stored_threshold_and_carries_no_number() -> None:
    t = Transition("w")
    start = StartStage(execution_id="w", stage_id="s2")
    t.count(join_counter("s2"), start)
    plan = _plan(t)
    assert plan["n"] == [[counter_field(join_counter("s2")), threshold_field(join_counter("s2")), 1, 1]]
    assert plan["r"][0][0] == start.message_id


def test_reset_sets_counters_and_thresholds_and_unsettles_stages_in_one_plan() -> None:
    t = Transition("w")
    t.reset_counter(join_counter("s3"), 0, threshold=2)
    t.reset_counter(dead_counter("s3"), 0)
    t.unsettle("s3")
    t.complete_when_settled(CompleteWorkflow(execution_id="w"))
    plan = _plan(t)
    assert plan["z"] == [[counter_field(join_counter("s3")), 0], [threshold_field(join_counter("s3")), 2],
                         [counter_field(dead_counter("s3")), 0]]
    assert plan["u"] == ["s3"]
    assert plan["k"]["flag"] == settled_flag_field("")
    assert plan["k"]["done"] == COMPLETION_FIELD
    assert plan["sr"] == len(plan["r"]) == 1


def test_settling_carries_the_completion_to_release_and_the_fused_success_carries_none() -> None:
    t = Transition("w")
    t.settle("s1", False, CompleteWorkflow(execution_id="w"))
    t.settle("s2", True, CompleteWorkflow(execution_id="w"))
    plan = _plan(t)
    assert plan["s"] == [["s1", 0], ["s2", 1]]
    assert plan["sr"] == 1 and plan["cw"] == 0
    fused = Transition("w")
    fused.settle("s1", False, None)
    assert _plan(fused)["sr"] == 0


def test_the_fast_completion_encoding_is_the_message_encoding() -> None:
    message = CompleteWorkflow(execution_id="wf-1", execution_type="ORCHESTRATION", message_id="01ABC")
    assert completion_payload(message) == message.encode()
    decoded = decode_message(completion_payload(message))
    assert isinstance(decoded, CompleteWorkflow) and decoded.execution_id == "wf-1"
    retried = CompleteWorkflow(execution_id="wf-1", retry_count=2, message_id="01ABD")
    assert completion_payload(retried) == retried.encode()
