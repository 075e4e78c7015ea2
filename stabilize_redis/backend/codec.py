"""Models <-> msgpack blobs, and the check that state is plain data.

A workflow is stored as one hash: ``meta`` (the workflow without its stages), ``stages`` (the
stage ids in insertion order) and one ``s:<stage_id>`` blob per stage holding the stage, its
tasks and its place in the graph (``StageRecord``). Context and outputs must be msgpack/JSON
representable: anything else is rejected with an error naming the key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution, SyntheticStageOwner
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import PausedDetails, Trigger, Workflow, WorkflowType


class StateEncodingError(ValueError):
    """Context or outputs hold a value that is not plain data; the message names the key path."""


_SCALARS = (str, int, float, bool, type(None), bytes)


def ensure_plain(value: Any, path: str) -> None:
    """Raise StateEncodingError unless ``value`` is msgpack/JSON-representable plain data."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateEncodingError(f"{path}: key {key!r} is a {type(key).__name__}; keys must be strings")
            ensure_plain(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            ensure_plain(item, f"{path}[{i}]")
        return
    raise StateEncodingError(
        f"{path}: value of type {type(value).__name__} is not msgpack/JSON-representable"
    )


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


# -- tasks -------------------------------------------------------------------------------------


def task_to_dict(task: TaskExecution) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.name,
        "impl": task.implementing_class,
        "status": task.status.name,
        "start": task.start_time,
        "end": task.end_time,
        "ss": task.stage_start,
        "se": task.stage_end,
        "ls": task.loop_start,
        "le": task.loop_end,
        "exc": task.task_exception_details,
        "v": task.version,
    }


def task_from_dict(d: dict[str, Any]) -> TaskExecution:
    task = TaskExecution(
        id=d["id"],
        name=d["name"],
        implementing_class=d["impl"],
        status=WorkflowStatus[d["status"]],
        start_time=d["start"],
        end_time=d["end"],
        stage_start=d["ss"],
        stage_end=d["se"],
        loop_start=d["ls"],
        loop_end=d["le"],
        task_exception_details=d["exc"],
    )
    task.version = d["v"]
    return task


# -- stages ------------------------------------------------------------------------------------


@dataclass
class StageRecord:
    """A stage as stored: the model plus its place in the graph and its stored version.

    ``up``/``down`` are the stage ids of direct upstream/downstream stages (by requisite ref ids
    among siblings), ``children`` the ids of its synthetic stages, ``rank`` its position in a
    topological order of the whole workflow, ``gates`` for each downstream id the number of
    upstream completions that release its start, ``anc`` its ancestors' outputs in rank-tagged form
    (see ``dag.lineage``), filled when the stage starts.
    """

    stage: StageExecution
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    rank: int = 0
    anc: dict[str, list[list[Any]]] = field(default_factory=dict)
    gates: dict[str, int] = field(default_factory=dict)
    version: int = 0

    @property
    def id(self) -> str:
        return self.stage.id


def stage_to_dict(rec: StageRecord) -> dict[str, Any]:
    s = rec.stage
    return {
        "id": s.id,
        "ref_id": s.ref_id,
        "type": s.type,
        "name": s.name,
        "status": s.status.name,
        "context": s.context,
        "outputs": s.outputs,
        "tasks": [task_to_dict(t) for t in s.tasks],
        "req": sorted(s.requisite_stage_ref_ids),
        "parent": s.parent_stage_id,
        "owner": s.synthetic_stage_owner.name if s.synthetic_stage_owner else None,
        "start": s.start_time,
        "end": s.end_time,
        "expiry": s.start_time_expiry,
        "scheduled": s.scheduled_time,
        "cleanup": s.cleanup_on_failure,
        "finalizers": list(s.finalizer_names),
        "join": s.join_type.name,
        "join_n": s.join_threshold,
        "split": s.split_type.name,
        "split_cond": s.split_conditions,
        "mi": s.mi_config.to_dict() if s.mi_config else None,
        "choice": s.deferred_choice_group,
        "milestone": s.milestone_ref_id,
        "milestone_status": s.milestone_status,
        "mutex": s.mutex_key,
        "region": s.cancel_region,
        "up": rec.up,
        "down": rec.down,
        "children": rec.children,
        "rank": rec.rank,
        "anc": rec.anc,
        "gates": rec.gates,
    }


