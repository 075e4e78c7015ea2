"""``RedisWorkflowStore``: stabilize's WorkflowStore API over the namespace's workflow hashes.

Reads of whole workflows (``retrieve``) are for callers, never for the engine's hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from stabilize_redis.backend.layout import lay_out, meta_extras, workflow_from_hash
from stabilize_redis.backend.redis_backend import RedisBackend, Snapshot
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.backend.transition import Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.handlers.base import attach, now_ms
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import PausedDetails, Workflow


class WorkflowNotFoundError(Exception):
    """No workflow with this id in the namespace."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"workflow {execution_id} not found")
        self.execution_id = execution_id


class WorkflowExistsError(Exception):
    """``store`` was asked to store a workflow id that already exists."""


@dataclass
class WorkflowCriteria:
    page_size: int = 20
    statuses: set[WorkflowStatus] | None = None
    start_time_before: int | None = None
    start_time_after: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


class RedisWorkflowStore:
    """Workflows of one namespace; pairs with a ``RedisQueue`` of the same URL and namespace."""

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 partitions: int | None = None, create_tables: bool = True) -> None:
        self.backend: RedisBackend = backend_for(url, namespace, partitions)

    @property
    def connection_string(self) -> str:
        return self.backend.target.url or f"embedded://{self.backend.target.namespace}"

    # -- workflows ---------------------------------------------------------------------------

    def store(self, execution: Workflow) -> None:
        """Store a new workflow; raises WorkflowExistsError if its id exists."""
        if self.backend.submit(execution.id, lay_out(execution), None, "new", created_event(execution)) == 0:
            raise WorkflowExistsError(f"workflow {execution.id} already exists")

    def retrieve(self, execution_id: str) -> Workflow:
        wf = workflow_from_hash(self.backend.load_hash(execution_id))
        if wf is None:
            raise WorkflowNotFoundError(execution_id)
        return wf

    def exists(self, execution_id: str) -> bool:
        return bool(self.backend.client.exists(self.backend.part(execution_id).workflow(execution_id)))

    def retrieve_execution_summary(self, execution_id: str) -> Workflow:
        snap = self.backend.read(execution_id)
        if snap.meta is None:
            raise WorkflowNotFoundError(execution_id)
        return attach(snap)

    def delete(self, execution_id: str) -> None:
        part = self.backend.part(execution_id)
        pipe = self.backend.client.pipeline(transaction=True)
        pipe.delete(part.workflow(execution_id), part.events(execution_id))
        pipe.zrem(part.workflows, execution_id)
        pipe.zrem(part.dirty, execution_id)
        pipe.execute()

    def retrieve_by_application(self, application: str, criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return self._list(lambda wf: wf.application == application, criteria)

    def retrieve_by_pipeline_config_id(self, pipeline_config_id: str,
                                       criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return self._list(lambda wf: wf.pipeline_config_id == pipeline_config_id, criteria)

    def get_all_pending_workflows(self, criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        criteria = criteria or WorkflowCriteria(statuses={WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED})
        return self._list(lambda wf: True, criteria)

    def _list(self, keep, criteria: WorkflowCriteria | None) -> Iterator[Workflow]:  # type: ignore[no-untyped-def]
        criteria = criteria or WorkflowCriteria()
        found: list[Workflow] = []
        for wid in self.backend.workflow_ids():
            wf = workflow_from_hash(self.backend.load_hash(wid))
            if wf is None or not keep(wf):
                continue
            if criteria.statuses and wf.status not in criteria.statuses:
                continue
            found.append(wf)
        found.sort(key=lambda w: w.start_time or 0, reverse=True)
        return iter(found[: criteria.page_size])

    # -- status changes from outside the engine ----------------------------------------------

    def _update_meta(self, execution_id: str, change) -> None:  # type: ignore[no-untyped-def]
        for _ in range(10):
            snap: Snapshot = self.backend.read(execution_id)
            if snap.meta is None:
                raise WorkflowNotFoundError(execution_id)
            wf = attach(snap)
            if not change(wf):
                return
            t = Transition(execution_id)
            t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
            if self.backend.commit(t, None, None) == "ok":
                return
        raise ConcurrencyError(f"workflow {execution_id} kept changing")

    def update_status(self, execution: Workflow) -> None:
        def change(wf: Workflow) -> bool:
            wf.status, wf.start_time, wf.end_time = execution.status, execution.start_time, execution.end_time
            wf.is_canceled, wf.canceled_by = execution.is_canceled, execution.canceled_by
            wf.cancellation_reason, wf.paused = execution.cancellation_reason, execution.paused
            return True

        self._update_meta(execution.id, change)

    def pause(self, execution_id: str, paused_by: str) -> None:
        def change(wf: Workflow) -> bool:
            if wf.status != WorkflowStatus.RUNNING:
                return False
            wf.status = WorkflowStatus.PAUSED
            wf.paused = PausedDetails(paused_by=paused_by, pause_time=now_ms())
            return True

        self._update_meta(execution_id, change)

    def resume(self, execution_id: str) -> None:
        def change(wf: Workflow) -> bool:
            if wf.status != WorkflowStatus.PAUSED:
                return False
            wf.resume()
            return True

        self._update_meta(execution_id, change)

    def cancel(self, execution_id: str, canceled_by: str, reason: str) -> None:
        def change(wf: Workflow) -> bool:
            wf.is_canceled, wf.canceled_by, wf.cancellation_reason = True, canceled_by, reason
            return True

        self._update_meta(execution_id, change)

    def events(self, execution_id: str) -> list[dict[str, object]]:
        """The workflow's audit events, oldest first."""
        return self.backend.events(execution_id)

    def is_healthy(self) -> bool:
        try:
            return bool(self.backend.client.ping())
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        """Nothing to release: connections are pooled per process."""


def created_event(wf: Workflow) -> str:
    import json
    import time

    from ulid import ULID

    return json.dumps({
        "event_id": str(ULID()), "event_type": "workflow.created", "entity_type": "workflow",
        "entity_id": wf.id, "workflow_id": wf.id, "timestamp": int(time.time() * 1000),
        "data": {"application": wf.application, "name": wf.name, "type": wf.type.name,
                 "trigger_type": wf.trigger.type if wf.trigger else None, "stage_count": len(wf.stages),
                 "initial_stage_count": len([s for s in wf.stages if not s.requisite_stage_ref_ids
                                             and s.parent_stage_id is None])},
    }, separators=(",", ":"))
