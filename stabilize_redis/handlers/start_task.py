"""StartTask: NOT_STARTED -> RUNNING and ask for it to run (or skip a disabled SkippableTask)."""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.codec import StageRecord
from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.handlers.base import Handler, attach, known_stage, known_task, now_ms
from stabilize_redis.handlers.task_lookup import resolve_task
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import CompleteTask, JumpToStage, Message, RunTask, StartTask, TaskLevel
from stabilize_redis.tasks.interface import SkippableTask
from stabilize_redis.tasks.registry import TaskRegistry


def stale(message: TaskLevel | JumpToStage, rec: StageRecord) -> bool:
    """``message`` belongs to an earlier run of ``rec``'s stage (its ``attempt_token`` is not the
    stage's run): a reset (jump, restart) came after it was sent, so it is discarded."""
    return message.attempt_token is not None and message.attempt_token != rec.attempt


def begin_task(registry: TaskRegistry | None, t: Transition, rec: StageRecord, task: TaskExecution,
               kw: dict[str, Any]) -> None:
    """Start a NOT_STARTED task: RUNNING and a RunTask, or SKIPPED and a CompleteTask(SKIPPED)
    for a disabled SkippableTask. Used by StartTask and, for a stage's first task, by StartStage
    (which saves a message per stage). Without a registry (at submit) the SkippableTask check
    is left to RunTask."""
    tkw = {**kw, "stage_id": rec.id, "task_id": task.id, "attempt_token": rec.attempt}
    impl = resolve_task(registry, task) if registry is not None else None
    if isinstance(impl, SkippableTask) and not impl.is_enabled(rec.stage):
        task.status = WorkflowStatus.SKIPPED
        task.end_time = now_ms()
        t.write_stage(rec)
        t.push(CompleteTask(status=WorkflowStatus.SKIPPED, **tkw))  # type: ignore[arg-type]
        return
    task.status = WorkflowStatus.RUNNING
    task.start_time = now_ms()
    t.write_stage(rec)
    t.push(RunTask(task_type=task.implementing_class, **tkw))  # type: ignore[arg-type]
    t.event("task.started", "task", task.id,
            {"stage_id": rec.id, "name": task.name, "implementing_class": task.implementing_class})


class StartTaskHandler(Handler):
    message_type = StartTask

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartTask)
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            attach(snap)
            task = known_task(snap, rec, tid)
            if task.status != WorkflowStatus.NOT_STARTED or rec.stage.status != WorkflowStatus.RUNNING \
                    or stale(message, rec):
                return t
            begin_task(self.ctx.registry, t, rec, task, kw)
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)
