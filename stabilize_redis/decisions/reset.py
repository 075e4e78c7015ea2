"""Resetting a region of the graph - the shared step of a jump and a restart. Pure: it changes
stage records and adds to a Transition, never touches Redis and calls no user code.

A reset is one commit. The stages reset go back to NOT_STARTED (tasks, outputs, join tracking and
transient-retry counts cleared, the ancestors' outputs merged into the context at the last start
taken back out, and the stage's run - ``StageRecord.attempt`` - raised, so a task of the old run
still executing somewhere is a stale attempt whose completion is discarded). Tasks that were
running get a cancellation notice. Then every counter the changed statuses feed is recounted
from the statuses alone (``recount``): the join and dead counters of the changed stages and of
their direct downstreams, top-level stages taken off the settled count or put on it, and a
NOT_STARTED stage whose join the new statuses satisfy is sent a StartStage.

The recount reads only the region and its border (``backend.Region``), and every record it read
is in the read set: a completion landing outside the region between read and commit changes an
upstream's version, the commit CONFLICTs and the reset is decided again on the new state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from stabilize_redis.dag.lineage import materialize, merge_value
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import BRANCH_NOT_TAKEN, JUMP_BYPASS
from stabilize_redis.decisions.layout import dead_gate, finished_ok, join_gate, phase_counter, phase_counts
from stabilize_redis.decisions.snapshot import Region
from stabilize_redis.decisions.sub_workflow import SUB_WORKFLOW_ID
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.expressions import ExpressionError, evaluate_expression
from stabilize_redis.keys import dead_counter, join_counter, stage_field
from stabilize_redis.models.stage import PLANNING_FAILED, SplitType
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteWorkflow, StartStage

JOIN_TRACKING_KEYS = ("_join_fired", "_completed_branches", "_activated_branches", "_pruned_from", "_pruned",
                      "_mm_consumed", "_mm_trigger", "_mm_firings", "_mm_done")
"""Context keys of one pass's join and split tracking, dropped by a reset (stabilize's list)."""


def strip_inherited(rec: StageRecord) -> None:
    """Take out of ``rec``'s context the ancestors' outputs merged into it when it last started
    (a value a task has changed since is the task's and stays); the stage's own values under
    those keys come back. stabilize keeps the merged copies, so a re-run stage would see an
    earlier pass's upstream values over the fresh ones."""
    if not rec.anc:
        return
    context = rec.stage.context
    for key, value in materialize(rec.anc).items():
        own = rec.shadowed.get(key)
        placed = merge_value(value, own) if key in rec.shadowed else value
        if key in context and context[key] == placed:
            if key in rec.shadowed:
                context[key] = own
            else:
                del context[key]
    rec.anc = {}
    rec.shadowed = {}


def reset_stage(rec: StageRecord) -> list[str]:
    """``rec`` back to NOT_STARTED for a new run; returns the ids of its tasks that were running."""
    stage = rec.stage
    strip_inherited(rec)
    stage.status = WorkflowStatus.NOT_STARTED
    stage.start_time = None
    stage.end_time = None
    stage.outputs = {}
    # a new run plans, reduces, routes afresh
    for key in (*JOIN_TRACKING_KEYS, PLANNING_FAILED, BRANCH_NOT_TAKEN, JUMP_BYPASS, SUB_WORKFLOW_ID):
        stage.context.pop(key, None)
    running: list[str] = []
    for task in stage.tasks:
        if task.status in (WorkflowStatus.RUNNING, WorkflowStatus.PAUSED, WorkflowStatus.SUSPENDED):
            running.append(task.id)
        task.status = WorkflowStatus.NOT_STARTED
        task.start_time = None
        task.end_time = None
        task.task_exception_details = {}
    rec.tries = {}
    rec.attempt += 1
    return running


def reset_children(t: Transition, parents: Iterable[StageRecord], descendants: Mapping[str, StageRecord]) -> list[str]:
    """A reset of ``parents`` for a re-run takes their synthetic descendants (``descendants``, read
    beforehand: ``backend.graph_reads.read_descendants``) back to NOT_STARTED in ``t``, with their
    sibling join counters and the parents' phase counters at 0; each is written guarded by the
    version it was read at. Returns the ids of their tasks that were running."""
    running: list[str] = []
    level = [p for p in parents if p.children]
    while level:
        kids: list[StageRecord] = []
        for parent in level:
            mine = [descendants[c] for c in parent.children if c in descendants]
            for phase in phase_counts(mine):
                t.reset_counter(phase_counter(parent.id, phase), 0)
            kids += mine
        for kid in kids:
            running += reset_stage(kid)
            t.write_stage(kid)
            if kid.up:
                t.reset_counter(join_counter(kid.id), 0)
        level = [k for k in kids if k.children]
    return running


def finish_stage_as(rec: StageRecord, status: WorkflowStatus, now: int) -> None:
    """``rec`` ends with ``status`` without running what is left (a forward jump's source:
    SUCCEEDED, its unfinished tasks with it; a stage jumped over: SKIPPED, every task too)."""
    stage = rec.stage
    stage.status = status
    stage.end_time = now
    for task in stage.tasks:
        if status == WorkflowStatus.SKIPPED or not task.status.is_complete:
            task.status = status
            task.end_time = now


def activates(up: StageRecord, down: StageRecord) -> bool:
    """Whether ``up``'s split routes to ``down`` (an OR split's condition for ``down``'s ref id;
    one that fails to evaluate does not), as ``decisions.flow.activated_downstreams`` decided."""
    stage = up.stage
    if stage.split_type != SplitType.OR or not stage.split_conditions:
        return True
    if up.act is not None:  # recorded by the decision (which saw the split's ancestors' outputs)
        return down.id in up.act
    expr = stage.split_conditions.get(down.stage.ref_id)
    if expr is None:
        return True
    try:
        return bool(evaluate_expression(expr, {**stage.context, **stage.outputs}))
    except ExpressionError:
        return False



def recount(t: Transition, region: Region, changed: Iterable[str], reset: Collection[str], kw: dict[str, Any],
            started: Collection[str] = ()) -> None:
    """Recount, into ``t``, the counters the new statuses of ``changed`` feed - those of
    ``region.counted``: the changed stages, their direct downstreams and the stages below that
    were settled as unable to run - in topological order, changing only values that move.
    Top-level stages are unsettled (``reset``: they will run again; a stage that could not run
    and now can, and so on down) or settled (a new final status; a stage that can no longer
    run, halted). A NOT_STARTED stage other than ``started`` whose recounted join is met gets a
    StartStage (StartStage checks readiness again, so one that is also released elsewhere starts
    once). Every changed stage with a ``mutex_key`` gets a StartStage too: a holder reset or
    finished by the jump hands its mutex on there (``decisions.mutex.tidy``). Every record of
    ``region`` not written by ``t`` is put in its read set."""
    changed = set(changed)
    stages = region.stages
    completion = CompleteWorkflow(**kw)
    unsettled = set(reset)
    for sid in sorted((s for s in {*region.counted, *changed} if s in stages), key=lambda s: stages[s].rank):
        rec = stages[sid]
        top = rec.stage.parent_stage_id is None
        if sid in reset and top:
            t.unsettle(sid)
        elif sid in changed and top and rec.stage.status.is_complete:
            t.settle(sid, rec.stage.status.is_halt, completion)
        ups = [stages[u] for u in rec.up if u in stages]
        if not ups:
            continue
        gate = join_gate(rec.stage, len(ups))
        joined = sum(1 for u in ups if finished_ok(u.stage.status) and activates(u, rec))
        _set(t, region, join_counter(sid), joined)
        if sid in reset and region.thresholds.get(join_counter(sid)) != gate:
            t.set_threshold(join_counter(sid), gate)  # a multi-merge raises it run by run
        dead_now = 0
        if top:
            dead_now = sum(1 for u in ups if u.stage.status.is_halt
                           or (u.id not in unsettled and region.flags.get(u.id) == "h"
                               and u.stage.status == WorkflowStatus.NOT_STARTED))
            _set(t, region, dead_counter(sid), dead_now)
        if rec.stage.status != WorkflowStatus.NOT_STARTED or sid in started:
            continue
        if top and dead_now >= dead_gate(rec.stage, len(ups)):
            t.settle(sid, True, completion)
            continue
        if top and sid not in reset and region.flags.get(sid) == "h":
            t.unsettle(sid)
            unsettled.add(sid)
        if joined >= gate:
            t.push(StartStage(stage_id=sid, **kw))
    for sid in sorted(s for s in changed if s in stages and stages[s].stage.mutex_key):
        t.push(StartStage(stage_id=sid, **kw))  # a mutex it held is handed on there (decisions.mutex)
    for sid, rec in stages.items():
        name = stage_field(sid)
        if name not in t.writes:
            t.check(name, rec.version)


def _set(t: Transition, region: Region, name: str, value: int) -> None:
    if region.counters.get(name, 0) != value:
        t.reset_counter(name, value)
