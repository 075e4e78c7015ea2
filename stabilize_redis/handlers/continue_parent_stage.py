"""ContinueParentStage: move a stage with synthetic children through its phases.

A stage with synthetic children (``parent_stage_id``/``synthetic_stage_owner`` given by hand,
or planned by its type's stage definition builder) runs as stabilize's flow-control guide says:
its before-stages first (in their dependency order), then its tasks, then its after-stages on
success or its on-failure stages on failure (``models.stage.phases``). Nothing polls:

* its start (``start_stage.claim_ready_stage``) sends ContinueParentStage(STAGE_BEFORE);
* each child that finishes continuably counts toward its parent's phase counter, and the commit
  that finishes a phase's last child releases ContinueParentStage for the parent (a halted
  child sends it at once);
* the phase is decided here from the parent and its children as read (every child's version is
  in the read set), so a duplicate or early message changes nothing.

STAGE_BEFORE: plan the stage if its type has a builder (tasks when it has none, before-stages
when it has none), then start the before-stages that wait for no sibling; once all finished
continuably, start the first task (no tasks: go on to the after phase); a halted before-stage
fails the stage, and its tasks never run. STAGE_AFTER: the after phase
(``complete_stage.complete_parent``).

A stage reset for a re-run (a jump, a restart) takes its synthetic descendants back to
NOT_STARTED too (``decisions.reset.reset_children``).
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import begin_task
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import attach, known_stage
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler, HandlerContext
from stabilize_redis.handlers.complete_stage import (
    Family,
    build_phase,
    children_of,
    complete_parent,
    planning_failed,
    read_family,
    start_phase,
)
from stabilize_redis.models.stage import PLANNING_FAILED, SyntheticStageOwner
from stabilize_redis.models.stage.phases import BEFORE, phase_of
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import ContinueParentStage, Message
from stabilize_redis.stages.builder import planner_for
from stabilize_redis.support import check_stage


def plan_start(t: Transition, snap: Family, rec: StageRecord, kids: list[StageRecord]) -> list[StageRecord]:
    """Plan a starting stage with its builder (if one is registered here): tasks if it has
    none, before-stages if it has none, context flags. Returns its children, new ones included."""
    builder = planner_for(rec.stage.type)
    stage = rec.stage
    if builder is None or snap.graph is None or stage.context.get(PLANNING_FAILED):
        return kids
    try:
        if not stage.tasks:
            stage.tasks = list(builder.build_tasks(stage))
            if stage.tasks:
                stage.tasks[0].stage_start = True
                stage.tasks[-1].stage_end = True
            check_stage(stage)
        t.write_stage(rec)
    except Exception as e:  # noqa: BLE001 - user builder code, or what it built
        stage.tasks = []
        planning_failed(t, rec, e)
        return kids
    if not any(phase_of(k.stage) == BEFORE for k in kids):
        kids = kids + build_phase(t, snap.graph, rec, kids, builder, BEFORE)
    if not stage.context.get(PLANNING_FAILED):
        try:
            builder.add_context_flags(stage)
        except Exception as e:  # noqa: BLE001 - user builder code
            planning_failed(t, rec, e)
    return kids


def advance_before(ctx: HandlerContext, t: Transition, snap: Family, rec: StageRecord, kw: dict[str, Any]) -> None:
    """The before phase of RUNNING ``rec`` into ``t`` (see the module docstring). Once the
    stage's tasks have started, its before phase is over and this does nothing."""
    stage = rec.stage
    if any(task.status != WorkflowStatus.NOT_STARTED for task in stage.tasks):
        return
    kids = plan_start(t, snap, rec, children_of(t, snap, rec))
    before = [k for k in kids if phase_of(k.stage) == BEFORE]
    if stage.context.get(PLANNING_FAILED) or any(k.stage.status.is_halt for k in before):
        complete_parent(ctx, t, snap, rec, kw)
        return
    if not all(k.stage.status.is_complete for k in before):
        start_phase(ctx, t, rec, before, kw)
        return
    first = stage.first_task()
    if first is None:
        complete_parent(ctx, t, snap, rec, kw)
        return
    first.stage_start = True
    stage.tasks[-1].stage_end = True
    begin_task(t, rec, first, kw)
    t.write_stage(rec)


class ContinueParentStageHandler(Handler):
    message_type = ContinueParentStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, ContinueParentStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            assert isinstance(snap, Family)
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            t.check_meta(snap.meta_version)
            if wf.status.is_complete or wf.is_canceled or rec.stage.status != WorkflowStatus.RUNNING:
                return t
            if message.phase == SyntheticStageOwner.STAGE_BEFORE:
                advance_before(self.ctx, t, snap, rec, kw)
            else:
                complete_parent(self.ctx, t, snap, rec, kw)
            return t

        return self.transact(message, delivery, lambda: read_family(self.backend, wid, sid), decide)


__all__ = ["ContinueParentStageHandler", "advance_before"]
