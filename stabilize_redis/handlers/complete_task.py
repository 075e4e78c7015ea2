"""CompleteTask: record a task's final status, then start the next task or complete the stage.

``finish_task`` is also called by RunTask when a task returns, so the common path (run ->
done -> next task or stage completion) is one commit instead of three messages.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import begin_task, stale
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import attach, known_stage, known_task, now_ms
from stabilize_redis.decisions.flow import SETTLE_COUNTERS
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler, HandlerContext
from stabilize_redis.handlers.complete_stage import finish_stage
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import CompleteTask, Message


def finish_task(ctx: HandlerContext, t: Transition, snap: Snapshot, rec: StageRecord,
                task: TaskExecution, status: WorkflowStatus, original_status: WorkflowStatus | None, kw: dict[str, Any]) -> None:
    """Record ``task`` as ended with ``status`` and route onward into ``t``: start the next task,
    or settle the stage. REDIRECT only records (a jump drives the flow from there)."""
    if task.status != WorkflowStatus.SKIPPED:
        task.end_time = now_ms()
    task.status = status
    t.write_stage(rec)
    if status == WorkflowStatus.REDIRECT:
        return
    kind = "task.completed" if status.is_complete and not status.is_halt else "task.failed"
    data = {"stage_id": rec.id, "status": status.name}
    if original_status is not None and original_status != status:
        data["original_status"] = original_status.name
    t.event(kind, "task", task.id, data)
    nxt = rec.stage.next_task(task)
    if nxt is not None and not status.is_halt and nxt.status == WorkflowStatus.NOT_STARTED:
        begin_task(t, rec, nxt, kw)
    else:
        finish_stage(ctx, t, snap, rec, kw)


class CompleteTaskHandler(Handler):
    message_type = CompleteTask

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CompleteTask)
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            attach(snap)
            task = known_task(snap, rec, tid)
            if rec.stage.status != WorkflowStatus.RUNNING or stale(message, rec):
                return t
            if task.status == WorkflowStatus.SKIPPED and message.status == WorkflowStatus.SKIPPED:
                # Finished by StartTask already; route onward only if that has not happened yet.
                nxt = rec.stage.next_task(task)
                if nxt is not None and nxt.status != WorkflowStatus.NOT_STARTED:
                    return t
            elif task.status != WorkflowStatus.RUNNING:
                return t
            finish_task(self.ctx, t, snap, rec, task, message.status,
                        message.original_status, kw)
            return t

        return self.transact(message, delivery,
                             lambda: self.backend.read(wid, [sid], counters=SETTLE_COUNTERS,
                                                       with_downstreams=True), decide)
