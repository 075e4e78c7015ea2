"""What every decision shares: the clock, the targets a message names, a partial Workflow of
what was read, event data. Pure."""

from __future__ import annotations

import time
from typing import Any

from stabilize_redis.decisions.codec import StageRecord, meta_from_dict
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import Workflow


def now_ms() -> int:
    return int(time.time() * 1000)


class UnknownTarget(Exception):
    """Raised by a decision: the message names a workflow, stage or task that does not exist.
    The text names it: 'workflow W', 'stage S of workflow W' or 'task T of stage S of workflow W'."""


def known_workflow(snap: Snapshot) -> dict[str, Any]:
    """The workflow meta read into ``snap``; UnknownTarget if the workflow does not exist."""
    if snap.meta is None:
        raise UnknownTarget(f"workflow {snap.workflow_id} does not exist")
    return snap.meta


def known_stage(snap: Snapshot, stage_id: str) -> StageRecord:
    """The record of ``stage_id`` read into ``snap``; UnknownTarget if the workflow or the stage
    does not exist (the snapshot must have been read with ``stage_id``)."""
    known_workflow(snap)
    rec = snap.stages.get(stage_id)
    if rec is None:
        raise UnknownTarget(f"stage {stage_id} of workflow {snap.workflow_id} does not exist")
    return rec


def known_task(snap: Snapshot, rec: StageRecord, task_id: str) -> TaskExecution:
    """The task ``task_id`` of the stage ``rec``; UnknownTarget if the stage has no such task."""
    task = next((t for t in rec.stage.tasks if t.id == task_id), None)
    if task is None:
        raise UnknownTarget(f"task {task_id} of stage {rec.id} of workflow {snap.workflow_id} does not exist")
    return task


def attach(snap: Snapshot) -> Workflow:
    """A partial Workflow holding the stages read (strongly linked), for decisions and tasks."""
    assert snap.meta is not None
    wf = meta_from_dict(snap.meta)
    wf.stages = [rec.stage for rec in snap.stages.values()]
    for stage in wf.stages:
        stage.set_execution_strong(wf)
    return wf



def stage_event_data(rec: StageRecord, **extra: Any) -> dict[str, Any]:
    """An event's data naming a stage: its ref id (and parent, for a synthetic stage) and
    ``extra``. Nothing the stage record holds (type, name, times, context, outputs) is copied."""
    s = rec.stage
    data: dict[str, Any] = {"ref_id": s.ref_id}
    if s.parent_stage_id is not None:
        data["parent_stage_id"] = s.parent_stage_id
    data.update(extra)
    return data


PENDING_JUMP = "_jump_pending"
"""Stage context key, from the commit that ends a task REDIRECT until the JumpToStage it sent
is decided: {target, context, outputs, attempt} - what recovery needs to send that JumpToStage
again if it was lost (``durability.recovery_plan``)."""


JUMP_BYPASS = "_jump_bypass"
"""Stage context key (True): the stage is the target of a committed jump and waits for the
StartStage that commit sent. That StartStage (or any other, or recovery's) starts it without
its join's readiness check - a jump bypasses the target's join - but past its mutex, milestone
and deferred-choice gates. Removed when the stage starts or is reset."""


BRANCH_NOT_TAKEN = "_branch_not_taken"
"""Stage context key: the stage was skipped because no live path leads to it - an OR-split did
not take it, or every upstream of it was itself not taken (dead-path elimination, as stabilize
does since its ticket #33). Its downstreams whose every upstream is not taken are skipped in
turn; a stage with one live upstream runs. Cleared when the stage starts or is reset."""
