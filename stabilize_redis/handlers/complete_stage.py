"""CompleteStage: settle a stage's status from its tasks, clean up, and route onward.

Continuable (SUCCEEDED, FAILED_CONTINUE, SKIPPED): count toward each downstream's join and the
workflow's completion in the same commit. Halted (TERMINAL, STOPPED, CANCELED): a top-level
stage settles as halted (so do the downstreams that can no longer start); TERMINAL and CANCELED
also end the workflow at once, as stabilize does (CompleteWorkflow fails or cancels it and
cancels the running branches), while STOPPED lets the other branches finish and the workflow
completes when the last of them settles.

``finish_stage`` is also called by RunTask/CompleteTask when a stage's last task ends, so a
single-task stage needs no separate CompleteStage message.
"""

from __future__ import annotations

import logging
from typing import Any

from stabilize_redis.backend.codec import StageRecord
from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.handlers.base import (
    Handler,
    HandlerContext,
    attach,
    known_stage,
    now_ms,
    stage_event_data,
)
from stabilize_redis.handlers.flow import (
    SETTLE_COUNTERS,
    activated_downstreams,
    release_after_completion,
    settle_stage,
)
from stabilize_redis.handlers.task_lookup import resolve_task
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.queue.messages import CompleteStage, CompleteWorkflow, Message

log = logging.getLogger("stabilize_redis.handlers")

_ENDS_WORKFLOW = (WorkflowStatus.TERMINAL, WorkflowStatus.CANCELED)
"""Halts of a top-level stage that end the workflow without waiting for its other branches."""


def cleanup_tasks(ctx: HandlerContext, rec: StageRecord) -> None:
    """Call ``on_cleanup`` of every task of a finished stage; a failing cleanup is logged."""
    for task in rec.stage.tasks:
        impl = resolve_task(ctx.registry, task)
        if impl is None:
            continue
        try:
            impl.on_cleanup(rec.stage)
        except Exception:  # noqa: BLE001 - user hook
            log.exception("on_cleanup of task %s (stage %s) failed", task.name, rec.stage.ref_id)


def finish_stage(ctx: HandlerContext, t: Transition, snap: Snapshot, rec: StageRecord,
                 kw: dict[str, Any], cleaned: set[str]) -> None:
    """Decide a RUNNING stage's completion into ``t`` (nothing if it is still running).
    ``snap`` must hold the stage's downstream records (read ``with_downstreams``): OR-split
    conditions name them by ref id, and single-upstream downstreams start in this commit.
    ``cleaned`` remembers stages whose cleanup hooks already ran across conflict retries."""
    assert snap.meta is not None
    stage = rec.stage
    status = stage.determine_status()
    if status in (WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED):
        return
    if status in CONTINUABLE_STATUSES and stage.context.get("_blocking_failure"):
        status = WorkflowStatus.TERMINAL
    stage.status = status
    stage.end_time = now_ms()
    if status.is_complete and rec.id not in cleaned:
        cleanup_tasks(ctx, rec)
        cleaned.add(rec.id)
    t.write_stage(rec)
    data = stage_event_data(rec, status=status.name, end_time=stage.end_time,
                            duration_ms=stage.end_time - (stage.start_time or stage.end_time),
                            outputs=stage.outputs)
    if status in CONTINUABLE_STATUSES:
        refs = {d: snap.stages[d].stage.ref_id for d in rec.down if d in snap.stages}
        t.event("stage.completed", "stage", rec.id, data)
        release_after_completion(t, snap, rec, kw, activated_downstreams(rec, refs), ctx.registry)
    else:
        t.event("stage.failed", "stage", rec.id, data)
        if stage.parent_stage_id is None:
            settle_stage(t, rec, kw, end_now=status in _ENDS_WORKFLOW)
        else:
            t.push(CompleteWorkflow(**kw))


class CompleteStageHandler(Handler):
    message_type = CompleteStage

    def handle(self, message: Message, delivery: Delivery | None) -> str:
        assert isinstance(message, CompleteStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}
        cleaned: set[str] = set()

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            attach(snap)
            if rec.stage.status != WorkflowStatus.RUNNING:
                if rec.stage.status.is_halt:
                    t.push(CompleteWorkflow(**kw))
                return t
            finish_stage(self.ctx, t, snap, rec, kw, cleaned)
            return t

        return self.transact(message, delivery,
                             lambda: self.backend.read(wid, [sid], counters=SETTLE_COUNTERS,
                                                       with_downstreams=True), decide)
