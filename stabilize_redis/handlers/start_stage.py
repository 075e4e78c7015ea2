"""StartStage: claim a ready stage, give it its ancestors' outputs, and start its first task.

A join's StartStage is released by the commit that completes its last needed upstream (a
counter in the workflow hash), so no handler polls. Readiness is still checked against the
upstreams read here, and their versions are part of the read set, as is the workflow meta's
(a CancelWorkflow landing between read and commit makes the commit CONFLICT, and the stage is
then left alone). The stage's first task is started in the same commit (no separate StartTask
message). A stage whose join can no longer be met needs nothing here: the commit that halted
its upstream already counted it settled.

A stage with synthetic children, or of a type whose stage definition builder is registered in
this process, starts through its phases instead: it is claimed (RUNNING, context over its
ancestors' outputs) and ContinueParentStage(STAGE_BEFORE) plans it and runs its before-stages
first (``handlers.continue_parent_stage``). A synthetic stage with no sibling upstream is started
by its parent's phase, never by a StartStage of its own (one is ignored).
"""

from __future__ import annotations

import logging
from typing import Any

from stabilize_redis.backend.codec import StageRecord
from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.dag.lineage import (
    Lineage,
    context_with_ancestors,
    extend_lineage,
    materialize,
    union_lineages,
)
from stabilize_redis.dag.readiness import PredicatePhase, evaluate_readiness
from stabilize_redis.decisions.reset import strip_inherited
from stabilize_redis.expressions import check_stage_enabled
from stabilize_redis.handlers.base import Handler, attach, known_stage, now_ms, stage_event_data
from stabilize_redis.handlers.multi_merge import is_multi_merge, merge_counters, merge_step
from stabilize_redis.handlers.start_task import begin_task
from stabilize_redis.keys import SETTLE_COUNTERS, stage_field
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteStage, ContinueParentStage, Message, SkipStage, StartStage
from stabilize_redis.stages.builder import planner_for
from stabilize_redis.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize_redis.handlers")

STAGE_ENABLED_ERROR = "stageEnabledError"
"""Stage context key: why the stage's ``stageEnabled`` expression could not be evaluated."""

EXPRESSION_FAILED = "stage.expression_failed"
"""Event type: a stage's ``stageEnabled`` or split-condition expression could not be evaluated."""


def report_expression_failure(t: Transition, rec: StageRecord, expression: str, error: str,
                              consequence: str, **data: Any) -> None:
    """Make a failed ``expression`` ("stageEnabled" or "splitConditions") of ``rec``'s stage
    visible: a WARNING naming workflow, stage and error, and an EXPRESSION_FAILED event in
    ``t`` with ``expression``, ``error`` and ``data``. Recording it in the context is the
    caller's part."""
    log.warning("workflow %s, stage %s (%s): %s could not be evaluated (%s); %s", t.workflow_id,
                rec.stage.ref_id, rec.id, expression, error, consequence)
    t.event(EXPRESSION_FAILED, "stage", rec.id,
            stage_event_data(rec, expression=expression, error=error, **data))


def starts_by_phases(rec: StageRecord, registry: TaskRegistry | None) -> bool:
    """Whether ``rec``'s stage starts through ContinueParentStage: it has synthetic children,
    its type has a builder registered here, or (``registry`` None: decided at submit, where the
    worker's builders may be unknown) it was given no tasks, so the worker's builder may supply
    them."""
    if rec.children or planner_for(rec.stage.type) is not None:
        return True
    return registry is None and not rec.stage.tasks


def claim_ready_stage(registry: TaskRegistry | None, t: Transition, rec: StageRecord, ups: list[StageRecord],
                      kw: dict[str, Any], inherited: Lineage | None = None) -> None:
    """Start a NOT_STARTED stage whose join is satisfied by ``ups`` (its completed upstreams):
    skip it (SkipStage) if ``stageEnabled`` says so or its start expired; otherwise RUNNING,
    its context over its ancestors' outputs, and its first task started - all into ``t``.
    A ``stageEnabled`` expression that fails to evaluate counts as enabled; its error goes to
    the context (STAGE_ENABLED_ERROR), the log and an EXPRESSION_FAILED event.
    Used by StartStage and by the commit that completes a stage's only upstream.
    ``inherited``: the lineage a synthetic stage with no sibling upstream takes from its parent
    (``continue_parent_stage.parent_lineage``). A stage that ``starts_by_phases`` gets a
    ContinueParentStage(STAGE_BEFORE) instead of its first task."""
    stage = rec.stage
    lineage = union_lineages([*(extend_lineage(u.anc, u.rank, u.stage.outputs) for u in ups),
                              *([inherited] if inherited else [])])
    ancestors = materialize(lineage)
    scope = {**ancestors, **stage.context}
    enabled, error = check_stage_enabled(stage.context.get("stageEnabled", True), scope)
    if error is None:
        stage.context.pop(STAGE_ENABLED_ERROR, None)
    else:
        stage.context[STAGE_ENABLED_ERROR] = error
        report_expression_failure(t, rec, "stageEnabled", error, "treating the stage as enabled")
        t.write_stage(rec)
    expired = stage.start_time_expiry is not None and now_ms() > stage.start_time_expiry
    if not enabled or expired:
        t.push(SkipStage(stage_id=rec.id, **kw))
        return
    stage.status = WorkflowStatus.RUNNING
    stage.start_time = now_ms()
    strip_inherited(rec)
    rec.shadowed = {k: v for k, v in stage.context.items() if k in ancestors}
    stage.context = context_with_ancestors(stage.context, ancestors)
    rec.anc = lineage
    t.event("stage.started", "stage", rec.id, stage_event_data(rec))
    first = stage.first_task()
    if starts_by_phases(rec, registry):
        t.push(ContinueParentStage(stage_id=rec.id, phase=SyntheticStageOwner.STAGE_BEFORE, **kw))
    elif first is not None:
        first.stage_start = True
        stage.tasks[-1].stage_end = True
        begin_task(registry, t, rec, first, kw)
    else:
        t.push(CompleteStage(stage_id=rec.id, **kw))
    t.write_stage(rec)


class StartStageHandler(Handler):
    message_type = StartStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            stage = rec.stage
            t.check_meta(snap.meta_version)
            if wf.status.is_complete or wf.is_canceled:
                return t
            if is_multi_merge(rec):
                merge_step(self.ctx.registry, t, snap, rec, kw)
                return t
            if stage.status != WorkflowStatus.NOT_STARTED:
                return t
            if stage.parent_stage_id is not None and not rec.up:
                return t  # started by its parent's phase (ContinueParentStage)
            ups = [snap.stages[u] for u in rec.up if u in snap.stages]
            for up in ups:
                t.check(stage_field(up.id), up.version)
            phase = evaluate_readiness(stage.join_type, [u.stage.status for u in ups], stage.join_threshold)
            if phase != PredicatePhase.READY:
                return t
            claim_ready_stage(self.ctx.registry, t, rec, ups, kw)
            return t

        def read() -> Snapshot:
            snap = self.backend.read(wid, [sid], with_upstreams=True)
            rec = snap.stages.get(sid)
            if rec is None or not is_multi_merge(rec):
                return snap
            if not rec.stage.status.is_complete:
                return self.backend.read(wid, [sid], with_upstreams=True, counters=merge_counters(sid))
            return self.backend.read(wid, [sid], with_upstreams=True, with_downstreams=True,
                                     counters=[*merge_counters(sid), *SETTLE_COUNTERS])

        return self.transact(message, delivery, read, decide)
