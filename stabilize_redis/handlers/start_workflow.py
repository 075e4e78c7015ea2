"""StartWorkflow: NOT_STARTED -> RUNNING and start every initial stage.

A limited workflow (``decisions.concurrency``: ``is_limit_concurrent`` with a
``pipeline_config_id`` and ``max_concurrent_executions > 0``) asks its limit for a slot instead
(``LimitAcquire``, through the outbox); the answer (``LimitDecision``) starts it, shows it
BUFFERED, or cancels it (``handlers.concurrency_limit``). A redelivered StartWorkflow asks again,
which the limit answers as before.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import attach, known_workflow, now_ms
from stabilize_redis.decisions.concurrency import acquire_message, is_limited
from stabilize_redis.decisions.layout import meta_extras
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import CancelWorkflow, Message, StartStage, StartWorkflow


def start_now(t: Transition, wf: Workflow, meta: dict[str, Any], meta_version: int, kw: dict[str, Any]) -> None:
    """``wf`` (NOT_STARTED or BUFFERED) RUNNING with its initial stages sent StartStage, into
    ``t``; TERMINAL when it has none."""
    initial = meta["initial"]
    if not initial:
        wf.status = WorkflowStatus.TERMINAL
        wf.end_time = now_ms()
        t.write_meta(wf, meta_extras(meta), meta_version)
        t.event("workflow.failed", "workflow", wf.id, {"reason": "no initial stages"})
        return
    wf.status = WorkflowStatus.RUNNING
    wf.start_time = now_ms()
    t.write_meta(wf, meta_extras(meta), meta_version)
    for sid in initial:
        t.push(StartStage(stage_id=sid, **kw))
    t.event("workflow.started", "workflow", wf.id,
            {"application": wf.application, "name": wf.name, "start_time": wf.start_time})


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
            if is_limited(wf):
                t.push(acquire_message(wf, message.execution_type))
                return t
            start_now(t, wf, meta, snap.meta_version, kw)
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid), decide)
