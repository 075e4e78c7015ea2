"""stabilize's recovery API: ``WorkflowRecovery``, ``RecoveryResult``, ``recover_on_startup``.

``recover_pending_workflows`` re-derives the messages of RUNNING and NOT_STARTED workflows
that have none, as stabilize's does at startup, on the engine's own machinery
(``durability.recovery`` and ``durability.recovery_plan``):

* candidates: workflows in Redis that are RUNNING or NOT_STARTED, of ``application`` when one
  is given, started within ``max_recovery_age_hours`` (a NOT_STARTED workflow has no start
  time and is always a candidate), read ``batch_size`` at a time - every one is examined;
* a candidate that some message references (ready, in flight, delayed, awaiting relay or
  dead-lettered) is ``skipped``: its work is under way, or the operator's to replay. So running
  recovery twice, or while workers run, pushes nothing twice and never doubles work;
* otherwise the messages its committed state needs (``recovery_plan.recovery_messages``:
  StartWorkflow for a NOT_STARTED workflow, RunTask for a RUNNING task, StartStage for a stage
  whose join is satisfied, ...) are enqueued by ``lua/recover_workflow.lua`` only if the
  workflow did not change since it was examined: ``recovered``. One with nothing to re-derive
  (paused, suspended, waiting for an operator) is ``skipped``; one whose hash cannot be read
  or planned is ``failed`` with the error, and the others are still examined.

Unlike the periodic stall sweep (``StallSweeper``) this needs no quiet period: a workflow a
worker is moving on is referenced by the message being handled until its commit enqueues
the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import unpack
from stabilize_redis.durability.recovery import _unreferenced
from stabilize_redis.durability.recovery_plan import describe, plan_from_hash
from stabilize_redis.errors import RecoveryError
from stabilize_redis.keys import META_FIELD, STATUS_FIELD, WORKFLOW_VERSION_FIELD, PartitionKeys
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import new_message_id

if TYPE_CHECKING:
    from stabilize_redis.persistence.redis_store import RedisWorkflowStore
    from stabilize_redis.queue.redis_queue import RedisQueue

log = logging.getLogger("stabilize_redis.recovery")

_PENDING = {WorkflowStatus.RUNNING.name.encode(), WorkflowStatus.NOT_STARTED.name.encode()}
_GUARD_TTL_MS = 60_000


@dataclass
class RecoveryResult:
    """What recovery did with one workflow: ``status`` is ``recovered``, ``skipped``,
    ``failed`` or ``partial``; ``stages_requeued`` counts the stages messages were pushed for."""

    workflow_id: str
    status: str
    message: str
    stages_requeued: int = 0
    failed_pushes: int = 0


class WorkflowRecovery:
    """Re-derives the lost messages of pending workflows (module docstring). ``store`` and
    ``queue`` name the namespace (either one is enough)."""

    def __init__(self, store: RedisWorkflowStore | None, queue: RedisQueue | None,
                 max_recovery_age_hours: float = 24.0, batch_size: int = 100) -> None:
        source = store if store is not None else queue
        if source is None:
            raise ValueError("WorkflowRecovery needs a store or a queue")
        self.store = store
        self.queue = queue
        self.backend: RedisBackend = source.backend
        self.max_recovery_age_hours = max_recovery_age_hours
        self.batch_size = max(1, batch_size)
        self._script = self.backend.scripts.recover_workflow

    def recover_pending_workflows(self, application: str | None = None) -> list[RecoveryResult]:
        """Examine every pending workflow (of ``application``) and recover those that need it.
        Raises RecoveryError when Redis cannot be read at all."""
        cutoff = int(time.time() * 1000) - int(self.max_recovery_age_hours * 3600 * 1000)
        results: list[RecoveryResult] = []
        try:
            for part in self.backend.keys.all_partitions():
                for batch in self._candidates(part, application, cutoff):
                    results.extend(self._recover_batch(part, batch))
        except redis.RedisError as e:
            raise RecoveryError(f"workflow recovery failed: {e}", cause=e) from e
        counts = {s: sum(1 for r in results if r.status == s) for s in ("recovered", "skipped", "failed")}
        log.info("recovery: %d recovered, %d skipped, %d failed", counts["recovered"], counts["skipped"],
                 counts["failed"])
        return results

    def _candidates(self, part: PartitionKeys, application: str | None, cutoff: int) -> Iterator[dict[str, int]]:
        """Pages of {workflow id: version} of the partition's pending workflows in scope."""
        client = self.backend.client
        start = 0
        while True:
            members = [m.decode() for m in client.zrange(part.workflows, start, start + self.batch_size - 1)]
            if not members:
                return
            pipe = pipeline(client)
            for wid in members:
                pipe.hmget(part.workflow(wid), [STATUS_FIELD, WORKFLOW_VERSION_FIELD, META_FIELD])
            page: dict[str, int] = {}
            for wid, (status, ver, meta_blob) in zip(members, pipe.execute(), strict=True):
                if status not in _PENDING or meta_blob is None:
                    continue
                meta: dict[str, Any] = unpack(meta_blob)
                if application is not None and meta.get("application") != application:
                    continue
                started = meta.get("start")
                if started is not None and started < cutoff:
                    continue
                page[wid] = int(ver or 0)
            if page:
                yield page
            if len(members) < self.batch_size:
                return
            start += self.batch_size

    def _recover_batch(self, part: PartitionKeys, candidates: dict[str, int]) -> list[RecoveryResult]:
        free = _unreferenced(self.backend.client, part, candidates)
        out: list[RecoveryResult] = []
        for wid, ver in candidates.items():
            if wid not in free:
                out.append(RecoveryResult(wid, "skipped", "a message for it is queued, in flight, delayed "
                                                          "or dead-lettered"))
                continue
            try:
                out.append(self._recover_one(part, wid, ver))
            except redis.ConnectionError:
                raise
            except Exception as e:  # noqa: BLE001 - one bad workflow never stops the others
                log.error("recovery of workflow %s failed: %s", wid, e, exc_info=True)
                out.append(RecoveryResult(wid, "failed", f"{type(e).__name__}: {e}"))
        return out

    def _recover_one(self, part: PartitionKeys, wid: str, ver: int) -> RecoveryResult:
        messages = plan_from_hash(self.backend.client.hgetall(part.workflow(wid)))
        if not messages:
            return RecoveryResult(wid, "skipped", "nothing to re-queue: it waits for a signal, a resume "
                                                  "or an operator")
        args: list[Any] = [ver, _GUARD_TTL_MS]
        for m in messages:
            m.message_id = new_message_id()
            args += [m.message_id, m.encode()]
        code = int(self._script(keys=[part.workflow(wid), part.ready, part.delayed, part.delayed_payloads,
                                      part.recovered(wid)], args=args)[0])
        if code != 1:
            why = {0: "it changed while it was examined", -1: "it no longer exists",
                   -2: "this state was just recovered"}.get(code, f"code {code}")
            return RecoveryResult(wid, "skipped", why)
        pushed = describe(messages)
        stages = {getattr(m, "stage_id", "") for m in messages} - {""}
        log.warning("recovered workflow %s: pushed %s", wid, ", ".join(pushed))
        return RecoveryResult(wid, "recovered", "re-queued " + ", ".join(pushed), stages_requeued=len(stages))


def recover_on_startup(store: RedisWorkflowStore | None, queue: RedisQueue | None,
                       application: str | None = None, max_age_hours: float = 24.0) -> list[RecoveryResult]:
    """``WorkflowRecovery(store, queue, max_age_hours).recover_pending_workflows(application)``."""
    return WorkflowRecovery(store, queue, max_recovery_age_hours=max_age_hours).recover_pending_workflows(application)


__all__ = ["RecoveryResult", "WorkflowRecovery", "recover_on_startup"]
