"""StartTask: NOT_STARTED -> RUNNING and ask for it to run (or skip a disabled SkippableTask)."""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import begin_task, stale
from stabilize_redis.decisions.common import attach, known_stage, known_task
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import Message, StartTask


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
            begin_task(t, rec, task, kw)
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)
