"""What every handler shares: the read -> decide -> commit loop and small decision helpers.

A handler reads only the fields it needs, decides in plain Python, and commits one
``Transition``. On CONFLICT (something it read changed) it reads and decides again; user task
code is never re-run for a conflict. DUPLICATE means the message was already processed.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stabilize_redis.backend.codec import StageRecord, meta_from_dict
from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery, RedisBackend, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.config import EngineConfig
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import Message
from stabilize_redis.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize_redis.handlers")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class HandlerContext:
    """The narrow interface handlers reach: state access, task registry, settings, and the
    cancellation tokens of tasks running in this process."""

    backend: RedisBackend
    registry: TaskRegistry
    config: EngineConfig
    tokens: TokenRegistry = field(default_factory=TokenRegistry)


def attach(snap: Snapshot) -> Workflow:
    """A partial Workflow holding the stages read (strongly linked), for decisions and tasks."""
    assert snap.meta is not None
    wf = meta_from_dict(snap.meta)
    wf.stages = [rec.stage for rec in snap.stages.values()]
    for stage in wf.stages:
        stage.set_execution_strong(wf)
    return wf


class Handler(ABC):
    """One handler per message type."""

    message_type: ClassVar[type[Message]]

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.backend = ctx.backend
        self.config = ctx.config

    @abstractmethod
    def handle(self, message: Message, delivery: Delivery | None) -> str:
        """Process one message; returns the commit outcome."""

    def transact(
        self,
        message: Message,
        delivery: Delivery | None,
        read: Callable[[], Snapshot],
        decide: Callable[[Snapshot], Transition],
    ) -> str:
        """Read, decide and commit until the commit is not a CONFLICT (bounded)."""
        for attempt in range(self.config.conflict_retries):
            snap = read()
            outcome = self.backend.commit(decide(snap), message, delivery)
            if outcome != CommitOutcome.CONFLICT:
                return outcome
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConcurrencyError(f"{type(message).__name__} kept conflicting for {message.workflow_id}")

    @property
    def message_name(self) -> str:
        return self.message_type.__name__


def stage_of(snap: Snapshot, stage_id: str) -> StageRecord | None:
    return snap.stages.get(stage_id)


def stage_event_data(rec: StageRecord, **extra: Any) -> dict[str, Any]:
    s = rec.stage
    data: dict[str, Any] = {
        "ref_id": s.ref_id, "type": s.type, "name": s.name, "start_time": s.start_time,
        "is_synthetic": s.parent_stage_id is not None, "parent_stage_id": s.parent_stage_id,
        "task_count": len(s.tasks),
    }
    data.update(extra)
    return data
