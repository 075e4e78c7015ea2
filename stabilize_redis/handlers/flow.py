"""Routing decisions shared by the handlers that finish a stage (CompleteStage, SkipStage).

Pure: they add to a Transition, never touch Redis.
"""

from __future__ import annotations

import time
from typing import Any

from stabilize_redis.backend.codec import StageRecord, meta_from_dict
from stabilize_redis.backend.layout import meta_extras
from stabilize_redis.backend.redis_backend import Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.expressions import ExpressionError, evaluate_expression
from stabilize_redis.handlers.start_stage import claim_ready_stage, report_expression_failure
from stabilize_redis.models.stage import SplitType
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteWorkflow, SkipStage, StartStage
from stabilize_redis.tasks.registry import TaskRegistry


def join_counter(stage_id: str) -> str:
    return f"j:{stage_id}"


TOP_COUNTER = "top"

SPLIT_CONDITION_ERRORS = "splitConditionErrors"
"""Context key of an OR-splitting stage: {downstream ref id: error} for each split condition
that could not be evaluated (so that branch was not taken)."""


def activated_downstreams(rec: StageRecord, down_refs: dict[str, str]) -> set[str]:
    """Downstream stage ids an OR-split activates (all of them for an AND split).

    ``down_refs`` maps downstream stage id -> ref id. A condition that fails to evaluate does
    not activate its branch; its error is put in the splitting stage's context under
    SPLIT_CONDITION_ERRORS (the key is removed when every condition evaluated), where
    ``release_after_completion`` reports it. A downstream with no condition is always activated.
    """
    stage = rec.stage
    if stage.split_type != SplitType.OR or not stage.split_conditions:
        return set(rec.down)
    scope: dict[str, Any] = {**stage.context, **stage.outputs}
    active: set[str] = set()
    errors: dict[str, str] = {}
    for sid in rec.down:
        ref = down_refs.get(sid, "")
        expr = stage.split_conditions.get(ref)
        if expr is None:
            active.add(sid)
            continue
        try:
            if evaluate_expression(expr, scope):
                active.add(sid)
        except ExpressionError as e:
            errors[ref] = str(e)
    if errors:
        stage.context[SPLIT_CONDITION_ERRORS] = errors
    else:
        stage.context.pop(SPLIT_CONDITION_ERRORS, None)
    return active


def release_after_completion(t: Transition, snap: Snapshot, rec: StageRecord,
                             message_kw: dict[str, Any], active: set[str] | None = None,
                             registry: TaskRegistry | None = None) -> None:
    """A stage finished with a continuable status: count it toward each downstream's join
    (the last needed completion releases that StartStage) and toward the workflow's completion
    (the last top-level stage releases CompleteWorkflow). Downstreams an OR-split did not
    activate are skipped; each split condition that failed to evaluate (recorded by
    ``activated_downstreams``) is logged and gets an EXPRESSION_FAILED event.

    A downstream whose join needs only this completion (its only upstream, or a discriminator)
    and whose record the snapshot holds is started right here, in the same commit (with
    ``registry``), instead of through a StartStage message; its counter still counts.

    When the snapshot holds the top-level counter and this is the last top-level stage, every
    top-level stage has finished continuably, so the workflow SUCCEEDS in this same commit
    (guarded by the counter's value) instead of through a CompleteWorkflow message."""
    assert snap.meta is not None
    if active is not None:
        for ref, error in rec.stage.context.get(SPLIT_CONDITION_ERRORS, {}).items():
            report_expression_failure(t, rec, "splitConditions", error,
                                      f"branch to {ref!r} not taken", downstream_ref_id=ref)
    for did in rec.down:
        if active is not None and did not in active:
            t.push(SkipStage(stage_id=did, **message_kw))
            continue
        gate = rec.gates.get(did, 1)
        down = snap.stages.get(did)
        if registry is not None and gate == 1 and down is not None and _startable(snap, down):
            t.count(join_counter(did), gate, None)
            claim_ready_stage(registry, t, down, [rec], message_kw)
            continue
        t.count(join_counter(did), gate, StartStage(stage_id=did, **message_kw))
    if rec.stage.parent_stage_id is not None:
        return
    top = int(snap.meta["top"])
    done = snap.counters.get(TOP_COUNTER)
    if done is not None and done + 1 == top and snap.meta["status"] == WorkflowStatus.RUNNING.name \
            and not snap.meta["canceled"]:
        t.expect_counter(TOP_COUNTER, done)
        t.count(TOP_COUNTER, top, None)
        succeed_workflow(t, snap)
        return
    t.count(TOP_COUNTER, top, CompleteWorkflow(**message_kw))


def _startable(snap: Snapshot, down: StageRecord) -> bool:
    assert snap.meta is not None
    return (down.stage.status == WorkflowStatus.NOT_STARTED and not snap.meta["canceled"]
            and snap.meta["status"] == WorkflowStatus.RUNNING.name)


def succeed_workflow(t: Transition, snap: Snapshot) -> None:
    """The workflow SUCCEEDED: status, end time and the completion event, in ``t``."""
    assert snap.meta is not None
    wf = meta_from_dict(snap.meta)
    wf.status = WorkflowStatus.SUCCEEDED
    wf.end_time = int(time.time() * 1000)
    t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
    t.event("workflow.completed", "workflow", wf.id, {
        "status": wf.status.name, "end_time": wf.end_time,
        "duration_ms": wf.end_time - (wf.start_time or wf.end_time)})
