"""Ordering and validation of the stage graph (also at its stabilize path ``dag.topological``).

An edge runs from stage ``u`` to stage ``d`` when ``u.ref_id in d.requisite_stage_ref_ids``.
Synthetic stages (``parent_stage_id`` set) are nodes like any other: their requisites
name sibling synthetic stages by ref_id.  All functions are pure and deterministic:
whenever several stages are ready at once, they come out in their order in the input list.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

StageFilter = Callable[["StageExecution"], bool]


class InvalidStageGraphError(ValueError):
    """A structurally invalid stage graph.

    The message starts with ``duplicate_ref:``, ``self_edge:`` or ``unknown_ref:`` and names
    the offending stage ref_id(s).
    """


class CircularDependencyError(ValueError):
    """The stage graph contains a cycle.

    ``cycle`` lists the ref ids of one cycle in execution order (first repeated at the end);
    ``stages`` holds every stage that could not be ordered (the cycle and what depends on it).
    """

    def __init__(
        self,
        message: str,
        stages: list[StageExecution] | None = None,
        cycle: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.stages: list[StageExecution] = list(stages or [])
        self.cycle: list[str] = list(cycle or [])


def _select(stages: Sequence[StageExecution], stage_filter: StageFilter | None) -> list[StageExecution]:
    return [s for s in stages if stage_filter is None or stage_filter(s)]


def _check_edges(nodes: list[StageExecution]) -> None:
    """Raise CircularDependencyError for a stage that requires itself or a ref id no stage of
    ``nodes`` has: neither can ever be ordered (its requisites are never all satisfied)."""
    refs = {stage.ref_id for stage in nodes}
    for stage in nodes:
        if stage.ref_id in stage.requisite_stage_ref_ids:
            raise CircularDependencyError(
                f"circular_dependency: stage '{stage.ref_id}' requires itself",
                stages=[stage], cycle=[stage.ref_id, stage.ref_id])
    for stage in nodes:
        missing = sorted(set(stage.requisite_stage_ref_ids) - refs)
        if missing:
            names = ", ".join(f"'{r}'" for r in missing)
            raise CircularDependencyError(
                f"circular_dependency: stage '{stage.ref_id}' requires {names}, which no stage "
                "being ordered has, so it can never start", stages=[stage])


def _predecessors(nodes: list[StageExecution]) -> list[list[int]]:
    """For each node index, the indexes of the nodes it requires (``_check_edges`` has made
    sure every ref exists and none is a self edge)."""
    by_ref: dict[str, list[int]] = {}
    for index, stage in enumerate(nodes):
        by_ref.setdefault(stage.ref_id, []).append(index)
    preds: list[list[int]] = []
    for index, stage in enumerate(nodes):
        found: list[int] = []
        for ref in sorted(stage.requisite_stage_ref_ids):
            found.extend(i for i in by_ref.get(ref, []) if i != index)
        preds.append(found)
    return preds


def _kahn_layers(nodes: list[StageExecution]) -> tuple[list[list[int]], list[int]]:
    """Return (layers of node indexes, indexes left over because of a cycle)."""
    preds = _predecessors(nodes)
    succs: list[list[int]] = [[] for _ in nodes]
    indegree = [len(p) for p in preds]
    for index, plist in enumerate(preds):
        for p in plist:
            succs[p].append(index)
    layer = [i for i, d in enumerate(indegree) if d == 0]
    layers: list[list[int]] = []
    placed = 0
    while layer:
        layers.append(layer)
        placed += len(layer)
        nxt: list[int] = []
        for i in layer:
            for d in succs[i]:
                indegree[d] -= 1
                if indegree[d] == 0:
                    nxt.append(d)
        layer = sorted(nxt)
    left = [i for i, d in enumerate(indegree) if d > 0] if placed < len(nodes) else []
    return layers, left


def _raise_cycle(nodes: list[StageExecution], left: list[int]) -> None:
    preds = _predecessors(nodes)
    remaining = set(left)
    # Every remaining node has a remaining predecessor; walking them must revisit a node.
    path: list[int] = []
    position: dict[int, int] = {}
    current = left[0]
    while current not in position:
        position[current] = len(path)
        path.append(current)
        current = next(p for p in preds[current] if p in remaining)
    loop = path[position[current] :]
    loop.reverse()  # predecessor walk -> execution order
    refs = [nodes[i].ref_id for i in loop]
    refs.append(refs[0])
    blocked = sorted({nodes[i].ref_id for i in left} - set(refs))
    message = "circular_dependency: stages form a cycle: " + " -> ".join(f"'{r}'" for r in refs)
    if blocked:
        message += "; also blocked behind it: " + ", ".join(f"'{r}'" for r in blocked)
    raise CircularDependencyError(message, stages=[nodes[i] for i in left], cycle=refs)


def topological_sort(
    stages: Sequence[StageExecution],
    stage_filter: StageFilter | None = None,
) -> list[StageExecution]:
    """Order ``stages`` so that every stage follows the stages it requires (Kahn's algorithm).

    Among stages that become ready together, input-list order is kept, so the result is
    deterministic.  ``stage_filter`` restricts the graph (default: every stage given,
    synthetic ones included); every requisite must name a stage of the restricted graph.

    Raises:
        CircularDependencyError: some stages cannot be ordered: a cycle (the message names
            it), a stage that requires itself, or a requisite ref id that names no stage of
            the graph (as stabilize's sort, which can make no progress past such a stage).
    """
    nodes = _select(stages, stage_filter)
    _check_edges(nodes)
    preds = _predecessors(nodes)
    succs: list[list[int]] = [[] for _ in nodes]
    indegree = [len(p) for p in preds]
    for index, plist in enumerate(preds):
        for p in plist:
            succs[p].append(index)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for d in succs[i]:
            indegree[d] -= 1
            if indegree[d] == 0:
                heapq.heappush(ready, d)
    if len(order) < len(nodes):
        _raise_cycle(nodes, [i for i, d in enumerate(indegree) if d > 0])
    return [nodes[i] for i in order]


def get_execution_layers(
    stages: Sequence[StageExecution],
    stage_filter: StageFilter | None = None,
) -> list[list[StageExecution]]:
    """Group stages into layers: layer 0 has no requisites, layer n depends only on earlier layers.

    Stages inside a layer keep input-list order.  Raises CircularDependencyError as
    :func:`topological_sort` does.
    """
    nodes = _select(stages, stage_filter)
    _check_edges(nodes)
    layers, left = _kahn_layers(nodes)
    if left:
        _raise_cycle(nodes, left)
    return [[nodes[i] for i in layer] for layer in layers]


def validate_stage_graph(stages: Sequence[StageExecution]) -> None:
    """Check a stage graph before it is submitted; return None if it is sound.

    Checks, in this order, over all stages (synthetic included):

    1. ``duplicate_ref:`` -- two stages share a ref_id;
    2. ``self_edge:`` -- a stage requires itself;
    3. ``unknown_ref:`` -- a stage requires a ref_id no stage has;
    4. cycles -- :class:`CircularDependencyError` naming the ref ids in the cycle.

    Raises:
        InvalidStageGraphError: for 1-3.
        CircularDependencyError: for 4.
    """
    seen: set[str] = set()
    for stage in stages:
        if stage.ref_id in seen:
            raise InvalidStageGraphError(
                f"duplicate_ref: ref_id '{stage.ref_id}' is used by more than one stage"
            )
        seen.add(stage.ref_id)
    for stage in stages:
        if stage.ref_id in stage.requisite_stage_ref_ids:
            raise InvalidStageGraphError(f"self_edge: stage '{stage.ref_id}' requires itself")
    for stage in stages:
        unknown = sorted(set(stage.requisite_stage_ref_ids) - seen)
        if len(unknown) == 1:
            raise InvalidStageGraphError(
                f"unknown_ref: stage '{stage.ref_id}' requires unknown stage '{unknown[0]}'"
            )
        if unknown:
            names = ", ".join(f"'{r}'" for r in unknown)
            raise InvalidStageGraphError(
                f"unknown_ref: stage '{stage.ref_id}' requires unknown stages {names}"
            )
    topological_sort(stages)


def validate_dag(stages: Sequence[StageExecution]) -> bool:
    """Return True if ``stages`` form a valid DAG; otherwise raise as :func:`validate_stage_graph`."""
    validate_stage_graph(stages)
    return True


def find_initial_stages(stages: Sequence[StageExecution]) -> list[StageExecution]:
    """Top-level (non-synthetic) stages with no requisites, in input order."""
    return [s for s in stages if not s.requisite_stage_ref_ids and s.parent_stage_id is None]


def find_terminal_stages(stages: Sequence[StageExecution]) -> list[StageExecution]:
    """Top-level (non-synthetic) stages that no stage requires, in input order."""
    required: set[str] = set()
    for stage in stages:
        required.update(stage.requisite_stage_ref_ids)
    return [s for s in stages if s.parent_stage_id is None and s.ref_id not in required]


def is_top_level(stage: StageExecution) -> bool:
    """Stage filter selecting non-synthetic stages."""
    return stage.parent_stage_id is None


__all__ = [
    "CircularDependencyError",
    "InvalidStageGraphError",
    "find_initial_stages",
    "find_terminal_stages",
    "get_execution_layers",
    "is_top_level",
    "topological_sort",
    "validate_dag",
    "validate_stage_graph",
]
