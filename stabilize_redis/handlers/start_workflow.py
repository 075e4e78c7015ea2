"""StartWorkflow: NOT_STARTED -> RUNNING and start every initial stage."""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import attach, known_workflow, now_ms
from stabilize_redis.decisions.layout import meta_extras
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CancelWorkflow, Message, StartStage, StartWorkflow


class StartWorkflowHandler(Handler):
    message_type = StartWorkflow

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartWorkflow)
        wid = message.execution_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            meta = known_workflow(snap)
            wf = attach(snap)
            if wf.status != WorkflowStatus.NOT_STARTED or wf.is_canceled:
                return t
            if wf.start_time_expiry is not None and now_ms() > wf.start_time_expiry:
                t.push(CancelWorkflow(user="system", reason="start time expired", **kw))
                return t
            initial = meta["initial"]
            if not initial:
                wf.status = WorkflowStatus.TERMINAL
                wf.end_time = now_ms()
                t.write_meta(wf, meta_extras(meta), snap.meta_version)
                t.event("workflow.failed", "workflow", wid, {"reason": "no initial stages"})
                return t
            wf.status = WorkflowStatus.RUNNING
            wf.start_time = now_ms()
            t.write_meta(wf, meta_extras(meta), snap.meta_version)
            for sid in initial:
                t.push(StartStage(stage_id=sid, **kw))
            t.event("workflow.started", "workflow", wid,
                    {"application": wf.application, "name": wf.name, "start_time": wf.start_time})
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid), decide)
