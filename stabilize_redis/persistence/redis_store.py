"""``RedisWorkflowStore``: stabilize's WorkflowStore API over the namespace's workflow hashes.

Reads of whole workflows (``retrieve``) are for callers, never for the engine's hot path.

With a snapshot store (``snapshots=``, ``dsn=`` or STABILIZE_POSTGRES_DSN) reads fall back to
PostgreSQL: ``retrieve``, ``exists``, ``retrieve_execution_summary`` and ``events`` find
workflows evicted from Redis, and listing (``search``, ``retrieve_by_application``,
``retrieve_by_pipeline_config_id``) is served from Postgres, as of the last checkpoint (running
workflows may be up to the checkpoint interval behind). Without one, listing scans Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_redis.backend.layout import lay_out, meta_extras, workflow_from_hash
from stabilize_redis.backend.redis_backend import RedisBackend, Snapshot
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.backend.transition import Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.handlers.base import attach, now_ms
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import PausedDetails, Workflow

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotStore


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
    """Workflows of one namespace; pairs with a ``RedisQueue`` of the same URL and namespace.

    ``snapshots``: the namespace's SnapshotStore; by default one is built from ``dsn``/``schema``
    or STABILIZE_POSTGRES_DSN / STABILIZE_POSTGRES_SCHEMA (``dsn=""``: none)."""

    snapshots: SnapshotStore | None = None

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 partitions: int | None = None, create_tables: bool = True,
                 snapshots: SnapshotStore | None = None, dsn: str | None = None,
                 schema: str | None = None) -> None:
        self.backend: RedisBackend = backend_for(url, namespace, partitions)
        if snapshots is None:
            from stabilize_redis.durability.pg import configured_snapshot_store

            snapshots = configured_snapshot_store(dsn, schema, self.backend.target.namespace)
        self.snapshots = snapshots

    @property
    def connection_string(self) -> str:
        return self.backend.target.url or f"embedded://{self.backend.target.namespace}"

    # -- workflows ---------------------------------------------------------------------------

    def store(self, execution: Workflow) -> None:
        """Store a new workflow; raises WorkflowExistsError if its id exists."""
        if self.backend.submit(execution.id, lay_out(execution), None, "new", created_event(execution)) == 0:
            raise WorkflowExistsError(f"workflow {execution.id} already exists")

    def retrieve(self, execution_id: str) -> Workflow:
        """The workflow from Redis, else (evicted) from its Postgres snapshot."""
        wf = workflow_from_hash(self.backend.load_hash(execution_id))
        if wf is None:
            wf = self._from_snapshot(execution_id)
        if wf is None:
            raise WorkflowNotFoundError(execution_id)
        return wf

    def _from_snapshot(self, execution_id: str) -> Workflow | None:
        if self.snapshots is None:
            return None
        row = self.snapshots.get(execution_id)
        return row.workflow() if row is not None else None

    def exists(self, execution_id: str) -> bool:
        if self.backend.client.exists(self.backend.part(execution_id).workflow(execution_id)):
            return True
        return self.snapshots is not None and self.snapshots.get(execution_id) is not None

    def retrieve_execution_summary(self, execution_id: str) -> Workflow:
        snap = self.backend.read(execution_id)
        if snap.meta is None:
            wf = self._from_snapshot(execution_id)
            if wf is None:
                raise WorkflowNotFoundError(execution_id)
            return wf
        return attach(snap)

    def delete(self, execution_id: str) -> None:
        part = self.backend.part(execution_id)
        pipe = self.backend.client.pipeline(transaction=True)
        pipe.delete(part.workflow(execution_id), part.events(execution_id))
        pipe.zrem(part.workflows, execution_id)
        pipe.zrem(part.dirty, execution_id)
        pipe.execute()
        if self.snapshots is not None:
            self.snapshots.delete(execution_id)

    def retrieve_by_application(self, application: str, criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return iter(self._search_criteria(criteria, application=application))

    def retrieve_by_pipeline_config_id(self, pipeline_config_id: str,
                                       criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return iter(self._search_criteria(criteria, pipeline_config_id=pipeline_config_id))

    def _search_criteria(self, criteria: WorkflowCriteria | None, **filters: Any) -> list[Workflow]:
        criteria = criteria or WorkflowCriteria()
        return self.search(**filters, statuses=criteria.statuses, start_after=criteria.start_time_after,
                           start_before=criteria.start_time_before, limit=criteria.page_size)

    def search(self, application: str | None = None, pipeline_config_id: str | None = None,
               statuses: Iterable[WorkflowStatus | str] | None = None, start_after: int | None = None,
               start_before: int | None = None, limit: int = 20, offset: int = 0) -> list[Workflow]:
        """Workflows matching every given filter, newest first (not started first, then by start
        time descending), paged by ``limit``/``offset``. ``start_after`` (inclusive) and
        ``start_before`` (exclusive) bound the start time, epoch ms. Served from Postgres when a
        snapshot store is configured, else by scanning Redis."""
        names = sorted({s.name if isinstance(s, WorkflowStatus) else str(s) for s in statuses or ()}) or None
        if self.snapshots is not None:
            rows = self.snapshots.list(application=application, pipeline_config_id=pipeline_config_id,
                                       statuses=names, start_after=start_after, start_before=start_before,
                                       limit=limit, offset=offset)
            return [row.workflow() for row in rows]
        found: list[Workflow] = []
        for wid in self.backend.workflow_ids():
            wf = workflow_from_hash(self.backend.load_hash(wid))
            if wf is None or (application is not None and wf.application != application):
                continue
            if pipeline_config_id is not None and wf.pipeline_config_id != pipeline_config_id:
                continue
            if names and wf.status.name not in names:
                continue
            if start_after is not None and (wf.start_time is None or wf.start_time < start_after):
                continue
            if start_before is not None and (wf.start_time is None or wf.start_time >= start_before):
                continue
            found.append(wf)
        found.sort(key=lambda w: (w.start_time is None, w.start_time or 0, w.id), reverse=True)
        return found[offset: offset + limit]

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
        """The workflow's audit events, oldest first (from Postgres once evicted from Redis)."""
        events: list[dict[str, object]] = list(self.backend.events(execution_id))
        if not events and self.snapshots is not None:
            events = list(self.snapshots.events(execution_id))
        return events

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
