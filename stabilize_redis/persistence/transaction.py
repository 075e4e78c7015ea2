"""``store.transaction(queue)``: stage writes, a workflow status update, pushed messages and
the processed mark of one message, committed in ONE ``commit.lua`` call.

Usage is stabilize's::

    with store.transaction(queue) as txn:
        txn.store_stage(stage, expected_phase="RUNNING")
        txn.push_message(CompleteStage(...))
        txn.mark_message_processed(message.message_id)

Nothing is written before the block ends; an exception inside it discards everything. At the
end one Transition is built - each stage write guarded by the version the caller read (and
its status with ``expected_phase``), the messages in its queue part, the processed message id
as its dedup mark - and committed atomically: all of it happens or none of it does.

Contract:

* one transaction covers one workflow: its stage writes and status update name one workflow,
  and its messages must live in that workflow's partition (one commit touches one partition's
  keys; Redis Cluster-safe). Anything else raises ValueError at the call, before anything is
  written. One message id can be marked processed per transaction.
* a stage is taken as it is at ``store_stage`` time; changes made to it afterwards are not
  written by this transaction.
* committed: ``outcome`` is ``'ok'``; stage and changed tasks' versions are raised by one.
  A mark of a message already processed makes the commit a DUPLICATE: nothing is written,
  ``outcome`` is ``'duplicate'`` (the exactly-once rule of every handler commit).
  A version or phase mismatch raises ConcurrencyError and writes nothing; in-memory versions
  are left as they were.
* with ``queue``, a marked message that this queue handed out (``poll_one``) is also acked in
  the same commit, in the stream it was read from.
* a stage not stored yet is added (as ``add_stage``) in the same commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stabilize_redis.backend.graph_reads import read_graph, resolve_family
from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery
from stabilize_redis.decisions.codec import ensure_plain, meta_from_dict
from stabilize_redis.decisions.layout import meta_extras
from stabilize_redis.decisions.stage_plans import (
    Versions,
    detached_copy,
    plan_add,
    updated_record,
    workflow_of,
    write_graph,
)
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.keys import stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.workflow import PausedDetails, Workflow
from stabilize_redis.persistence.errors import WorkflowNotFoundError
from stabilize_redis.queue.messages import Message, decode_message
from stabilize_redis.support import check_message

if TYPE_CHECKING:
    from stabilize_redis.persistence.redis_store import RedisWorkflowStore
    from stabilize_redis.queue.redis_queue import RedisQueue


def check_pushable(message: Message) -> None:
    """ValueError naming the field unless a worker could take ``message`` and the engine
    executes it (the checks of ``RedisBackend.push``)."""
    ensure_plain(message.to_dict(), type(message).__name__)
    decode_message(message.encode())
    check_message(message)


def seconds(delay: timedelta | float | None) -> float:
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)


@dataclass
class _StageWrite:
    original: StageExecution
    copy: StageExecution
    expected_phase: str | None


@dataclass
class _StatusUpdate:
    status: Any
    start_time: int | None
    end_time: int | None
    is_canceled: bool
    canceled_by: str | None
    cancellation_reason: str | None
    paused: PausedDetails | None


class RedisStoreTransaction:
    """Buffered writes of one workflow, committed by one ``commit.lua`` call (module doc)."""

    is_atomic = True

    def __init__(self, store: RedisWorkflowStore, queue: RedisQueue | None = None) -> None:
        self._store = store
        self._queue = queue
        self._backend = store.backend
        self._workflow_id: str | None = None
        self._stages: list[_StageWrite] = []
        self._status: _StatusUpdate | None = None
        self._messages: list[tuple[Message, float]] = []
        self._processed: str | None = None
        self._done = False
        self.outcome: str | None = None

    # -- buffering -------------------------------------------------------------------------

    def _bind(self, workflow_id: str) -> None:
        if self._workflow_id is None:
            self._workflow_id = workflow_id
        elif self._workflow_id != workflow_id:
            raise ValueError(f"a transaction covers one workflow: it holds writes of {self._workflow_id}, "
                             f"not {workflow_id}")

    def store_stage(self, stage: StageExecution, expected_phase: str | None = None) -> None:
        """Write ``stage`` as it is now when the transaction commits (stored only if its
        version, and with ``expected_phase`` its status, are still the stored ones)."""
        self._bind(workflow_of(stage).id)
        if any(w.original.id == stage.id for w in self._stages):
            raise ValueError(f"stage {stage.ref_id!r} is already written by this transaction")
        self._stages.append(_StageWrite(stage, detached_copy(stage), expected_phase))

    def update_workflow_status(self, execution: Workflow) -> None:
        """Write the workflow's status, start/end times, cancel flags and pause details."""
        self._bind(execution.id)
        paused = execution.paused
        self._status = _StatusUpdate(
            execution.status, execution.start_time, execution.end_time, execution.is_canceled,
            execution.canceled_by, execution.cancellation_reason,
            PausedDetails(**paused.__dict__) if paused is not None else None)

    def push_message(self, message: Message, delay: timedelta | float | None = 0) -> None:
        """Enqueue ``message`` (after ``delay`` seconds or a timedelta) when the transaction
        commits. ValueError, at once, for a message no worker could take."""
        check_pushable(message)
        self._messages.append((message, seconds(delay)))

    def mark_message_processed(self, message_id: str, handler_type: str | None = None,
                               execution_id: str | None = None) -> None:
        """Record ``message_id`` as processed in the same commit (its dedup record)."""
        if self._processed is not None and self._processed != message_id:
            raise ValueError("a transaction marks one message processed; it already marks "
                             f"{self._processed}")
        if execution_id:
            self._bind(execution_id)
        self._processed = message_id

    # -- commit ------------------------------------------------------------------------------

    def _target(self) -> str | None:
        if self._workflow_id is not None:
            return self._workflow_id
        return self._messages[0][0].workflow_id if self._messages else None

    def _check_partitions(self, workflow_id: str) -> None:
        home = self._backend.part(workflow_id).index
        for message, _ in self._messages:
            if self._backend.part(message.workflow_id).index != home:
                raise ValueError(
                    f"{type(message).__name__} for workflow {message.workflow_id!r} lives in another "
                    f"partition than workflow {workflow_id!r}; one transaction commits to one partition")

    def _delivery(self, workflow_id: str) -> Delivery | None:
        if self._queue is None or self._processed is None:
            return None
        delivery = self._queue.delivery_of(self._processed)
        if delivery is None or delivery.partition != self._backend.part(workflow_id).index:
            return None
        return delivery

    def _plan(self, workflow_id: str) -> tuple[Transition, list[tuple[StageExecution, Versions]]]:
        backend = self._backend
        snap = backend.read(workflow_id, [w.copy.id for w in self._stages])
        if snap.meta is None and (self._stages or self._status is not None):
            raise WorkflowNotFoundError(workflow_id)
        t = Transition(workflow_id)
        done: list[tuple[StageExecution, Versions]] = []
        new: list[_StageWrite] = []
        for w in self._stages:
            stored = snap.stages.get(w.copy.id)
            if stored is None:
                new.append(w)
                continue
            where = f"stage {w.copy.ref_id!r} of workflow {workflow_id}"
            rec, versions = updated_record(stored, w.copy, w.expected_phase, where)
            t.write_stage(rec)
            done.append((w.original, versions))
        meta, meta_version, ids_version = snap.meta, snap.meta_version, 0
        graph = read_graph(backend, workflow_id) if new else None
        if graph is not None:
            meta, meta_version, ids_version = graph.meta, graph.meta_version, graph.ids_version
            for w in new:
                ups, parent = resolve_family(backend, workflow_id, w.original, graph)
                for family in (*ups, *([parent] if parent else [])):
                    if stage_field(family.id) in t.writes:
                        raise ValueError(f"stage {w.copy.ref_id!r} is added next to stage "
                                         f"{family.stage.ref_id!r}, which this transaction also writes; "
                                         "write them in separate transactions")
                done.append((w.original, plan_add(t, graph, w.copy, ups, parent)))
        if meta is not None and (graph is not None or self._status is not None):
            wf = meta_from_dict(meta)
            if self._status is not None:
                s = self._status
                wf.status, wf.start_time, wf.end_time = s.status, s.start_time, s.end_time
                wf.is_canceled, wf.canceled_by = s.is_canceled, s.canceled_by
                wf.cancellation_reason, wf.paused = s.cancellation_reason, s.paused
            if graph is not None:
                write_graph(t, graph, meta_version, ids_version, wf)
            else:
                t.write_meta(wf, meta_extras(meta), meta_version)
        for message, delay in self._messages:
            t.push(message, delay)
        return t, done

    def commit(self) -> str:
        """Commit everything buffered in one ``commit.lua`` call; returns ``outcome``."""
        if self._done:
            raise RuntimeError("this transaction has already been committed")
        self._done = True
        workflow_id = self._target()
        if workflow_id is None:
            if self._processed is not None:
                self._store.mark_message_processed(self._processed)
            self.outcome = CommitOutcome.OK
            return self.outcome
        self._check_partitions(workflow_id)
        delivery = self._delivery(workflow_id)
        marker = Message(message_id=self._processed) if self._processed is not None else None
        for _ in range(self._store.conflict_retries):
            t, done = self._plan(workflow_id)
            outcome = self._backend.commit(t, marker, delivery, windowed=True)
            if outcome == CommitOutcome.CONFLICT:
                continue
            if outcome == CommitOutcome.OK:
                for stage, versions in done:
                    versions.apply(stage)
                self._store.locator.learn(workflow_id, [s.id for s, _ in done])
            if delivery is not None and self._queue is not None and self._processed is not None:
                self._queue.forget_delivery(self._processed)
            self.outcome = outcome
            return outcome
        raise ConcurrencyError(f"workflow {workflow_id} kept changing while this transaction was committed")

    def discard(self) -> None:
        """Drop everything buffered (what an exception inside the ``with`` block does)."""
        self._done = True
        self.outcome = None


__all__ = ["RedisStoreTransaction", "check_pushable", "seconds"]
