"""The reset scope of a jump is fan-in aware: a stage joins it only when all its upstreams have."""

from __future__ import annotations

from stabilize_redis import StageExecution, Workflow
from stabilize_redis.dag.traversal import (
    get_downstream_stages,
    get_resettable_downstream_stages,
    get_skipped_stages,
)


def graph(**reqs: str) -> Workflow:
    """graph(b="a", c="a b") - each stage named with its space-separated requisites."""
    stages = [StageExecution(ref_id=ref, requisite_stage_ref_ids=set(r.split())) for ref, r in reqs.items()]
    return Workflow.create(application="t", name="t", stages=stages)


def refs(stages: list[StageExecution]) -> set[str]:
    return {s.ref_id for s in stages}


def test_a_chain_is_reset_entirely() -> None:
    wf = graph(a="", b="a", c="b")
    assert refs(get_resettable_downstream_stages(wf, "a")) == {"b", "c"}


def test_a_fan_in_waiting_on_a_branch_outside_the_scope_is_not_reset_nor_what_follows() -> None:
    wf = graph(a="", x="", b="a", c="x", join="b c", after="join")
    assert refs(get_resettable_downstream_stages(wf, "a")) == {"b"}
    assert refs(get_downstream_stages(wf, "a")) == {"b", "join", "after"}


def test_a_diamond_under_the_target_is_reset_whole() -> None:
    wf = graph(a="", b="a", c="a", d="b c")
    assert refs(get_resettable_downstream_stages(wf, "a")) == {"b", "c", "d"}


def test_a_forward_jump_skips_only_what_the_source_alone_leads_to() -> None:
    wf = graph(a="", x="", b="a", c="x", join="b c", target="join")
    by = {s.ref_id: s for s in wf.stages}
    assert refs(get_skipped_stages(wf, by["a"], by["target"])) == {"b"}
    chain = graph(a="", b="a", c="b")
    by = {s.ref_id: s for s in chain.stages}
    assert refs(get_skipped_stages(chain, by["a"], by["c"])) == {"b"}
