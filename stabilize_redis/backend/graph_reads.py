"""The reads the stage-write plans start from (``decisions.stage_plans``): the graph fields of a
workflow, a stage's family, the records a removal touches. One or two round trips each."""

from __future__ import annotations

from collections.abc import Iterable

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import StageRecord, unpack
from stabilize_redis.decisions.stage_plans import ADDED_COUNTER, GraphRead, Removal, sibling_hints
from stabilize_redis.keys import (
    META_FIELD,
    SETTLED_COUNTER,
    STAGE_IDS_FIELD,
    counter_field,
    threshold_field,
    version_field,
)
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.validation import WorkflowValidationError


def read_graph(backend: RedisBackend, workflow_id: str) -> GraphRead | None:
    """One HMGET of the fields ``GraphRead`` holds; None when the workflow is not in Redis."""
    values = backend.client.hmget(backend.part(workflow_id).workflow(workflow_id), [
        META_FIELD, version_field(META_FIELD), STAGE_IDS_FIELD, version_field(STAGE_IDS_FIELD),
        counter_field(ADDED_COUNTER), threshold_field(SETTLED_COUNTER)])
    if values[0] is None:
        return None
    return GraphRead(unpack(values[0]), int(values[1] or 0), list(unpack(values[2])) if values[2] else [],
                     int(values[3] or 0), int(values[4] or 0), int(values[5] or 0))


def resolve_family(backend: RedisBackend, workflow_id: str, stage: StageExecution,
                   graph: GraphRead) -> tuple[list[StageRecord], StageRecord | None]:
    """The stored upstream records of a stage about to be added (by its requisite refs among
    its siblings) and its parent's record. WorkflowValidationError for a self edge, an unknown
    requisite or parent, or a sibling that already has the stage's ref id."""
    where = f"stage {stage.ref_id!r}"
    if stage.ref_id in stage.requisite_stage_ref_ids:
        raise WorkflowValidationError(f"{where}: requisite_stage_ref_ids: the stage requires itself")
    hints = sibling_hints(stage)
    known = set(graph.ids)
    wanted = [i for ref in stage.requisite_stage_ref_ids for i in hints.get(ref, []) if i in known]
    wanted += [i for i in hints.get(stage.ref_id, []) if i in known]
    if stage.parent_stage_id is not None:
        wanted.append(stage.parent_stage_id)
    records = backend.read(workflow_id, wanted).stages if wanted else {}

    def siblings(recs: Iterable[StageRecord]) -> dict[str, StageRecord]:
        return {r.stage.ref_id: r for r in recs if r.stage.parent_stage_id == stage.parent_stage_id
                and r.id != stage.id}

    by_ref = siblings(records.values())
    if any(ref not in by_ref for ref in stage.requisite_stage_ref_ids):
        records = backend.read(workflow_id, graph.ids).stages
        by_ref = siblings(records.values())
    if stage.ref_id in by_ref:
        raise WorkflowValidationError(f"{where}: ref_id: duplicate_ref: another stage of workflow "
                                      f"{workflow_id} already has ref_id {stage.ref_id!r}")
    missing = sorted(ref for ref in stage.requisite_stage_ref_ids if ref not in by_ref)
    if missing:
        raise WorkflowValidationError(f"{where}: requisite_stage_ref_ids: unknown stage "
                                      + ", ".join(repr(m) for m in missing))
    parent = records.get(stage.parent_stage_id) if stage.parent_stage_id is not None else None
    if stage.parent_stage_id is not None and parent is None:
        raise WorkflowValidationError(f"{where}: parent_stage_id: stage {stage.parent_stage_id!r} "
                                      f"is not a stage of workflow {workflow_id}")
    ups = sorted((by_ref[ref] for ref in stage.requisite_stage_ref_ids), key=lambda r: r.id)
    return ups, parent


def read_removal(backend: RedisBackend, workflow_id: str, stage_id: str) -> Removal | None:
    """The stage, its synthetic descendants, their neighbours and the downstreams' other
    upstreams (reads per level of the graph around the stage); None when not stored."""
    out = Removal()
    level = [stage_id]
    while level:
        snap = backend.read(workflow_id, level)
        found = [snap.stages[s] for s in level if s in snap.stages]
        if stage_id not in out.removed and not found:
            return None
        out.removed.update({r.id: r for r in found})
        level = [c for r in found for c in r.children if c not in out.removed]
    around = {n for r in out.removed.values() for n in (*r.up, *r.down)}
    top = out.removed[stage_id]
    if top.stage.parent_stage_id is not None:
        around.add(top.stage.parent_stage_id)
    around -= set(out.removed)
    snap = backend.read(workflow_id, sorted(around))
    out.records.update(snap.stages)
    downs = [r for r in snap.stages.values() if set(r.up) & set(out.removed)]
    second = {u for d in downs for u in d.up} - set(out.records) - set(out.removed)
    if second:
        out.records.update(backend.read(workflow_id, sorted(second)).stages)
    return out


def read_descendants(backend: RedisBackend, workflow_id: str, parents: Iterable[StageRecord]) -> dict[str, StageRecord]:
    """The synthetic descendants of ``parents`` by id, read level by level (one round trip per
    level, none without children): what a reset of the parents takes with it."""
    found: dict[str, StageRecord] = {}
    level = [p for p in parents if p.children]
    while level:
        read = backend.read(workflow_id, [c for p in level for c in p.children]).stages
        found.update(read)
        level = [k for k in read.values() if k.children]
    return found
