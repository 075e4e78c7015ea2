"""Global mutex (``decisions.global_mutex``): the handlers of the lock record and of the grant.

``GlobalMutexAcquire`` and ``GlobalMutexRelease`` are handled in the lock's partition
(``handlers.records``); ``GlobalMutexGranted`` in the workflow's: a stage still waiting for that
run records the fence and gets its StartStage; otherwise the lock is handed straight back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import UnknownTarget, attach, known_stage
from stabilize_redis.decisions.global_mutex import (
    ACQUIRED_EVENT,
    GLOBAL_MUTEX,
    GLOBAL_MUTEX_ASKED,
    HOLDING,
    GlobalMutexState,
    Requester,
    grant_message,
    release_message,
)
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.records import RecordHandler
from stabilize_redis.keys import GLOBAL_MUTEX_STATE_FIELD, global_mutex_routing_id
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import (
    GlobalMutexAcquire,
    GlobalMutexGranted,
    GlobalMutexRelease,
    Message,
    StartStage,
)


def _lock_key(handler: Handler, key: str) -> tuple[str, str]:
    routing = global_mutex_routing_id(key)
    return routing, handler.backend.part(routing).global_mutex(key)


class GlobalMutexAcquireHandler(RecordHandler):
    message_type = GlobalMutexAcquire

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, GlobalMutexAcquire)
        who = Requester(message.requester_id, message.requester_stage_id, message.run)

        def decide(raw: bytes | None) -> tuple[str, Sequence[Message]]:
            state = GlobalMutexState.decode(raw)
            fence = state.acquire(who, message.fence_floor)
            answers = [] if fence is None else [grant_message(message.mutex_key, who, fence, message.execution_type)]
            return state.encode(), answers

        return self.over_record(message, delivery, *_lock_key(self, message.mutex_key), GLOBAL_MUTEX_STATE_FIELD,
                                decide)


class GlobalMutexReleaseHandler(RecordHandler):
    message_type = GlobalMutexRelease

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, GlobalMutexRelease)
        who = Requester(message.requester_id, message.requester_stage_id, message.run)

        def decide(raw: bytes | None) -> tuple[str, Sequence[Message]]:
            state = GlobalMutexState.decode(raw)
            nxt = state.release(who, message.fence)
            answers = [] if nxt is None else [grant_message(message.mutex_key, nxt[0], nxt[1], message.execution_type)]
            return state.encode(), answers

        return self.over_record(message, delivery, *_lock_key(self, message.mutex_key), GLOBAL_MUTEX_STATE_FIELD,
                                decide)


class GlobalMutexGrantedHandler(Handler):
    message_type = GlobalMutexGranted

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, GlobalMutexGranted)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            stage = rec.stage
            t.check_meta(snap.meta_version)
            held = stage.context.get(GLOBAL_MUTEX)
            if stage.status in HOLDING and rec.attempt == message.run and isinstance(held, dict) \
                    and held.get("run") == message.run:  # a holder re-registered (recovery): keep running
                if held.get("fence") != message.fence:
                    stage.context[GLOBAL_MUTEX] = {"fence": message.fence, "run": message.run}
                    t.write_stage(rec)
                return t
            waiting = (stage.status == WorkflowStatus.NOT_STARTED and rec.attempt == message.run
                       and stage.context.get(GLOBAL_MUTEX_ASKED) == message.run
                       and not wf.status.is_complete and not wf.is_canceled)
            if not waiting:  # another run now, or it will never start: the next waiter's turn
                t.push(release_message(message.mutex_key, Requester(wid, sid, message.run), message.fence,
                                       message.execution_type))
                return t
            stage.context.pop(GLOBAL_MUTEX_ASKED, None)
            stage.context[GLOBAL_MUTEX] = {"fence": message.fence, "run": message.run}
            t.write_stage(rec)
            t.push(StartStage(stage_id=sid, **kw))
            t.event(ACQUIRED_EVENT, "stage", sid, {"mutex_key": message.mutex_key, "fence": message.fence})
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)

    def unknown_target(self, message: Message, delivery: Delivery | None, error: UnknownTarget) -> str:
        """A grant to a workflow that left Redis (finished and expired, evicted, deleted) goes
        back to the lock instead of the dead letters, so the line moves on."""
        assert isinstance(message, GlobalMutexGranted)
        t = Transition(message.execution_id)
        t.push(release_message(message.mutex_key, Requester(message.execution_id, message.stage_id, message.run),
                               message.fence, message.execution_type))
        return self.backend.commit(t, message, delivery)
