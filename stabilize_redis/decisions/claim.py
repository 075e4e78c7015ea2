"""Starting things: claiming a ready stage (its place among its ancestors' outputs, its first
task begun) and beginning a task, and the stale-attempt rule. Pure: into a Transition."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import BRANCH_NOT_TAKEN, JUMP_BYPASS, now_ms, stage_event_data
from stabilize_redis.decisions.milestones import needs_milestone, wake_watchers
from stabilize_redis.decisions.mutex import needs_exclusion
from stabilize_redis.decisions.reset import strip_inherited
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.decisions.views import SEG, continues, segment_of
from stabilize_redis.expressions import check_stage_enabled, stage_enabled_expression
from stabilize_redis.models.stage import StageExecution, SyntheticStageOwner
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import (
    CompleteStage,
    ContinueParentStage,
    JumpToStage,
    RunTask,
    SkipStage,
    StartStage,
    TaskLevel,
)
from stabilize_redis.reducers.fan_in import reduce_fan_in, stage_reducers
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
                      kw: dict[str, Any], gate: Callable[[Transition, StageRecord], bool] | None = None,
                      ancestors: Mapping[str, Any] | None = None) -> None:
    """Start a NOT_STARTED stage whose join is satisfied by ``ups`` (its completed upstreams):
    skip it (SkipStage) if ``stageEnabled`` says so or its start expired; otherwise RUNNING,
    its context over its ancestors' outputs, and its first task started - all into ``t``.
    A ``stageEnabled`` expression that fails to evaluate counts as enabled; its error goes to
    the context (STAGE_ENABLED_ERROR), the log and an EXPRESSION_FAILED event.
    Used by StartStage and by the commit that completes a stage's only upstream. A stage all of
    whose upstreams (``ups`` holding every one) were not taken (``common.BRANCH_NOT_TAKEN``) is
    marked so and skipped instead - unless it is a jump's target (``common.JUMP_BYPASS``), which
    runs whatever its upstreams did; the marker goes when it starts.
    The stage's ancestors' outputs are not copied into it: ``place`` gives it its segment and
    sources (``decisions.views``), and a task reads them through its view. ``ancestors``: the
    outputs a ``stageEnabled`` expression names, read by the caller (``needs_ancestors``);
    without them such a stage is sent a StartStage, whose handler reads them. A stage that
    ``starts_by_phases`` gets a ContinueParentStage(STAGE_BEFORE) instead of its first task.
    A stage with a ``mutex_key``, ``deferred_choice_group`` or milestone starts only past
    ``gate`` (``decisions.mutex.start_gate``, ``decisions.milestones.milestone_gate``, built from
    what StartStage read): False leaves it waiting, canceled or skipped as the gate decided; with
    no gate it is sent a StartStage instead. A milestone's start sends its watchers a StartStage."""
    stage = rec.stage
    if not stage.context.get(JUMP_BYPASS) and ups and len(ups) == len(rec.up) and all(u.stage.context.get(BRANCH_NOT_TAKEN) for u in ups):
        stage.context[BRANCH_NOT_TAKEN] = True  # no live path leads here: pruned, not run
        t.write_stage(rec)
        t.push(SkipStage(stage_id=rec.id, **kw))
        return
    if (gate is None and (needs_exclusion(stage) or needs_milestone(stage))) or \
            (ancestors is None and needs_ancestors(stage)):
        t.push(StartStage(stage_id=rec.id, **kw))
        return
    scope = {**(ancestors or {}), **stage.context}
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
    if gate is not None and not gate(t, rec):
        return
    stage.status = WorkflowStatus.RUNNING
    stage.start_time = now_ms()
    stage.context.pop(BRANCH_NOT_TAKEN, None)  # a live path reached it (a re-run after a reset)
    stage.context.pop(JUMP_BYPASS, None)
    wake_watchers(t, rec, kw)  # a milestone's start decides its waiting watchers again
    strip_inherited(rec)  # a record started before views still holds its copied ancestors
    place(rec, ups)
    reduced = reduce_fan_in(t, rec, ups)  # output_reducers; False: one failed, the phases path fails the stage
    rec.cat = [k for k, v in stage.context.items() if isinstance(v, list) and k not in stage_reducers(rec)]
    t.event("stage.started", "stage", rec.id, stage_event_data(rec))
    first = stage.first_task()
    if starts_by_phases(rec, registry) or not reduced:
        t.push(ContinueParentStage(stage_id=rec.id, phase=SyntheticStageOwner.STAGE_BEFORE, **kw))
    elif first is not None:
        first.stage_start = True
        stage.tasks[-1].stage_end = True
        begin_task(t, rec, first, kw)
    else:
        t.push(CompleteStage(stage_id=rec.id, **kw))
    t.write_stage(rec)


def needs_ancestors(stage: StageExecution) -> bool:
    """Whether deciding ``stage``'s start reads its ancestors' outputs: a ``stageEnabled``
    expression may name them."""
    return stage_enabled_expression(stage.context.get("stageEnabled")) is not None


def place(rec: StageRecord, ups: list[StageRecord]) -> None:
    """``rec``'s segment and sources as it starts after ``ups`` (``decisions.views``): it
    continues its only upstream's segment when it is that upstream's only downstream; otherwise
    it heads its own, whose sources are its upstreams (derived) - or, when only some of them
    released it (N-of-M, discriminator, a jump's target), those."""
    if len(ups) == 1 and continues(rec, ups[0]):
        rec.seg, rec.src = segment_of(ups[0]), None
        return
    rec.seg = ""
    released = {u.id for u in ups}
    rec.src = None if not ups or released == set(rec.up) else [[SEG, segment_of(u), u.rank] for u in ups]


def stale(message: TaskLevel | JumpToStage, rec: StageRecord) -> bool:
    """``message`` belongs to an earlier run of ``rec``'s stage (its ``attempt_token`` is not the
    stage's run): a reset (jump, restart) came after it was sent, so it is discarded."""
    return message.attempt_token is not None and message.attempt_token != rec.attempt


def begin_task(t: Transition, rec: StageRecord, task: TaskExecution, kw: dict[str, Any]) -> None:
    """Start a NOT_STARTED task into ``t``: RUNNING and a RunTask of this run of the stage. A
    disabled SkippableTask is skipped by RunTask (its ``is_enabled`` is user code, which no
    decision calls)."""
    tkw = {**kw, "stage_id": rec.id, "task_id": task.id, "attempt_token": rec.attempt}
    task.status = WorkflowStatus.RUNNING
    task.start_time = now_ms()
    t.write_stage(rec)
    t.push(RunTask(task_type=task.implementing_class, **tkw))  # type: ignore[arg-type]
    t.event("task.started", "task", task.id, {"stage_id": rec.id})
