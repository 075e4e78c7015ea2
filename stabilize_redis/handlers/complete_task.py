"""CompleteTask: record a task's final status, then start the next task or complete the stage."""

from __future__ import annotations

from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.handlers.base import Handler, attach, now_ms
from stabilize_redis.handlers.task_lookup import find_task
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteStage, CompleteTask, Message, StartTask


class CompleteTaskHandler(Handler):
    message_type = CompleteTask

    def handle(self, message: Message, delivery: Delivery | None) -> str:
        assert isinstance(message, CompleteTask)
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id
        kw = {"execution_id": wid, "execution_type": message.execution_type, "stage_id": sid}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = snap.stages.get(sid)
            if snap.meta is None or rec is None:
                return t
            attach(snap)
            task = find_task(rec.stage.tasks, tid)
            # A SKIPPED task was already finished by StartTask; it still routes onward once.
            skipped_at_start = task is not None and task.status == WorkflowStatus.SKIPPED \
                and message.status == WorkflowStatus.SKIPPED
            if task is None or (task.status != WorkflowStatus.RUNNING and not skipped_at_start):
                return t
            status = message.status
            task.status = status
            task.end_time = task.end_time if skipped_at_start else now_ms()
            t.write_stage(rec)
            if status == WorkflowStatus.REDIRECT:
                return t
            kind = "task.completed" if status.is_complete and not status.is_halt else "task.failed"
            t.event(kind, "task", tid, {"stage_id": sid, "name": task.name, "status": status.name,
                                        "original_status": message.original_status.name
                                        if message.original_status else None})
            nxt = rec.stage.next_task(task)
            if nxt is not None and not status.is_halt and nxt.status == WorkflowStatus.NOT_STARTED:
                t.push(StartTask(task_id=nxt.id, **kw))
            else:
                t.push(CompleteStage(**kw))
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)
