"""``Orchestrator``: start, cancel, restart stages of and unpause workflows, as stabilize's does."""

from __future__ import annotations

from typing import Any, ClassVar

from stabilize_redis.decisions.layout import lay_out
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.persistence.redis_store import (
    RedisWorkflowStore,
    created_event,
    stored,
    validate_for_store,
)
from stabilize_redis.queue.messages import (
    CancelWorkflow,
    RestartStage,
    ResumeStage,
    StartWorkflow,
    new_message_id,
)
from stabilize_redis.queue.redis_queue import RedisQueue


class Orchestrator:
    """Submits workflows to a queue (and store). The most recently built one is ``get_instance()``."""

    _instance: ClassVar[Orchestrator | None] = None

    def __init__(self, queue: RedisQueue, store: RedisWorkflowStore | None = None) -> None:
        self.queue = queue
        self.store = store
        Orchestrator._instance = self

    @classmethod
    def get_instance(cls) -> Orchestrator | None:
        return cls._instance

    def start(self, execution: Workflow, handler_config: Any = None) -> None:
        """Enqueue StartWorkflow; with a store, store the workflow first if it is not stored
        yet — atomically with the enqueue (a workflow whose graph cannot run is refused with
        WorkflowValidationError, nothing written). StartWorkflow starts only a NOT_STARTED
        workflow: one paused before it started begins when it is resumed (``store.resume``)."""
        start = StartWorkflow(execution_id=execution.id, execution_type=execution.type.name,
                              message_id=new_message_id())
        if self.store is None:
            self.queue.push(start)
            return
        validate_for_store(execution)
        code = self.store.backend.submit(execution.id, lay_out(execution), start, "start", created_event(execution))
        if code == 1:
            stored(execution)
            self.store.locator.learn(execution.id, [s.id for s in execution.stages])

    def cancel(self, execution: Workflow, user: str = "", reason: str = "") -> None:
        self.queue.push(CancelWorkflow(execution_id=execution.id, execution_type=execution.type.name,
                                       user=user, reason=reason))

    def restart_stage(self, execution: Workflow, stage_id: str) -> None:
        """Enqueue a RestartStage for the stage ``stage_id`` of ``execution``: a finished stage
        runs again with its downstream scope and a finished workflow reopens (see
        ``handlers.restart_stage`` for what is refused). Returns once the message is enqueued."""
        self.queue.push(RestartStage(execution_id=execution.id, execution_type=execution.type.name,
                                     stage_id=stage_id, message_id=new_message_id()))

    def restart(self, execution: Workflow, stage_id: str) -> None:
        """stabilize's name for :meth:`restart_stage`."""
        self.restart_stage(execution, stage_id)

    def unpause(self, execution: Workflow) -> None:
        """Resume a paused workflow: the workflow record goes back to RUNNING (so tasks not yet
        paused keep running) and every PAUSED stage gets a ResumeStage."""
        store = self.store or RedisWorkflowStore.on_backend(self.queue.backend)
        store.resume(execution.id)
        current = store.retrieve(execution.id)
        for stage in current.stages:
            if stage.status == WorkflowStatus.PAUSED:
                self.queue.push(ResumeStage(execution_id=execution.id, execution_type=execution.type.name,
                                            stage_id=stage.id))

    def get_execution(self, execution_id: str) -> Workflow | None:
        if self.store is None:
            return None
        try:
            return self.store.retrieve(execution_id)
        except Exception:  # noqa: BLE001
            return None
