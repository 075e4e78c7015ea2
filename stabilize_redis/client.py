"""A small client for services that push workflows: ``connect(url, namespace)``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from stabilize_redis.backend.launch import launch
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.config import MemoryPolicy
from stabilize_redis.durable_submit import CHECKPOINT, REPLICAS, Durability
from stabilize_redis.errors import StageError, WorkflowNotFoundError
from stabilize_redis.keys import META_FIELD, ref_field, stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.outage import Backoff, redis_unavailable
from stabilize_redis.persistence.redis_store import RedisWorkflowStore, created_event
from stabilize_redis.queue.messages import (
    AddMultiInstance,
    CancelRegion,
    CancelWorkflow,
    RestartStage,
    SignalStage,
)
from stabilize_redis.queue.redis_queue import RedisQueue
from stabilize_redis.validation import validate_workflow

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotStore


class Client:
    """Submit, read, wait for, cancel and restart workflows of one namespace.

    With PostgreSQL configured (``snapshots=``, ``dsn=``, or STABILIZE_POSTGRES_DSN; ``dsn=""``
    disables) ``get``/``status``/``events`` also find workflows evicted from Redis, and ``list``
    is served from Postgres."""

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 dsn: str | None = None, schema: str | None = None,
                 snapshots: SnapshotStore | None = None) -> None:
        self.backend = backend_for(url, namespace)
        self.store = RedisWorkflowStore.__new__(RedisWorkflowStore)
        self.store.backend = self.backend
        if snapshots is None:
            from stabilize_redis.durability.pg import configured_snapshot_store

            snapshots = configured_snapshot_store(dsn, schema, self.backend.target.namespace)
        if snapshots is not None:  # PostgreSQL keeps the history: no caps (``MemoryPolicy``)
            self.backend.memory = MemoryPolicy.from_env(durable=True)
        self.store.snapshots = snapshots
        self.queue = RedisQueue.__new__(RedisQueue)
        self.queue.backend = self.backend

    def submit(self, workflow: Workflow, *, durability: str | None = None,
               durability_timeout: float | None = None) -> str:
        """Validate, store and start a workflow in one atomic step; returns its id.

        ``durability`` (else ``STABILIZE_SUBMIT_DURABILITY``): ``"memory"`` (default),
        ``"replicas:N"`` or ``"checkpoint"``, see ``stabilize_redis.durable_submit``; when it
        is not confirmed within ``durability_timeout`` seconds, SubmitNotDurable is raised (the
        workflow is stored all the same). Submitting the same workflow id again writes and
        starts nothing, so a retried submit is harmless (and waits for durability again)."""
        wanted = Durability.parse(durability, durability_timeout)
        validate_workflow(workflow)
        if wanted.mode == CHECKPOINT and self.store.snapshots is None:
            raise ValueError("submit durability 'checkpoint' needs PostgreSQL: pass dsn= or set "
                             "STABILIZE_POSTGRES_DSN")
        if wanted.mode == REPLICAS and self.backend.target.embedded:
            raise ValueError("submit durability 'replicas:N' needs a real Redis with replicas, "
                             "not the embedded default")
        wait = (wanted.replicas, wanted.timeout_s) if wanted.mode == REPLICAS else None
        launch(self.backend, workflow, created_event(workflow), wait_replicas=wait)
        if wanted.mode == CHECKPOINT:
            from stabilize_redis.durability.submit_checkpoint import checkpoint_workflow

            assert self.store.snapshots is not None
            checkpoint_workflow(self.backend, self.store.snapshots, workflow.id, wanted.timeout_s)
        return workflow.id

    def get(self, workflow_id: str) -> Workflow:
        """The workflow as stored now (Redis, else its Postgres snapshot); raises
        WorkflowNotFoundError."""
        return self.store.retrieve(workflow_id)

    def list(self, application: str | None = None, status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None = None,
             since: int | datetime | None = None, until: int | datetime | None = None,
             pipeline_config_id: str | None = None, limit: int = 20, offset: int = 0) -> builtins.list[Workflow]:
        """Workflows matching every given filter, newest first, paged by ``limit``/``offset``.
        ``status``: one status or several; ``since`` (inclusive) / ``until`` (exclusive) bound the
        start time (epoch ms or a datetime). Served from Postgres when configured (as of the last
        checkpoint), else by scanning Redis."""
        statuses = [status] if isinstance(status, WorkflowStatus | str) else status
        return self.store.search(application=application, pipeline_config_id=pipeline_config_id,
                                 statuses=statuses, start_after=_ms(since), start_before=_ms(until),
                                 limit=limit, offset=offset)

    def status(self, workflow_id: str) -> str:
        """The workflow's status name as ``store.retrieve`` shows it: SUSPENDED while it waits only
        on signals (``decisions.waiting``; the summary holds only the status stored by the last
        suspension or resumption). Reads the whole workflow."""
        return self.store.retrieve(workflow_id).status.name

    def wait(self, workflow_id: str, timeout: float = 60.0) -> Workflow:
        """Block until the workflow is complete or PAUSED and return it; raises TimeoutError.
        Wakes on the workflow's event stream rather than polling (on real Redis). While Redis
        cannot serve (a restart, a cluster failover: ``outage.redis_unavailable``) it retries
        with capped backoff until ``timeout``, then raises the last such error."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(initial=0.05, cap=1.0)
        last: str | None = None
        while True:
            try:
                last, done = self._wait_step(workflow_id, last, deadline, timeout)
            except Exception as e:
                remaining = deadline - time.monotonic()
                if not redis_unavailable(e) or remaining <= 0:
                    raise
                time.sleep(min(backoff.next(), remaining))
                continue
            backoff.reset()
            if done is not None:
                return done

    def _wait_step(self, workflow_id: str, last: str | None, deadline: float,
                   timeout: float) -> tuple[str | None, Workflow | None]:
        """One check of ``wait``, then one blocking read of the event stream after ``last``
        (the newest entry's id, read first when None): (new ``last``, the workflow once done)."""
        events_key = self.backend.part(workflow_id).events(workflow_id)
        embedded = self.backend.target.embedded
        if last is None:
            newest = [] if embedded else self.backend.client.xrevrange(events_key, count=1)
            last = newest[0][0].decode() if newest else "0-0"
        summary = self.store.retrieve_execution_summary(workflow_id)
        if summary.status.is_complete or summary.status == WorkflowStatus.PAUSED:
            return last, self.get(workflow_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"workflow {workflow_id} still {summary.status.name} after {timeout}s")
        if embedded:
            time.sleep(min(0.01, remaining))
            return last, None
        reply = self.backend.client.xread({events_key: last}, count=100,
                                          block=max(1, int(min(remaining, 1.0) * 1000)))
        for _, entries in reply or []:
            if entries:
                last = entries[-1][0].decode()
        return last, None

    def cancel(self, workflow_id: str, user: str = "", reason: str = "") -> None:
        self.queue.push(CancelWorkflow(execution_id=workflow_id, user=user, reason=reason))

    def cancel_region(self, workflow_id: str, region: str) -> None:
        """Enqueue a CancelRegion: one commit cancels every unfinished stage of ``workflow_id``
        tagged with ``cancel_region`` ``region`` (and their synthetic children); running tasks'
        cancellation tokens are canceled wherever they run; the other branches go on and the
        workflow then ends CANCELED (``handlers.cancel_region``). A region with nothing left to
        cancel is recorded as a ``region.cancel_ignored`` event."""
        self.queue.push(CancelRegion(execution_id=workflow_id, region=region))

    def restart(self, workflow_id: str, stage_ref_or_id: str) -> str:
        """Enqueue a RestartStage for a stage named by its id or its ref id (a top-level stage)
        and return the stage id. The handler runs the finished stage again with its downstream
        scope and reopens a finished workflow; ``client.wait`` then waits for the new end. What
        it refuses (a canceled workflow, a stage still running, ...) is logged and recorded as a
        ``stage.restart_refused`` event (``handlers.restart_stage``).

        Raises WorkflowNotFoundError when the workflow is not in Redis (never submitted, or
        finished and evicted after the retention period: it can no longer be restarted) and
        StageError when it has no stage with that id or ref id."""
        stage_id = self._stage_id(workflow_id, stage_ref_or_id, "restarted")
        self.queue.push(RestartStage(execution_id=workflow_id, stage_id=stage_id))
        return stage_id

    def signal(self, workflow_id: str, stage_ref_or_id: str, name: str, data: dict[str, object] | None = None,
               persistent: bool = True) -> str:
        """Enqueue a SignalStage for a stage named by its id or its ref id (a top-level stage) and
        return the stage id. A SUSPENDED stage resumes with ``_signal_name``/``_signal_data`` in
        its context; a stage not suspended yet buffers a ``persistent`` signal (consumed when it
        suspends) and discards a transient one (``handlers.signal_stage``).

        Raises WorkflowNotFoundError when the workflow is not in Redis and StageError when it has
        no stage with that id or ref id; ValueError when ``data`` cannot be sent."""
        stage_id = self._stage_id(workflow_id, stage_ref_or_id, "signaled")
        self.queue.push(SignalStage(execution_id=workflow_id, stage_id=stage_id, signal_name=name,
                                    signal_data=dict(data or {}), persistent=persistent))
        return stage_id

    def add_instance(self, workflow_id: str, stage_ref_or_id: str,
                     instance_context: dict[str, object] | None = None) -> str:
        """Enqueue an AddMultiInstance for a multi-instance stage (``mi_config.allow_dynamic``)
        named by its id or ref id, and return the stage id. Its group gets one more instance,
        with ``instance_context`` in its context, and the group's join waits for it - unless the
        join has fired, the stage halted or the workflow finished: then a ``mi.instance_rejected``
        event says why (``decisions.multi_instance``).

        Raises WorkflowNotFoundError / StageError as ``signal`` does; ValueError when
        ``instance_context`` cannot be sent."""
        stage_id = self._stage_id(workflow_id, stage_ref_or_id, "given instances")
        self.queue.push(AddMultiInstance(execution_id=workflow_id, stage_id=stage_id,
                                         instance_context=dict(instance_context or {})))
        return stage_id

    def _stage_id(self, workflow_id: str, stage_ref_or_id: str, verb: str) -> str:
        key = self.backend.part(workflow_id).workflow(workflow_id)
        meta, own, by_ref = self.backend.client.hmget(key, META_FIELD, stage_field(stage_ref_or_id),
                                                      ref_field(stage_ref_or_id))
        if meta is None:
            raise WorkflowNotFoundError(
                f"workflow {workflow_id} is not in Redis (never submitted, or finished and evicted after "
                f"the retention period); only a workflow still in Redis can be {verb}", execution_id=workflow_id)
        stage_id = stage_ref_or_id if own is not None else by_ref.decode() if by_ref is not None else None
        if stage_id is None:
            raise StageError(f"workflow {workflow_id} has no stage with id or ref id {stage_ref_or_id!r}",
                             execution_id=workflow_id)
        return stage_id

    def events(self, workflow_id: str) -> builtins.list[dict[str, object]]:
        return self.store.events(workflow_id)


def _ms(value: int | datetime | None) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


def connect(url: str | None = None, namespace: str | None = None, *, dsn: str | None = None,
            schema: str | None = None) -> Client:
    """A client for ``url`` (or ``STABILIZE_REDIS_URL``; None = embedded) and ``namespace``
    (or ``STABILIZE_NAMESPACE``, default ``stz``); Postgres from ``dsn``/``schema`` or
    STABILIZE_POSTGRES_DSN / STABILIZE_POSTGRES_SCHEMA, if set."""
    return Client(url, namespace, dsn=dsn, schema=schema)
