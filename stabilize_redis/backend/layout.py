"""How a whole workflow maps onto its hash, and back.

At submit the graph is laid out once: each stage record gets its direct upstream and downstream
stage ids, the gate of each downstream (how many upstream completions release its start), its
synthetic children and its topological rank. After that every transition reads only the stages
it touches.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.codec import (
    StageRecord,
    decode_stage,
    encode_stage,
    meta_from_dict,
    meta_to_dict,
    pack,
    unpack,
)
from stabilize_redis.dag.topological import topological_sort
from stabilize_redis.keys import (
    META_FIELD,
    STAGE_IDS_FIELD,
    STATUS_FIELD,
    downstreams_field,
    stage_field,
    upstreams_field,
)
from stabilize_redis.models.stage import JoinType, StageExecution
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.validation import validate_storable


def join_gate(stage: StageExecution, upstream_count: int) -> int:
    """Number of upstream completions that release a stage's start."""
    if upstream_count == 0:
        return 0
    if stage.join_type == JoinType.DISCRIMINATOR:
        return 1
    if stage.join_type == JoinType.N_OF_M and stage.join_threshold > 0:
        return min(stage.join_threshold, upstream_count)
    return upstream_count


def validate_plain_data(wf: Workflow) -> None:
    """Reject values that cannot be stored (WorkflowValidationError naming the stage and key
    path); see ``validation.validate_storable``."""
    validate_storable(wf)


def _siblings_key(stage: StageExecution) -> tuple[str | None, str]:
    return (stage.parent_stage_id, stage.ref_id)


def lay_out(wf: Workflow) -> dict[str, bytes]:
    """The hash fields of a new workflow (values without versions)."""
    validate_plain_data(wf)
    by_ref = {_siblings_key(s): s for s in wf.stages}
    records = {s.id: StageRecord(s) for s in wf.stages}
    for rank, stage in enumerate(topological_sort(wf.stages)):
        records[stage.id].rank = rank
    for stage in wf.stages:
        rec = records[stage.id]
        for ref in sorted(stage.requisite_stage_ref_ids):
            up = by_ref.get((stage.parent_stage_id, ref))
            if up is not None:
                rec.up.append(up.id)
                records[up.id].down.append(stage.id)
        if stage.parent_stage_id is not None and stage.parent_stage_id in records:
            records[stage.parent_stage_id].children.append(stage.id)
    top = [s for s in wf.stages if s.parent_stage_id is None]
    extras: dict[str, Any] = {
        "top": len(top),
        "initial": [s.id for s in top if not records[s.id].up],
    }
    fields: dict[str, bytes] = {
        META_FIELD: pack(meta_to_dict(wf, extras)),
        STATUS_FIELD: wf.status.name.encode(),
        STAGE_IDS_FIELD: pack([s.id for s in wf.stages]),
    }
    for rec in records.values():
        rec.gates = {did: join_gate(records[did].stage, len(records[did].up)) for did in rec.down}
        fields[stage_field(rec.id)] = encode_stage(rec)
        if rec.up:
            fields[upstreams_field(rec.id)] = " ".join(rec.up).encode()
        if rec.down:
            fields[downstreams_field(rec.id)] = " ".join(rec.down).encode()
    return fields


def workflow_from_hash(raw: dict[bytes, bytes]) -> Workflow | None:
    """The full Workflow (stages in insertion order, strongly linked) from its hash."""
    if not raw or META_FIELD.encode() not in raw:
        return None
    wf = meta_from_dict(unpack(raw[META_FIELD.encode()]))
    ids = unpack(raw[STAGE_IDS_FIELD.encode()]) if STAGE_IDS_FIELD.encode() in raw else []
    stages: list[StageExecution] = []
    for sid in ids:
        blob = raw.get(stage_field(sid).encode())
        if blob is None:
            continue
        version = int(raw.get(f"v:{stage_field(sid)}".encode(), b"0"))
        stages.append(decode_stage(blob, version).stage)
    wf.stages = stages
    for stage in stages:
        stage.set_execution_strong(wf)
    return wf


def meta_extras(meta: dict[str, Any]) -> dict[str, Any]:
    return {"top": meta["top"], "initial": meta["initial"]}
