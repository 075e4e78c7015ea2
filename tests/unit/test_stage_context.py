"""StageContext: a stage's context with its ancestors' outputs underneath, nearest first."""

from __future__ import annotations

import pytest

from stabilize_redis.context import StageContext, create_merged_context
from stabilize_redis.models.stage import StageExecution, SyntheticStageOwner
from stabilize_redis.models.workflow import Workflow


def diamond() -> tuple[Workflow, dict[str, StageExecution]]:
    """a -> b -> d and a -> c -> d, with outputs on a, b and c."""
    a = StageExecution.create("t", "A", "a")
    b = StageExecution.create("t", "B", "b", requisite_stage_ref_ids={"a"})
    c = StageExecution.create("t", "C", "c", requisite_stage_ref_ids={"a"})
    d = StageExecution.create("t", "D", "d", context={"own": 1}, requisite_stage_ref_ids={"b", "c"})
    a.outputs = {"deploymentId": "from-a", "region": "eu", "only_a": True}
    b.outputs = {"deploymentId": "from-b"}
    c.outputs = {"region": "us"}
    wf = Workflow.create("app", "diamond", [a, b, c, d])
    return wf, {s.ref_id: s for s in wf.stages}


def test_a_missing_key_is_found_in_the_nearest_ancestor_output() -> None:
    wf, s = diamond()
    ctx = StageContext(s["d"], s["d"].context)

    assert ctx["own"] == 1
    assert ctx["deploymentId"] == "from-b"  # one hop away beats a two hops away
    assert ctx["region"] == "us"
    assert ctx["only_a"] is True
    assert "only_a" in ctx and "nowhere" not in ctx
    assert ctx.get("nowhere", "dflt") == "dflt"
    with pytest.raises(KeyError):
        ctx["nowhere"]
    del wf


def test_own_values_win_and_writes_go_to_the_own_context_only() -> None:
    wf, s = diamond()
    own = s["d"].context
    ctx = StageContext(s["d"], own)
    ctx["region"] = "local"

    assert ctx["region"] == "local" and own["region"] == "local"
    assert s["c"].outputs["region"] == "us"
    assert ctx.get_current_only("deploymentId") is None
    assert sorted(ctx) == ["own", "region"] and len(ctx) == 2
    del ctx["region"]
    assert ctx["region"] == "us"
    del wf


def test_get_all_lists_ancestor_values_nearest_first_and_merge_puts_own_on_top() -> None:
    wf, s = diamond()
    ctx = StageContext(s["d"], s["d"].context)

    assert ctx.get_all("deploymentId") == ["from-b", "from-a"]
    merged = ctx.merge_with_ancestors()
    assert merged == {"deploymentId": "from-b", "region": "us", "only_a": True, "own": 1}
    assert ctx.to_dict() == {"own": 1}
    assert create_merged_context(s["d"])["deploymentId"] == "from-b"
    del wf


def test_a_synthetic_stage_sees_its_parent_and_the_parents_ancestors() -> None:
    up = StageExecution.create("t", "Up", "up")
    up.outputs = {"artifact": "v1"}
    parent = StageExecution.create("t", "Parent", "parent", requisite_stage_ref_ids={"up"})
    parent.outputs = {"plan": "p"}
    child = StageExecution.create_synthetic("t", "Before", parent, SyntheticStageOwner.STAGE_BEFORE)
    wf = Workflow(application="app", name="w", stages=[up, parent, child])

    ctx = StageContext(child, child.context)

    assert ctx["plan"] == "p" and ctx["artifact"] == "v1"
    del wf


def test_a_stage_without_a_workflow_has_only_its_own_context() -> None:
    stage = StageExecution.create("t", "Alone", "alone", context={"k": "v"})
    ctx = StageContext(stage, stage.context)

    assert ctx["k"] == "v" and ctx.get_all("k") == [] and "x" not in ctx
    assert ctx.stage is stage
