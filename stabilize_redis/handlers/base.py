"""What every handler shares: the read -> decide -> commit loop and small decision helpers.

A handler reads only the fields it needs, decides in plain Python, and commits one
``Transition``. On CONFLICT (something it read changed) it reads and decides again; user task
code is never re-run for a conflict. DUPLICATE means the message was already processed.

A message naming a workflow, stage or task that does not exist is not a no-op to ack in
silence: the decision raises ``UnknownTarget`` (through ``known_workflow``/``known_stage``/
``known_task``) and the message goes to the dead-letter stream with reason ``unknown_target``
and the missing id - unless its id was already processed (a redelivered duplicate, acked).
A target that exists but has moved on (a finished stage, a task no longer running) stays a
silent no-op.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery, RedisBackend
from stabilize_redis.config import EngineConfig
from stabilize_redis.decisions.common import UnknownTarget
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.handlers.stabilize_handler import StabilizeHandler  # stabilize imports it from here
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.queue.messages import Message
from stabilize_redis.tasks.registry import TaskRegistry

S = TypeVar("S")
"""What a handler reads before deciding (``Handler.transact``)."""

log = logging.getLogger("stabilize_redis.handlers")


@dataclass
class HandlerContext:
    """The narrow interface handlers reach: state access, task registry, settings, and the
    cancellation tokens of tasks running in this process."""

    backend: RedisBackend
    registry: TaskRegistry
    config: EngineConfig
    tokens: TokenRegistry = field(default_factory=TokenRegistry)


def run_after_commit(transition: Transition) -> None:
    """The committed ``transition``'s after-commit actions (user hooks); a failing one is logged."""
    for action in transition.after_commit:
        try:
            action()
        except Exception:  # noqa: BLE001 - user hook
            log.exception("after-commit hook of workflow %s failed", transition.workflow_id)


class Handler(ABC):
    """One handler per message type."""

    message_type: ClassVar[type[Message]]

    def __init__(self, ctx: HandlerContext | Any, repository: Any = None, *_: Any, **__: Any) -> None:
        """``Handler(ctx)``; or stabilize's ``Handler(queue, repository, ...)``: the queue's
        backend, an empty task registry and the default EngineConfig (the other stabilize
        arguments - retry delay, handler config - do not apply to the engine's handlers)."""
        if not isinstance(ctx, HandlerContext):
            ctx = HandlerContext(backend=ctx.backend, registry=TaskRegistry(), config=EngineConfig())
        self.ctx = ctx
        self.backend = ctx.backend
        self.config = ctx.config

    @abstractmethod
    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        """Process one message (``delivery``: the stream entry it came from, None when called
        directly); returns the commit outcome."""

    def transact(
        self,
        message: Message,
        delivery: Delivery | None,
        read: Callable[[], S],
        decide: Callable[[S], Transition],
    ) -> str:
        """Read, decide and commit until the commit is not a CONFLICT (bounded). A decision
        that raises UnknownTarget dead-letters the message instead (``unknown_target``). What
        is read is a Snapshot for a workflow's handlers, a versioned field for a record's
        (``handlers.records``)."""
        for attempt in range(self.config.conflict_retries):
            snap = read()
            try:
                transition = decide(snap)
            except UnknownTarget as e:
                return self.unknown_target(message, delivery, e)
            outcome = self.backend.commit(transition, message, delivery)
            if outcome == CommitOutcome.OK:
                run_after_commit(transition)
            if outcome != CommitOutcome.CONFLICT:
                return outcome
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConcurrencyError(f"{type(message).__name__} kept conflicting for {message.workflow_id}")

    def unknown_target(self, message: Message, delivery: Delivery | None, error: UnknownTarget) -> str:
        """Dead-letter a message whose target does not exist (reason ``unknown_target``), in
        the dead-letter stream of the partition it was read from, atomically with its ack; a
        message already processed is only acked. While the namespace marker is missing (its
        Redis data was lost) the message is acked as a no-op instead. Returns 'dead', or the
        commit outcome of the ack."""
        text = f"{type(message).__name__}: {error}"
        if not self.backend.client.exists(self.backend.keys.meta):
            # The namespace's data is gone (workers stop, a restore re-derives every message):
            # this message is a casualty of that, not a bad message. Ack it as before.
            log.warning("namespace data gone; acking %s %s: %s", type(message).__name__, message.message_id, text)
            return self.backend.commit(Transition(message.workflow_id), message, delivery)
        if delivery is None:  # handled directly, not read from a stream: nothing to ack
            delivery = Delivery(self.backend.part(message.workflow_id).index, "", message.message_id or "",
                                message.encode().encode())
        if not self.backend.dead_letter(delivery, "unknown_target", text, unless_processed=True,
                                        workflow_id=message.workflow_id):
            return CommitOutcome.DUPLICATE
        log.warning("dead-lettered %s %s: %s", type(message).__name__, message.message_id, text)
        return "dead"

    @property
    def message_name(self) -> str:
        return self.message_type.__name__


__all__ = ["Handler", "HandlerContext", "StabilizeHandler", "UnknownTarget", "run_after_commit"]
