"""SkipStage: a NOT_STARTED stage becomes SKIPPED and counts as done for its downstreams."""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import attach, known_stage, now_ms, stage_event_data
from stabilize_redis.decisions.flow import SETTLE_COUNTERS, release_after_completion
from stabilize_redis.decisions.milestones import wake_watchers
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import Message, SkipStage


class SkipStageHandler(Handler):
    message_type = SkipStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, SkipStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            if rec.stage.status != WorkflowStatus.NOT_STARTED or wf.status.is_complete:
                return t
            rec.stage.status = WorkflowStatus.SKIPPED
            rec.stage.end_time = now_ms()
            t.write_stage(rec)
            t.event("stage.skipped", "stage", sid, stage_event_data(rec, status="SKIPPED"))
            wake_watchers(t, rec, kw)  # a skipped milestone has passed its watchers
            release_after_completion(t, snap, rec, kw, registry=self.ctx.registry)
            return t

        return self.transact(message, delivery,
                             lambda: self.backend.read(wid, [sid], counters=SETTLE_COUNTERS,
                                                       with_downstreams=True), decide)
