"""Concurrency limits (``decisions.concurrency``): the handlers of the limit record and the
limited workflow's answer.

``LimitAcquire``, ``LimitRelease`` and ``StartWaitingWorkflows`` are handled in the limit's
partition: each reads the limit record (one versioned field of its own hash, never
checkpointed: see below), decides, and commits the new record with its answers - one
``LimitDecision`` per workflow concerned, through the outbox when that workflow lives in another
partition - atomically with the message's ack and dedup mark (a CONFLICT decides again).
``LimitDecision`` is handled in the workflow's partition: ``granted`` starts it (what
StartWorkflow does), unless it ended or was canceled meanwhile, when the slot is handed back
(``LimitRelease``); ``buffered`` shows it BUFFERED; ``refused`` cancels it with the reason.

The limit record lives in Redis only; a restore from PostgreSQL does not rebuild it (the
README says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import UnknownTarget, attach, known_workflow, now_ms
from stabilize_redis.decisions.concurrency import (
    BUFFERED,
    GRANTED,
    REFUSED,
    LimitState,
    limit_id,
    release_for,
)
from stabilize_redis.decisions.layout import meta_extras
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.records import RecordHandler
from stabilize_redis.handlers.start_workflow import start_now
from stabilize_redis.keys import LIMIT_STATE_FIELD
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import (
    CancelWorkflow,
    LimitAcquire,
    LimitDecision,
    LimitRelease,
    Message,
    StartWaitingWorkflows,
)

log = logging.getLogger("stabilize_redis.handlers")


class _LimitHandler(RecordHandler):
    """Read-decide-commit over one limit record (``handlers.records``)."""

    def over_limit(self, message: Message, delivery: Delivery | None, config_id: str,
                   decide: Callable[[LimitState], list[LimitDecision]]) -> str:
        def step(raw: bytes | None) -> tuple[str, Sequence[Message]]:
            state = LimitState.decode(raw)
            answers = decide(state)
            return state.encode(), answers

        routing = limit_id(config_id)
        return self.over_record(message, delivery, routing, self.backend.part(routing).limit(config_id),
                                LIMIT_STATE_FIELD, step)


def _answer(workflow_id: str, decision: str, config_id: str, maximum: int, execution_type: str) -> LimitDecision:
    return LimitDecision(execution_id=workflow_id, execution_type=execution_type, decision=decision,
                         pipeline_config_id=config_id, maximum=maximum)


class LimitAcquireHandler(_LimitHandler):
    message_type = LimitAcquire

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, LimitAcquire)

        def decide(state: LimitState) -> list[LimitDecision]:
            decision = state.acquire(message.requester_id, message.maximum, message.keep_waiting)
            return [_answer(message.requester_id, decision, message.pipeline_config_id, message.maximum,
                            message.execution_type)]

        return self.over_limit(message, delivery, message.pipeline_config_id, decide)


class LimitReleaseHandler(_LimitHandler):
    message_type = LimitRelease

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, LimitRelease)

        def decide(state: LimitState) -> list[LimitDecision]:
            return [_answer(w, GRANTED, message.pipeline_config_id, state.maximum, message.execution_type)
                    for w in state.release(message.requester_id)]

        return self.over_limit(message, delivery, message.pipeline_config_id, decide)


class StartWaitingWorkflowsHandler(_LimitHandler):
    message_type = StartWaitingWorkflows

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartWaitingWorkflows)

        def decide(state: LimitState) -> list[LimitDecision]:
            granted = [_answer(w, GRANTED, message.pipeline_config_id, state.maximum, "PIPELINE") for w in state.fill()]
            refused = [_answer(w, REFUSED, message.pipeline_config_id, state.maximum, "PIPELINE")
                       for w in (state.purge() if message.purge_queue else [])]
            return granted + refused

        return self.over_limit(message, delivery, message.pipeline_config_id, decide)


class LimitDecisionHandler(Handler):
    message_type = LimitDecision

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, LimitDecision)
        wid = message.execution_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            meta = known_workflow(snap)
            wf = attach(snap)
            waiting = wf.status in (WorkflowStatus.NOT_STARTED, WorkflowStatus.BUFFERED) and not wf.is_canceled
            if message.decision == GRANTED:
                if waiting:
                    start_now(t, wf, meta, snap.meta_version, kw)
                elif wf.status.is_complete or wf.is_canceled:  # it no longer needs the slot
                    t.push(release_for(message.pipeline_config_id, wid, message.execution_type))
            elif message.decision == BUFFERED and wf.status == WorkflowStatus.NOT_STARTED and not wf.is_canceled:
                wf.status = WorkflowStatus.BUFFERED
                t.write_meta(wf, meta_extras(meta), snap.meta_version)
                t.event("workflow.buffered", "workflow", wid, {"pipeline_config_id": message.pipeline_config_id,
                                                              "max_concurrent_executions": message.maximum,
                                                              "at": now_ms()})
            elif message.decision == REFUSED and waiting:
                t.push(CancelWorkflow(user="system", reason=(
                    f"over the concurrency limit of {message.maximum} for pipeline config "
                    f"{message.pipeline_config_id!r} (keep_waiting_pipelines is off)"), **kw))
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid), decide)

    def unknown_target(self, message: Message, delivery: Delivery | None, error: UnknownTarget) -> str:
        """A slot granted to a workflow that left Redis (expired, evicted, deleted) goes back to
        the limit instead of the dead letters, so it is not leaked."""
        assert isinstance(message, LimitDecision)
        t = Transition(message.execution_id)
        if message.decision == GRANTED:
            t.push(release_for(message.pipeline_config_id, message.execution_id, message.execution_type))
        return self.backend.commit(t, message, delivery)
