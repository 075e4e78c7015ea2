"""The graph walks of a jump, over a whole Workflow (stabilize's ``jump_to_stage.traversal``).

The engine itself walks the stored graph in ``lua/read_region.lua`` with the same rules, reading
only the region; these functions state the rules on a Workflow, for callers and tests. Stages
are related by ``requisite_stage_ref_ids`` among top-level stages. Pure; results in workflow
order.
"""

from __future__ import annotations

from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.workflow import Workflow


def _top(execution: Workflow) -> list[StageExecution]:
    return [s for s in execution.stages if s.parent_stage_id is None]


def _in_order(execution: Workflow, refs: set[str]) -> list[StageExecution]:
    return [s for s in _top(execution) if s.ref_id in refs]


def get_downstream_stages(execution: Workflow, target_ref_id: str) -> list[StageExecution]:
    """Every stage that depends on ``target_ref_id``, directly or transitively."""
    found: set[str] = set()
    frontier = [target_ref_id]
    stages = _top(execution)
    while frontier:
        ref = frontier.pop()
        for s in stages:
            if ref in s.requisite_stage_ref_ids and s.ref_id not in found:
                found.add(s.ref_id)
                frontier.append(s.ref_id)
    found.discard(target_ref_id)
    return _in_order(execution, found)


def get_resettable_downstream_stages(execution: Workflow, ref_id: str) -> list[StageExecution]:
    """The stages a reset of ``ref_id`` takes with it: those every one of whose upstreams is
    ``ref_id`` or another such stage (a fan-in that also waits on a stage outside is not, nor is
    anything after it)."""
    scope = {ref_id}
    stages = _top(execution)
    grew = True
    while grew:
        grew = False
        for s in stages:
            reqs = s.requisite_stage_ref_ids
            if s.ref_id not in scope and reqs and reqs <= scope:
                scope.add(s.ref_id)
                grew = True
    scope.discard(ref_id)
    return _in_order(execution, scope)


def get_skippable_downstream_stages(execution: Workflow, ref_id: str) -> list[StageExecution]:
    """The stages only ``ref_id`` leads to (same rule as ``get_resettable_downstream_stages``)."""
    return get_resettable_downstream_stages(execution, ref_id)


def get_skipped_stages(execution: Workflow, source_stage: StageExecution,
                       target_stage: StageExecution) -> list[StageExecution]:
    """The stages a forward jump from ``source_stage`` to ``target_stage`` skips: those only the
    source leads to, minus the target and everything downstream of it."""
    chain = {target_stage.ref_id} | {s.ref_id for s in get_downstream_stages(execution, target_stage.ref_id)}
    return [s for s in get_skippable_downstream_stages(execution, source_stage.ref_id) if s.ref_id not in chain]


__all__ = ["get_downstream_stages", "get_resettable_downstream_stages", "get_skippable_downstream_stages",
           "get_skipped_stages"]