def stage_from_dict(d: dict[str, Any], version: int = 0) -> StageRecord:
    stage = StageExecution(
        id=d["id"],
        ref_id=d["ref_id"],
        type=d["type"],
        name=d["name"],
        status=WorkflowStatus[d["status"]],
        context=d["context"],
        outputs=d["outputs"],
        tasks=[task_from_dict(t) for t in d["tasks"]],
        requisite_stage_ref_ids=set(d["req"]),
        parent_stage_id=d["parent"],
        synthetic_stage_owner=SyntheticStageOwner[d["owner"]] if d["owner"] else None,
        start_time=d["start"],
        end_time=d["end"],
        start_time_expiry=d["expiry"],
        scheduled_time=d["scheduled"],
        cleanup_on_failure=d["cleanup"],
        finalizer_names=d["finalizers"],
        join_type=JoinType[d["join"]],
        join_threshold=d["join_n"],
        split_type=SplitType[d["split"]],
        split_conditions=d["split_cond"],
        mi_config=MultiInstanceConfig.from_dict(d["mi"]) if d["mi"] else None,
        deferred_choice_group=d["choice"],
        milestone_ref_id=d["milestone"],
        milestone_status=d["milestone_status"],
        mutex_key=d["mutex"],
        cancel_region=d["region"],
    )
    stage.version = version
    for task in stage.tasks:
        task.set_stage_strong(stage)
    return StageRecord(stage, d["up"], d["down"], d["children"], d["rank"], d["anc"], d["gates"], version)


def encode_stage(rec: StageRecord) -> bytes:
    return pack(stage_to_dict(rec))


def decode_stage(blob: bytes, version: int = 0) -> StageRecord:
    return stage_from_dict(unpack(blob), version)


# -- workflow meta -------------------------------------------------------------------------------


META_EXTRAS = ("top", "initial")


def meta_to_dict(wf: Workflow, extras: dict[str, Any]) -> dict[str, Any]:
    """The meta dict of a workflow; ``extras`` carries the graph facts kept beside it
    (``top``: number of top-level stages, ``initial``: ids of the initial stages)."""
    paused = wf.paused
    return {**{k: extras[k] for k in META_EXTRAS},
        "id": wf.id,
        "type": wf.type.name,
        "application": wf.application,
        "name": wf.name,
        "status": wf.status.name,
        "context": wf.context,
        "trigger": wf.trigger.to_dict() if wf.trigger else None,
        "start": wf.start_time,
        "end": wf.end_time,
        "expiry": wf.start_time_expiry,
        "canceled": wf.is_canceled,
        "canceled_by": wf.canceled_by,
        "cancel_reason": wf.cancellation_reason,
        "paused": (
            {
                "paused_by": paused.paused_by,
                "pause_time": paused.pause_time,
                "resume_time": paused.resume_time,
                "paused_ms": paused.paused_ms,
            }
            if paused
            else None
        ),
        "pipeline_config_id": wf.pipeline_config_id,
        "limit_concurrent": wf.is_limit_concurrent,
        "max_concurrent": wf.max_concurrent_executions,
        "keep_waiting": wf.keep_waiting_pipelines,
        "origin": wf.origin,
    }


def meta_from_dict(d: dict[str, Any]) -> Workflow:
    """A Workflow with no stages, from its meta dict (the extras are not Workflow fields)."""
    wf = Workflow(
        id=d["id"],
        type=WorkflowType[d["type"]],
        application=d["application"],
        name=d["name"],
        status=WorkflowStatus[d["status"]],
        stages=[],
        context=d["context"],
        trigger=Trigger.from_dict(d["trigger"]) if d["trigger"] else Trigger(),
        start_time=d["start"],
        end_time=d["end"],
        start_time_expiry=d["expiry"],
        is_canceled=d["canceled"],
        canceled_by=d["canceled_by"],
        cancellation_reason=d["cancel_reason"],
        paused=PausedDetails(**d["paused"]) if d["paused"] else None,
        pipeline_config_id=d["pipeline_config_id"],
        is_limit_concurrent=d["limit_concurrent"],
        max_concurrent_executions=d["max_concurrent"],
        keep_waiting_pipelines=d["keep_waiting"],
        origin=d["origin"],
    )
    return wf
