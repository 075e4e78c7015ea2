"""``lua/read_region.lua`` walks the stored graph by the same rules ``dag.traversal`` states on a
whole Workflow: checked on seeded random DAGs, every (source, target) pair, real Redis and the
embedded default."""

from __future__ import annotations

import random

import pytest

from stabilize_redis import connect
from stabilize_redis.dag.traversal import (
    get_downstream_stages,
    get_resettable_downstream_stages,
    get_skipped_stages,
)
from tests.integration.support import make_stage, make_workflow

Target = tuple[str | None, str]


def random_dag(rng: random.Random, size: int):  # type: ignore[no-untyped-def]
    stages = []
    for i in range(size):
        ups = {f"s{j}" for j in range(i) if rng.random() < 0.3}
        stages.append(make_stage(f"s{i}", "t", sorted(ups)))
    return make_workflow(*stages)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_region_script_follows_the_traversal_rules(target: Target, seed: int) -> None:
    rng = random.Random(seed)
    client = connect(*target)
    wf = random_dag(rng, 9)
    client.store.store(wf)
    by_ref = {s.ref_id: s for s in wf.stages}
    for source in wf.stages:
        for tgt in wf.stages:
            region = client.backend.read_region(wf.id, source.id, tgt.ref_id, by_ref=True)
            assert region.target_id == tgt.id
            scope = {s.ref_id for s in get_resettable_downstream_stages(wf, tgt.ref_id)} | {tgt.ref_id}
            assert {by_id_ref(wf, i) for i in region.scope} == scope
            reachable = {s.ref_id for s in get_downstream_stages(wf, tgt.ref_id)} | {tgt.ref_id}
            assert region.backward == (source.ref_id in reachable)
            skipped = set() if region.backward else {s.ref_id for s in get_skipped_stages(wf, source, tgt)}
            assert {by_id_ref(wf, i) for i in region.skips} == skipped
            changed = scope | skipped | {source.ref_id}
            border = {d.ref_id for d in wf.stages if d.requisite_stage_ref_ids & changed}
            ups = {u for r in changed | border for u in by_ref[r].requisite_stage_ref_ids}
            assert {by_id_ref(wf, i) for i in region.stages} == changed | border | ups


def test_a_missing_target_reads_only_the_source(target: Target) -> None:
    client = connect(*target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]))
    client.store.store(wf)
    a = wf.stage_by_ref_id("a")
    assert a is not None
    region = client.backend.read_region(wf.id, a.id, "nowhere", by_ref=True)
    assert region.target_id is None and region.scope == [] and region.skips == []
    assert a.id in region.stages


def by_id_ref(wf, stage_id: str) -> str:  # type: ignore[no-untyped-def]
    return next(s.ref_id for s in wf.stages if s.id == stage_id)
