"""A small client for services that push workflows: ``connect(url, namespace)``."""

from __future__ import annotations

import time

from stabilize_redis.backend.layout import lay_out
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.persistence.redis_store import RedisWorkflowStore, created_event
from stabilize_redis.queue.messages import CancelWorkflow, StartWorkflow, new_message_id
from stabilize_redis.queue.redis_queue import RedisQueue
from stabilize_redis.validation import validate_workflow


class Client:
    """Submit, read, wait for and cancel workflows of one namespace."""

    def __init__(self, url: str | None = None, namespace: str | None = None) -> None:
        self.backend = backend_for(url, namespace)
        self.store = RedisWorkflowStore.__new__(RedisWorkflowStore)
        self.store.backend = self.backend
        self.queue = RedisQueue.__new__(RedisQueue)
        self.queue.backend = self.backend

    def submit(self, workflow: Workflow) -> str:
        """Validate, store and start a workflow in one atomic step; returns its id.

        Submitting the same workflow id again starts nothing new (StartWorkflow only acts on a
        NOT_STARTED workflow), so a retried submit is harmless."""
        validate_workflow(workflow)
        start = StartWorkflow(execution_id=workflow.id, execution_type=workflow.type.name,
                              message_id=new_message_id())
        self.backend.submit(workflow.id, lay_out(workflow), start, "start", created_event(workflow))
        return workflow.id

    def get(self, workflow_id: str) -> Workflow:
        """The workflow as stored now; raises WorkflowNotFoundError."""
        return self.store.retrieve(workflow_id)

    def status(self, workflow_id: str) -> str:
        return self.store.retrieve_execution_summary(workflow_id).status.name

    def wait(self, workflow_id: str, timeout: float = 60.0) -> Workflow:
        """Block until the workflow is complete or PAUSED and return it; raises TimeoutError.
        Wakes on the workflow's event stream rather than polling (on real Redis)."""
        deadline = time.monotonic() + timeout
        events_key = self.backend.part(workflow_id).events(workflow_id)
        embedded = self.backend.target.embedded
        newest = [] if embedded else self.backend.client.xrevrange(events_key, count=1)
        last = newest[0][0].decode() if newest else "0-0"
        while True:
            summary = self.store.retrieve_execution_summary(workflow_id)
            if summary.status.is_complete or summary.status == WorkflowStatus.PAUSED:
                return self.get(workflow_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"workflow {workflow_id} still {summary.status.name} after {timeout}s")
            if embedded:
                time.sleep(min(0.01, remaining))
                continue
            reply = self.backend.client.xread({events_key: last}, count=100,
                                              block=max(1, int(min(remaining, 1.0) * 1000)))
            for _, entries in reply or []:
                if entries:
                    last = entries[-1][0].decode()

    def cancel(self, workflow_id: str, user: str = "", reason: str = "") -> None:
        self.queue.push(CancelWorkflow(execution_id=workflow_id, user=user, reason=reason))

    def events(self, workflow_id: str) -> list[dict[str, object]]:
        return self.backend.events(workflow_id)


def connect(url: str | None = None, namespace: str | None = None) -> Client:
    """A client for ``url`` (or ``STABILIZE_REDIS_URL``; None = embedded) and ``namespace``
    (or ``STABILIZE_NAMESPACE``, default ``stz``)."""
    return Client(url, namespace)
