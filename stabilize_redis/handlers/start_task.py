"""StartTask: NOT_STARTED -> RUNNING and ask for it to run (or skip a disabled SkippableTask)."""

from __future__ import annotations

from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.handlers.base import Handler, attach, now_ms
from stabilize_redis.handlers.task_lookup import find_task, resolve_task
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteTask, Message, RunTask, StartTask
from stabilize_redis.tasks.interface import SkippableTask


class StartTaskHandler(Handler):
    message_type = StartTask

    def handle(self, message: Message, delivery: Delivery | None) -> str:
        assert isinstance(message, StartTask)
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id
        kw = {"execution_id": wid, "execution_type": message.execution_type, "stage_id": sid, "task_id": tid}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = snap.stages.get(sid)
            if snap.meta is None or rec is None:
                return t
            attach(snap)
            task = find_task(rec.stage.tasks, tid)
            if task is None or task.status != WorkflowStatus.NOT_STARTED:
                return t
            impl = resolve_task(self.ctx.registry, task)
            if isinstance(impl, SkippableTask) and not impl.is_enabled(rec.stage):
                task.status = WorkflowStatus.SKIPPED
                task.end_time = now_ms()
                t.write_stage(rec)
                t.push(CompleteTask(status=WorkflowStatus.SKIPPED, **kw))
                return t
            task.status = WorkflowStatus.RUNNING
            task.start_time = now_ms()
            t.write_stage(rec)
            t.push(RunTask(task_type=task.implementing_class, **kw))
            t.event("task.started", "task", tid,
                    {"stage_id": sid, "name": task.name, "implementing_class": task.implementing_class})
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)
