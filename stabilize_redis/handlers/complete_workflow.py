"""CompleteWorkflow: decide the workflow's final status from its top-level stages.

Released once by the last top-level stage to finish (or sent by a failing stage), so reading
every stage here costs once per workflow, not per transition.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.layout import meta_extras
from stabilize_redis.backend.redis_backend import Delivery, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.handlers.base import Handler, attach, known_workflow, now_ms
from stabilize_redis.keys import stage_field
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.queue.messages import CancelStage, CompleteWorkflow, Message


def final_status(statuses: list[WorkflowStatus], complete_other_branches_then_fail: bool) -> WorkflowStatus | None:
    """stabilize's rule over top-level stage statuses; None means not decided yet."""
    if all(s in CONTINUABLE_STATUSES for s in statuses):
        return WorkflowStatus.SUCCEEDED
    if WorkflowStatus.TERMINAL in statuses:
        return WorkflowStatus.TERMINAL
    if WorkflowStatus.CANCELED in statuses:
        return WorkflowStatus.CANCELED
    if WorkflowStatus.STOPPED in statuses and all(s.is_complete for s in statuses):
        return WorkflowStatus.TERMINAL if complete_other_branches_then_fail else WorkflowStatus.SUCCEEDED
    return None


class CompleteWorkflowHandler(Handler):
    message_type = CompleteWorkflow

    def handle(self, message: Message, delivery: Delivery | None) -> str:
        assert isinstance(message, CompleteWorkflow)
        wid = message.execution_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def read() -> Snapshot:
            return self.backend.read(wid, self.backend.stage_ids(wid))

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            meta = known_workflow(snap)
            wf = attach(snap)
            if wf.status.is_complete:
                return t
            top = [r for r in snap.stages.values() if r.stage.parent_stage_id is None]
            for rec in snap.stages.values():
                t.check(stage_field(rec.id), rec.version)
            statuses = [r.stage.status for r in top]
            status = final_status(statuses, bool(wf.context.get("completeOtherBranchesThenFail")))
            if status is None and wf.is_canceled and not any(s == WorkflowStatus.RUNNING for s in statuses):
                status = WorkflowStatus.CANCELED
            if status is None:
                if message.retry_count >= self.config.max_stage_wait_retries:
                    status = WorkflowStatus.TERMINAL
                else:
                    t.push(CompleteWorkflow(retry_count=message.retry_count + 1, **kw),
                           self.config.stage_wait_retry_s)
                    return t
            wf.status = status
            wf.end_time = now_ms()
            t.write_meta(wf, meta_extras(meta), snap.meta_version)
            if status != WorkflowStatus.SUCCEEDED:
                for rec in top:
                    if rec.stage.status == WorkflowStatus.RUNNING:
                        t.push(CancelStage(stage_id=rec.id, **kw))
            kind = {WorkflowStatus.SUCCEEDED: "workflow.completed",
                    WorkflowStatus.CANCELED: "workflow.canceled"}.get(status, "workflow.failed")
            t.event(kind, "workflow", wid, {"status": status.name, "end_time": wf.end_time,
                                            "duration_ms": wf.end_time - (wf.start_time or wf.end_time)})
            return t

        return self.transact(message, delivery, read, decide)
