"""``RedisWorkflowStore``: stabilize's WorkflowStore API over the namespace's workflow hashes.

Reads of whole workflows (``retrieve``) are for callers, never for the engine's hot path.

With a snapshot store (``snapshots=``, ``dsn=`` or STABILIZE_POSTGRES_DSN) reads fall back to
PostgreSQL: ``retrieve``, ``exists``, ``retrieve_execution_summary`` and ``events`` find
workflows evicted from Redis, and listing (``search``, ``retrieve_by_application``,
``retrieve_by_pipeline_config_id``) is served from Postgres, as of the last checkpoint (running
workflows may be up to the checkpoint interval behind). Without one, listing scans Redis.

Stage-level methods (``store_stage``, ``add_stage``, ``remove_stage``, ``retrieve_stage`` and the
graph queries) and ``transaction(queue)`` are stabilize's; their costs and guarantees are in
``decisions.stage_plans``, ``persistence.stage_reads`` and ``persistence.transaction``.
Message dedup (``is_message_processed``, ``mark_message_processed``) uses the engine's own
dedup records, which every commit checks: the partition's windowed record (marks of this API)
and the workflow's own record (messages the engine committed; found with ``execution_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.graph_reads import read_graph, read_removal
from stabilize_redis.backend.launch import created_event
from stabilize_redis.backend.redis_backend import CommitOutcome, RedisBackend
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.config import MemoryPolicy
from stabilize_redis.dag.topological import validate_stage_graph
from stabilize_redis.decisions.codec import unpack
from stabilize_redis.decisions.common import attach, now_ms
from stabilize_redis.decisions.layout import lay_out, meta_extras, workflow_from_hash
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.stage_plans import plan_remove, write_graph
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.keys import CHECKPOINT_EVENT_FIELD, META_FIELD, partition_of
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import PausedDetails, Workflow
from stabilize_redis.persistence.errors import StageNotFoundError, WorkflowExistsError, WorkflowNotFoundError
from stabilize_redis.persistence.stage_reads import (
    StageLocator,
    attach_records,
    merged_ancestor_outputs,
    neighbours,
    read_stage_with_family,
    synthetic_stages,
)
from stabilize_redis.persistence.transaction import RedisStoreTransaction
from stabilize_redis.queue.messages import CompleteWorkflow, StartStage
from stabilize_redis.validation import WorkflowValidationError

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotStore
    from stabilize_redis.queue.redis_queue import RedisQueue


def validate_for_store(execution: Workflow) -> None:
    """WorkflowValidationError unless the stage graph is sound: unique ref ids (stabilize's
    UNIQUE (execution, ref_id)), no self edge, no unknown requisite, no cycle."""
    try:
        validate_stage_graph(execution.stages)
    except ValueError as e:
        raise WorkflowValidationError(f"workflow {execution.name!r}: {e}") from None


def stored(execution: Workflow) -> None:
    """Give the caller's stages the version the store gave them (every field starts at 1)."""
    for stage in execution.stages:
        stage.version = 1


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
    conflict_retries = 8

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 partitions: int | None = None, create_tables: bool = True,
                 snapshots: SnapshotStore | None = None, dsn: str | None = None,
                 schema: str | None = None) -> None:
        self.backend: RedisBackend = backend_for(url, namespace, partitions)
        if snapshots is None:
            from stabilize_redis.durability.pg import configured_snapshot_store

            snapshots = configured_snapshot_store(dsn, schema, self.backend.target.namespace)
        if snapshots is not None:  # PostgreSQL keeps the history: no caps (``MemoryPolicy``)
            self.backend.memory = MemoryPolicy.from_env(durable=True)
        self.snapshots = snapshots

    @classmethod
    def on_backend(cls, backend: RedisBackend, snapshots: SnapshotStore | None = None) -> RedisWorkflowStore:
        """A store over an existing backend (the namespace a queue or client already uses)."""
        store = cls.__new__(cls)
        store.backend = backend
        store.snapshots = snapshots
        return store

    @property
    def locator(self) -> StageLocator:
        """Which workflow holds a stage id (``stage_reads.StageLocator``), made on first use."""
        locator: StageLocator | None = self.__dict__.get("_locator")
        if locator is None:
            locator = self.__dict__.setdefault("_locator", StageLocator(self.backend))
        return locator

    @property
    def connection_string(self) -> str:
        return self.backend.target.url or f"embedded://{self.backend.target.namespace}"

    # -- workflows ---------------------------------------------------------------------------

    def store(self, execution: Workflow) -> None:
        """Store a new workflow (not started). Raises WorkflowExistsError if its id exists and
        WorkflowValidationError for a graph that cannot run (``validate_for_store``: duplicate
        ref ids among them) or a value that cannot be stored; nothing is written then. The
        caller's stages get the stored version (``store_stage`` on them needs no re-read)."""
        validate_for_store(execution)
        if self.backend.submit(execution.id, lay_out(execution), None, "new", created_event(execution)) == 0:
            raise WorkflowExistsError(f"workflow {execution.id} already exists")
        stored(execution)
        self.locator.learn(execution.id, [s.id for s in execution.stages])

    def retrieve(self, execution_id: str) -> Workflow:
        """The workflow from Redis, else (evicted) from its Postgres snapshot."""
        wf = workflow_from_hash(self.backend.load_hash(execution_id))
        if wf is None:
            wf = self._from_snapshot(execution_id)
        if wf is None:
            raise WorkflowNotFoundError(execution_id)
        self.locator.learn(wf.id, [s.id for s in wf.stages])
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
        pipe.delete(part.workflow(execution_id), part.events(execution_id), part.processed(execution_id))
        pipe.zrem(part.workflows, execution_id)
        pipe.zrem(part.dirty, execution_id)
        pipe.execute()
        if self.snapshots is not None:
            self.snapshots.delete(execution_id)

    # -- stages ---------------------------------------------------------------------------

    def store_stage(self, stage: StageExecution, expected_phase: str | None = None) -> None:
        """Write a stored stage's status, context, outputs, times and tasks, guarded by
        ``stage.version`` (and its stored status with ``expected_phase``): ConcurrencyError on
        a mismatch, nothing written. A stage not stored yet is added (``add_stage``)."""
        with self.transaction() as txn:
            txn.store_stage(stage, expected_phase)

    def add_stage(self, stage: StageExecution) -> None:
        """Add a stage to its stored workflow (``stage.execution``), O(changed stages); an
        already stored stage is updated as by ``store_stage``."""
        self.store_stage(stage)

    def remove_stage(self, execution: Workflow | str, stage_id: str) -> None:
        """Remove a stage and its synthetic descendants from the stored workflow, detaching
        them from their neighbours (``decisions.stage_plans``); a stage that is not stored
        is nothing to remove."""
        wid = execution if isinstance(execution, str) else execution.id
        for _ in range(self.conflict_retries):
            graph = read_graph(self.backend, wid)
            if graph is None:
                raise WorkflowNotFoundError(wid)
            removal = read_removal(self.backend, wid, stage_id)
            if removal is None:
                return
            meta_version, ids_version = graph.meta_version, graph.ids_version
            t = Transition(wid)
            plan_remove(t, graph, removal, stage_id)
            write_graph(t, graph, meta_version, ids_version)
            if self.backend.commit(t, None, None) == CommitOutcome.OK:
                self.locator.forget(removal.removed)
                return
        raise ConcurrencyError(f"workflow {wid} kept changing while stage {stage_id} was removed")

    def retrieve_stage(self, stage_id: str, execution_id: str | None = None) -> StageExecution:
        """The stage with its tasks, attached to a partial workflow holding the workflow meta,
        the stage, its direct upstreams and its synthetic children. Without ``execution_id``
        the workflow is found as ``persistence.stage_reads`` describes. Raises ValueError
        (StageNotFoundError) when there is no such stage."""
        wid = execution_id or self.locator.locate(stage_id)
        found = read_stage_with_family(self.backend, wid, stage_id) if wid else None
        if found is None:
            wf = self._from_snapshot(execution_id) if execution_id else None
            for stage in wf.stages if wf is not None else []:
                if stage.id == stage_id:
                    return stage
            raise StageNotFoundError(f"stage {stage_id} not found")
        snap, rec = found
        assert snap.meta is not None
        attach_records(snap.meta, snap.stages.values())
        return rec.stage

    def get_upstream_stages(self, execution_id: str, stage_ref_id: str) -> list[StageExecution]:
        """The direct upstream stages of the stage with ``stage_ref_id`` (with their tasks)."""
        return neighbours(self.backend, execution_id, stage_ref_id, "up")

    def get_downstream_stages(self, execution_id: str, stage_ref_id: str) -> list[StageExecution]:
        """The direct downstream stages of the stage with ``stage_ref_id`` (with their tasks)."""
        return neighbours(self.backend, execution_id, stage_ref_id, "down")

    def get_synthetic_stages(self, execution_id: str, parent_stage_id: str) -> list[StageExecution]:
        """The synthetic stages of ``parent_stage_id``, in the order they were added."""
        return synthetic_stages(self.backend, execution_id, parent_stage_id)

    def get_merged_ancestor_outputs(self, execution_id: str, stage_ref_id: str) -> dict[str, Any]:
        """Outputs of every transitive upstream of the stage with ``stage_ref_id``, merged in
        topological order (lists concatenated without duplicates, other values last-wins)."""
        return merged_ancestor_outputs(self.backend, execution_id, stage_ref_id)

    @contextmanager
    def transaction(self, queue: RedisQueue | None = None) -> Iterator[RedisStoreTransaction]:
        """Stage writes, a status update, messages and a processed mark committed in ONE
        commit (``persistence.transaction``); an exception in the block writes nothing."""
        txn = RedisStoreTransaction(self, queue)
        try:
            yield txn
        except BaseException:
            txn.discard()
            raise
        txn.commit()

    # -- message dedup -----------------------------------------------------------------------

    def is_message_processed(self, message_id: str, execution_id: str | None = None) -> bool:
        """Whether ``message_id`` is in the windowed dedup record of any partition - where
        ``mark_message_processed`` and store transactions record it - or, given
        ``execution_id``, in that workflow's record, where the engine records every message
        it commits against the workflow (``PartitionKeys.processed``). One round trip."""
        pipe = pipeline(self.backend.client)
        for part in self.backend.keys.all_partitions():
            pipe.zscore(part.done, message_id)
        if execution_id:
            pipe.zscore(self.backend.part(execution_id).processed(execution_id), message_id)
        return any(score is not None for score in pipe.execute())

    def mark_message_processed(self, message_id: str, handler_type: str | None = None,
                               execution_id: str | None = None) -> None:
        """Add ``message_id`` to the windowed dedup record of ``execution_id``'s partition (where
        every commit of that workflow checks it), else of the message id's own partition; kept
        for ``MemoryPolicy.dedup_window_s``."""
        keys = self.backend.keys
        part = keys.for_workflow(execution_id) if execution_id else keys.partition(
            partition_of(message_id, keys.partitions))
        self.backend.client.zadd(part.done, {message_id: now_ms()}, nx=True)

    def cleanup_old_processed_messages(self, max_age_hours: float = 24.0) -> int:
        """Drop windowed dedup records older than ``max_age_hours``; returns how many. (The
        engine trims them itself after ``MemoryPolicy.dedup_window_s``; records kept with a
        workflow leave with it and are not touched here.)"""
        cutoff = now_ms() - int(max_age_hours * 3600 * 1000)
        pipe = pipeline(self.backend.client)
        for part in self.backend.keys.all_partitions():
            pipe.zremrangebyscore(part.done, "-inf", cutoff)
        return sum(int(n) for n in pipe.execute())

    def count_by_application(self, application: str) -> int:
        """Workflows of ``application``: those in Redis (their meta read, O(workflows)) and,
        with a snapshot store, those only PostgreSQL still holds."""
        ids: set[str] = set()
        client = self.backend.client
        wids = self.backend.workflow_ids()
        for start in range(0, len(wids), 500):
            batch = wids[start: start + 500]
            pipe = pipeline(client)
            for wid in batch:
                pipe.hget(self.backend.part(wid).workflow(wid), META_FIELD)
            for wid, blob in zip(batch, pipe.execute(), strict=True):
                if blob is not None and unpack(blob).get("application") == application:
                    ids.add(wid)
        if self.snapshots is not None:
            ids.update(row.id for row in self.snapshots.list(application=application, limit=10**9))
        return len(ids)

    def retrieve_by_application(self, application: str, criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return iter(self._search_criteria(criteria, application=application))

    def retrieve_by_pipeline_config_id(self, pipeline_config_id: str,
                                       criteria: WorkflowCriteria | None = None) -> Iterator[Workflow]:
        return iter(self._search_criteria(criteria, pipeline_config_id=pipeline_config_id))

    def _search_criteria(self, criteria: WorkflowCriteria | None, **filters: Any) -> list[Workflow]:
        """stabilize's criteria: statuses, and a start-time window in which a workflow that has
        not started yet (no start time) counts as started after any bound (it is newer than
        every started one), never before one."""
        criteria = criteria or WorkflowCriteria()
        found = self.search(**filters, statuses=criteria.statuses, start_after=criteria.start_time_after,
                            start_before=criteria.start_time_before, limit=criteria.page_size)
        if criteria.start_time_after is None or criteria.start_time_before is not None:
            return found
        unstarted = [wf for wf in self.search(**filters, statuses=criteria.statuses, limit=criteria.page_size)
                     if wf.start_time is None]
        return (unstarted + found)[: criteria.page_size]

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
        """Workflows in Redis with the criteria's statuses (default RUNNING and NOT_STARTED)
        started at or after ``start_time_after`` (or not started), newest first, at most
        ``page_size``."""
        criteria = criteria or WorkflowCriteria(statuses={WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED})
        after = criteria.start_time_after
        return self._list(lambda wf: after is None or wf.start_time is None or wf.start_time >= after, criteria)

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

    def _update_meta(self, execution_id: str,
                     change: Callable[[Workflow, dict[str, Any], Transition], bool]) -> None:
        """Read the meta, let ``change`` edit the workflow (and add messages to the
        transition), commit guarded by the meta version; re-read on a conflict."""
        for _ in range(self.conflict_retries):
            snap: Snapshot = self.backend.read(execution_id)
            if snap.meta is None:
                raise WorkflowNotFoundError(execution_id)
            wf = attach(snap)
            t = Transition(execution_id)
            if not change(wf, snap.meta, t):
                return
            t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
            if self.backend.commit(t, None, None) == CommitOutcome.OK:
                return
        raise ConcurrencyError(f"workflow {execution_id} kept changing")

    def update_status(self, execution: Workflow) -> None:
        def change(wf: Workflow, meta: dict[str, Any], t: Transition) -> bool:
            wf.status, wf.start_time, wf.end_time = execution.status, execution.start_time, execution.end_time
            wf.is_canceled, wf.canceled_by = execution.is_canceled, execution.canceled_by
            wf.cancellation_reason, wf.paused = execution.cancellation_reason, execution.paused
            return True

        self._update_meta(execution.id, change)

    def pause(self, execution_id: str, paused_by: str) -> None:
        """PAUSED with pause details, from RUNNING or (as stabilize's) NOT_STARTED; a complete
        or already paused workflow is left as it is. Tasks see the pause at their next run."""
        def change(wf: Workflow, meta: dict[str, Any], t: Transition) -> bool:
            if wf.status not in (WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED):
                return False
            wf.status = WorkflowStatus.PAUSED
            wf.paused = PausedDetails(paused_by=paused_by, pause_time=now_ms())
            t.event("workflow.paused", "workflow", wf.id, {"paused_by": paused_by})
            return True

        self._update_meta(execution_id, change)

    def resume(self, execution_id: str) -> None:
        """A PAUSED workflow goes back to RUNNING (its paused time recorded). One paused before
        it started (no start time: a StartWorkflow meeting the pause did nothing) is started in
        the same commit, as StartWorkflow would: start time set and a StartStage for each
        initial stage (a CompleteWorkflow when it has none)."""
        def change(wf: Workflow, meta: dict[str, Any], t: Transition) -> bool:
            if wf.status != WorkflowStatus.PAUSED:
                return False
            wf.resume()
            t.event("workflow.resumed", "workflow", wf.id, {"paused_ms": wf.paused.paused_ms if wf.paused else 0})
            if wf.start_time is None:
                wf.start_time = now_ms()
                kw: dict[str, Any] = {"execution_id": wf.id, "execution_type": wf.type.name}
                for sid in meta["initial"]:
                    t.push(StartStage(stage_id=sid, **kw))
                if not meta["initial"]:
                    t.push(CompleteWorkflow(**kw))
                t.event("workflow.started", "workflow", wf.id,
                        {"application": wf.application, "name": wf.name, "start_time": wf.start_time})
            return True

        self._update_meta(execution_id, change)

    def cancel(self, execution_id: str, canceled_by: str, reason: str) -> None:
        def change(wf: Workflow, meta: dict[str, Any], t: Transition) -> bool:
            wf.is_canceled, wf.canceled_by, wf.cancellation_reason = True, canceled_by, reason
            return True

        self._update_meta(execution_id, change)

    def events(self, execution_id: str) -> list[dict[str, object]]:
        """The workflow's audit events, oldest first. With PostgreSQL, the archived ones come
        from there (the checkpointer trims them from the Redis stream, ``lua/checkpoint_ack.lua``)
        followed by those Redis still holds that are not archived yet."""
        events: list[dict[str, object]] = list(self.backend.events(execution_id))
        if self.snapshots is None:
            return events
        part = self.backend.part(execution_id)
        if events and self.backend.client.hget(part.workflow(execution_id), CHECKPOINT_EVENT_FIELD) is None:
            return events  # nothing archived, so nothing trimmed: Redis has them all
        archived = list(self.snapshots.events(execution_id))
        seen = {e.get("event_id") for e in archived}
        return archived + [e for e in events if e.get("event_id") not in seen]

    def is_healthy(self) -> bool:
        try:
            return bool(self.backend.client.ping())
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        """Nothing to release: connections are pooled per process."""


__all__ = ["RedisWorkflowStore", "StageNotFoundError", "WorkflowCriteria", "WorkflowExistsError",
           "WorkflowNotFoundError", "created_event", "stored", "validate_for_store"]
