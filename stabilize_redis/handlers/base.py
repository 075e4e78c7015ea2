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
from typing import Any, ClassVar

from stabilize_redis.backend.codec import StageRecord, meta_from_dict
from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery, RedisBackend, Snapshot
from stabilize_redis.backend.transition import Transition
from stabilize_redis.config import EngineConfig
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.models.task import TaskExecution
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


class UnknownTarget(Exception):
    """Raised by a decision: the message names a workflow, stage or task that does not exist.
    The text names it: 'workflow W', 'stage S of workflow W' or 'task T of stage S of workflow W'."""


def known_workflow(snap: Snapshot) -> dict[str, Any]:
    """The workflow meta read into ``snap``; UnknownTarget if the workflow does not exist."""
    if snap.meta is None:
        raise UnknownTarget(f"workflow {snap.workflow_id} does not exist")
    return snap.meta


def known_stage(snap: Snapshot, stage_id: str) -> StageRecord:
    """The record of ``stage_id`` read into ``snap``; UnknownTarget if the workflow or the stage
    does not exist (the snapshot must have been read with ``stage_id``)."""
    known_workflow(snap)
    rec = snap.stages.get(stage_id)
    if rec is None:
        raise UnknownTarget(f"stage {stage_id} of workflow {snap.workflow_id} does not exist")
    return rec


def known_task(snap: Snapshot, rec: StageRecord, task_id: str) -> TaskExecution:
    """The task ``task_id`` of the stage ``rec``; UnknownTarget if the stage has no such task."""
    task = next((t for t in rec.stage.tasks if t.id == task_id), None)
    if task is None:
        raise UnknownTarget(f"task {task_id} of stage {rec.id} of workflow {snap.workflow_id} does not exist")
    return task


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
        read: Callable[[], Snapshot],
        decide: Callable[[Snapshot], Transition],
    ) -> str:
        """Read, decide and commit until the commit is not a CONFLICT (bounded). A decision
        that raises UnknownTarget dead-letters the message instead (``unknown_target``)."""
        for attempt in range(self.config.conflict_retries):
            snap = read()
            try:
                transition = decide(snap)
            except UnknownTarget as e:
                return self.unknown_target(message, delivery, e)
            outcome = self.backend.commit(transition, message, delivery)
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
        if not self.backend.dead_letter(delivery, "unknown_target", text, unless_processed=True):
            return CommitOutcome.DUPLICATE
        log.warning("dead-lettered %s %s: %s", type(message).__name__, message.message_id, text)
        return "dead"

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
