"""Routing decisions shared by the handlers that finish a stage (CompleteStage, SkipStage,
CancelStage, and RunTask/CompleteTask through ``finish_stage``).

Pure: they add to a Transition, never touch Redis. Joins and the workflow's completion are
counters whose thresholds are stored in the workflow hash (``decisions.layout``): a decision only
adds to them, and the commit releases what a counter's threshold releases. The exception is the
fused path, where a decision that *read* a counter one short of its threshold acts on it in the
same commit (starts the downstream, or completes the workflow) and makes that value part of its
read set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stabilize_redis.decisions.claim import claim_ready_stage, report_expression_failure
from stabilize_redis.decisions.codec import StageRecord, meta_from_dict
from stabilize_redis.decisions.common import BRANCH_NOT_TAKEN, now_ms
from stabilize_redis.decisions.concurrency import release_message
from stabilize_redis.decisions.layout import meta_extras, phase_counter
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.sub_workflow import is_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.expressions import ExpressionError, evaluate_expression
from stabilize_redis.keys import HALTED_COUNTER, SETTLE_COUNTERS, SETTLED_COUNTER, join_counter
from stabilize_redis.models.stage import JoinType, SplitType
from stabilize_redis.models.stage.phases import owner_of, phase_of
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteWorkflow, ContinueParentStage, SkipStage, StartStage
from stabilize_redis.stages.multi_instance_shape import MI_CANCEL_REMAINING
from stabilize_redis.tasks.registry import TaskRegistry

__all__ = ["SETTLE_COUNTERS", "SPLIT_CONDITION_ERRORS", "activated_downstreams", "join_counter", "notify_parent",
           "release_after_completion", "settle_stage", "succeed_workflow"]


SPLIT_CONDITION_ERRORS = "splitConditionErrors"
"""Context key of an OR-splitting stage: {downstream ref id: error} for each split condition
that could not be evaluated (so that branch was not taken)."""


def activated_downstreams(rec: StageRecord, down_refs: dict[str, str],
                          ancestors: Mapping[str, Any] | None = None) -> set[str]:
    """Downstream stage ids an OR-split activates (all of them for an AND split).

    ``down_refs`` maps downstream stage id -> ref id. A condition that fails to evaluate does
    not activate its branch; its error is put in the splitting stage's context under
    SPLIT_CONDITION_ERRORS (the key is removed when every condition evaluated), where
    ``release_after_completion`` reports it. A downstream with no condition is always activated.
    The conditions see the stage's outputs over its context over ``ancestors`` (its ancestors'
    merged outputs, ``Snapshot.ancestors``).
    """
    stage = rec.stage
    if stage.split_type != SplitType.OR or not stage.split_conditions:
        return set(rec.down)
    scope: dict[str, Any] = {**(ancestors or {}), **stage.context, **stage.outputs}
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
    rec.act = sorted(active)  # what a recount after a reset takes as routed (decisions.reset.activates)
    return active


def is_multi_merge(rec: StageRecord) -> bool:
    return rec.stage.join_type == JoinType.MULTI_MERGE and bool(rec.up)


def _live(snap: Snapshot) -> bool:
    """The workflow can still start stages: not finished, not canceled (PAUSED counts)."""
    assert snap.meta is not None
    return not snap.meta["canceled"] and not WorkflowStatus[snap.meta["status"]].is_complete


def notify_parent(t: Transition, rec: StageRecord, kw: dict[str, Any], halted: bool = False,
                  live: bool = True) -> None:
    """Synthetic ``rec`` reached a final status in ``t``: a continuable one counts toward its
    parent's phase counter (the commit finishing the phase's last child releases
    ContinueParentStage for the parent); a halt sends ContinueParentStage at once (the parent
    fails: its phase can no longer complete). Not ``live`` (a finished or canceled workflow):
    only the count."""
    parent = rec.stage.parent_stage_id
    assert parent is not None
    phase = phase_of(rec.stage)
    message = ContinueParentStage(stage_id=parent, phase=owner_of(phase), **kw)
    if halted:
        if live:
            t.push(message)
    else:
        t.count(phase_counter(parent, phase), message if live else None)


def settle_stage(t: Transition, rec: StageRecord, kw: dict[str, Any], end_now: bool = False) -> None:
    """``rec``'s stage reached a final status in ``t``: if it is a top-level stage, count it
    settled (a halted one takes the downstreams that can no longer start with it); the commit
    that settles the last one releases CompleteWorkflow. ``end_now``: also release it in this
    commit (a halt that ends the workflow without waiting for the other branches)."""
    if rec.stage.parent_stage_id is not None:
        return
    completion = CompleteWorkflow(**kw)
    t.settle(rec.id, rec.stage.status.is_halt, completion)
    if end_now:
        t.request_completion(completion)


def release_after_completion(t: Transition, snap: Snapshot, rec: StageRecord,
                             message_kw: dict[str, Any], active: set[str] | None = None,
                             registry: TaskRegistry | None = None) -> None:
    """A stage finished with a continuable status: count it toward each downstream's join (the
    commit whose count reaches the join's stored threshold releases that StartStage) and settle
    it toward the workflow's completion (a synthetic stage: toward its parent's phase,
    ``notify_parent``). Downstreams an OR-split did not activate are skipped;
    each split condition that failed to evaluate (recorded by ``activated_downstreams``) is
    logged and gets an EXPRESSION_FAILED event. The decision depends on the workflow meta (its
    status), so the meta's version is in the read set.

    Fused path (with ``registry``): a downstream whose join this completion alone releases (the
    snapshot read its counter at 0 and its threshold at 1: one upstream, or a discriminator),
    and whose record it holds, is started in this same commit instead of through a StartStage
    message (the counter value read is checked by the commit). A join of several upstreams
    starts through StartStage (a plain AND join: by its counter alone). Likewise, when the
    snapshot read the settled count one short of the number of top-level stages with no halted
    one, every top-level stage has finished continuably, so the workflow SUCCEEDS in this commit
    instead of through a CompleteWorkflow message."""
    assert snap.meta is not None
    t.check_meta(snap.meta_version)
    live = _live(snap)
    if active is not None:
        for ref, error in rec.stage.context.get(SPLIT_CONDITION_ERRORS, {}).items():
            report_expression_failure(t, rec, "splitConditions", error,
                                      f"branch to {ref!r} not taken", downstream_ref_id=ref)
    for did in rec.down:
        if active is not None and did not in active:
            down = snap.stages.get(did)
            if down is not None and down.stage.status == WorkflowStatus.NOT_STARTED:
                down.stage.context[BRANCH_NOT_TAKEN] = True  # its own downstreams may be pruned too
                t.write_stage(down)
            t.push(SkipStage(stage_id=did, **message_kw))
            continue
        name = join_counter(did)
        down = snap.stages.get(did)
        count, limit = snap.counters.get(name), snap.thresholds.get(name)
        if registry is not None and down is not None and count == 0 and limit == 1 \
                and live and down.stage.status == WorkflowStatus.NOT_STARTED and not is_multi_merge(down) \
                and not down.stage.context.get(MI_CANCEL_REMAINING):  # its start reads the other instances
            t.expect_counter(name, count)
            t.count(name)
            claim_ready_stage(registry, t, down, [rec], message_kw)
            continue
        t.count(name, StartStage(stage_id=did, **message_kw) if live else None)
    if rec.stage.parent_stage_id is not None:
        notify_parent(t, rec, message_kw, live=live)
        return
    settled, limit = snap.counters.get(SETTLED_COUNTER), snap.thresholds.get(SETTLED_COUNTER)
    halted = snap.counters.get(HALTED_COUNTER)
    if live and snap.meta["status"] == WorkflowStatus.RUNNING.name and settled is not None \
            and settled + 1 == limit and halted == 0 and not is_child(snap.meta.get("context")):
        t.expect_counter(SETTLED_COUNTER, settled)
        t.expect_counter(HALTED_COUNTER, 0)
        t.settle(rec.id, False, None)
        succeed_workflow(t, snap)
        return
    settle_stage(t, rec, message_kw)


def succeed_workflow(t: Transition, snap: Snapshot) -> None:
    """The workflow SUCCEEDED: status, end time and the completion event, in ``t``."""
    assert snap.meta is not None
    wf = meta_from_dict(snap.meta)
    wf.status = WorkflowStatus.SUCCEEDED
    wf.end_time = now_ms()
    t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
    release = release_message(wf, wf.type.name)
    if release is not None:  # a limited workflow frees its slot in this commit
        t.push(release)
    t.event("workflow.completed", "workflow", wf.id, {
        "status": wf.status.name, "end_time": wf.end_time,
        "duration_ms": wf.end_time - (wf.start_time or wf.end_time)})
