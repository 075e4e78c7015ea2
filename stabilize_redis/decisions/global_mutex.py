"""Global mutex (beyond stabilize, whose mutex is per workflow): a stage with
``mutex_scope="global"`` holds its ``mutex_key`` exclusively across every workflow of the
namespace - one deploy to production at a time. Pure.

The lock is one record (``GlobalMutexState``: holder, FIFO of waiters, fence counter) in the
partition of its routing id (``keys.global_mutex_routing_id``), reached only by messages through
the outbox; every step is idempotent:

* The stage's StartStage, once its join is met, asks for the lock (``GlobalMutexAcquire``, for
  the stage's run) and leaves the stage NOT_STARTED. The record makes a free lock the
  requester's with a new fence (``GlobalMutexGranted``) or queues the requester; asking again
  (a redelivery) is answered the same way.
* The grant, in the workflow's partition, records ``{fence, run}`` in the stage's context
  (``GLOBAL_MUTEX``, also the task's to pass on to the systems it protects) and sends the stage
  its StartStage, which now starts it. A grant reaching a stage that no longer waits for it
  (another run, finished, canceled) is handed straight back.
* The commit that ends the holder in any status (CompleteStage, CancelStage, a region's cancel,
  the workflow's fail-fast cancel), or the StartStage of a holder reset by a jump or restart (its
  run changed), releases it with its fence (``GlobalMutexRelease``); the record hands it to the
  first waiter with the next fence. A release whose fence is not the holder's - a stale holder's
  - changes nothing: it can never free a lock granted since. A waiter that will never run is
  granted in its turn and hands the lock on at once.

A holder's worker dying does not release the lock: the stage's task is redelivered and runs
again under the same grant; the lock goes when the stage ends. The record lives in Redis only:
after a restore the recovery plan has every holder re-register (``recovery_ask``, with its fence
as the floor, so fences keep growing) and every waiter ask again; until then a newcomer could be
granted the lock a restored holder still uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import global_mutex_routing_id
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import GlobalMutexAcquire, GlobalMutexGranted, GlobalMutexRelease

HOLDING = (WorkflowStatus.RUNNING, WorkflowStatus.PAUSED, WorkflowStatus.SUSPENDED)
"""Statuses in which a stage that was granted its global mutex still holds it."""

GLOBAL = "global"
SCOPES = ("workflow", GLOBAL)

GLOBAL_MUTEX = "_global_mutex"
"""Stage context key: ``{"fence": n, "run": r}`` while run ``r`` of the stage holds its global
mutex under fence ``n`` (monotonic per mutex key)."""

GLOBAL_MUTEX_ASKED = "_global_mutex_asked"
"""Stage context key: the run of the stage that asked for its global mutex and waits for it."""

WAITING_EVENT = "mutex.global_waiting"
ACQUIRED_EVENT = "mutex.global_acquired"
"""Event types (stage): it asked for its global mutex; it was granted it (data: mutex_key, fence)."""


def is_global(stage: StageExecution) -> bool:
    return bool(stage.mutex_key) and stage.mutex_scope == GLOBAL


@dataclass(frozen=True)
class Requester:
    workflow_id: str
    stage_id: str
    run: int

    def to_dict(self) -> dict[str, Any]:
        return {"w": self.workflow_id, "s": self.stage_id, "r": self.run}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Requester:
        return cls(str(d["w"]), str(d["s"]), int(d["r"]))


@dataclass
class GlobalMutexState:
    """One global mutex: its holder (and the holder's fence), the waiters in arrival order, and the
    last fence handed out."""

    holder: Requester | None = None
    holder_fence: int = 0
    waiters: list[Requester] = field(default_factory=list)
    fence: int = 0

    @classmethod
    def decode(cls, raw: bytes | None) -> GlobalMutexState:
        if not raw:
            return cls()
        d = json.loads(raw)
        holder = Requester.from_dict(d["holder"]) if d.get("holder") else None
        return cls(holder, int(d.get("holder_fence", 0)), [Requester.from_dict(w) for w in d.get("waiters", [])],
                   int(d.get("fence", 0)))

    def encode(self) -> str:
        return json.dumps({"holder": self.holder.to_dict() if self.holder else None, "holder_fence": self.holder_fence,
                           "waiters": [w.to_dict() for w in self.waiters], "fence": self.fence}, separators=(",", ":"))

    def acquire(self, who: Requester, fence_floor: int | None = None) -> int | None:
        """The fence ``who`` now holds the lock under, or None: it waits (queued once).
        ``fence_floor``: fences handed out from now on are above it (a holder re-registering
        after a restore lost the record)."""
        if fence_floor is not None:
            self.fence = max(self.fence, fence_floor)
        if self.holder == who:
            return self.holder_fence
        if self.holder is None:
            return self._give(who)
        if who not in self.waiters:
            self.waiters.append(who)
        return None

    def release(self, who: Requester, fence: int | None) -> tuple[Requester, int] | None:
        """``who`` gives the lock (held under ``fence``) back, or leaves the waiters (``fence``
        None); returns the next holder and its fence, if the lock changed hands."""
        if fence is None:
            if who in self.waiters:
                self.waiters.remove(who)
            return None
        if self.holder != who or self.holder_fence != fence:
            return None  # a stale holder's release: the lock has been granted since
        self.holder = None
        while self.waiters:
            nxt = self.waiters.pop(0)
            return nxt, self._give(nxt)
        return None

    def _give(self, who: Requester) -> int:
        self.fence += 1
        self.holder, self.holder_fence = who, self.fence
        return self.fence


def grant_message(key: str, who: Requester, fence: int, execution_type: str) -> GlobalMutexGranted:
    return GlobalMutexGranted(execution_id=who.workflow_id, execution_type=execution_type, stage_id=who.stage_id,
                              mutex_key=key, run=who.run, fence=fence)


def acquire_message(key: str, who: Requester, execution_type: str, fence_floor: int | None = None
                    ) -> GlobalMutexAcquire:
    return GlobalMutexAcquire(execution_id=global_mutex_routing_id(key), execution_type=execution_type,
                              mutex_key=key, requester_id=who.workflow_id, requester_stage_id=who.stage_id,
                              run=who.run, fence_floor=fence_floor)


def release_message(key: str, who: Requester, fence: int | None, execution_type: str) -> GlobalMutexRelease:
    return GlobalMutexRelease(execution_id=global_mutex_routing_id(key), execution_type=execution_type,
                              mutex_key=key, requester_id=who.workflow_id, requester_stage_id=who.stage_id,
                              run=who.run, fence=fence)


def gate(t: Transition, rec: StageRecord, kw: dict[str, Any]) -> bool:
    """For a ready global-mutex stage at its StartStage: True when its run holds the lock (it may
    start); else, into ``t``, the lock an earlier run held is given back and the lock asked for
    (once per run), and False (the stage stays NOT_STARTED)."""
    stage = rec.stage
    key = str(stage.mutex_key)
    held = stage.context.get(GLOBAL_MUTEX)
    if isinstance(held, dict) and held.get("run") == rec.attempt:
        return True
    if isinstance(held, dict):  # an earlier run's (a jump or restart reset it)
        t.push(release_message(key, Requester(t.workflow_id, rec.id, int(held.get("run", -1))),
                               int(held.get("fence", 0)), kw["execution_type"]))
        stage.context.pop(GLOBAL_MUTEX, None)
        t.write_stage(rec)
    if stage.context.get(GLOBAL_MUTEX_ASKED) != rec.attempt:
        stage.context[GLOBAL_MUTEX_ASKED] = rec.attempt
        t.write_stage(rec)
        t.push(acquire_message(key, Requester(t.workflow_id, rec.id, rec.attempt), kw["execution_type"]))
        t.event(WAITING_EVENT, "stage", rec.id, {"mutex_key": key})
    return False


def recovery_ask(stage: StageExecution, run: int | None, workflow_id: str,
                 execution_type: str) -> GlobalMutexAcquire | None:
    """For recovery: the ask a global-mutex stage repeats - a holder (RUNNING, PAUSED or
    SUSPENDED with its grant) re-registers with its fence as the floor, a waiter asks again -
    so a record a restore lost is rebuilt; where the record knows them, it answers as before.
    None for any other stage."""
    if not is_global(stage):
        return None
    key = str(stage.mutex_key)
    held, asked = stage.context.get(GLOBAL_MUTEX), stage.context.get(GLOBAL_MUTEX_ASKED)
    if isinstance(held, dict) and stage.status in HOLDING and run is not None and held.get("run") == run:
        return acquire_message(key, Requester(workflow_id, stage.id, run), execution_type, int(held.get("fence", 0)))
    if stage.status == WorkflowStatus.NOT_STARTED and isinstance(asked, int):
        return acquire_message(key, Requester(workflow_id, stage.id, asked), execution_type)
    return None


def release_held(t: Transition, rec: StageRecord, kw: dict[str, Any]) -> None:
    """``rec`` ends (any status) in ``t``: give back the global mutex it holds, or leave the
    waiters if it only asked."""
    stage = rec.stage
    if not is_global(stage):
        return
    key = str(stage.mutex_key)
    held = stage.context.pop(GLOBAL_MUTEX, None)
    asked = stage.context.pop(GLOBAL_MUTEX_ASKED, None)
    if isinstance(held, dict):
        t.push(release_message(key, Requester(t.workflow_id, rec.id, int(held.get("run", -1))),
                               int(held.get("fence", 0)), kw["execution_type"]))
    elif isinstance(asked, int):
        t.push(release_message(key, Requester(t.workflow_id, rec.id, asked), None, kw["execution_type"]))


__all__ = ["ACQUIRED_EVENT", "GLOBAL", "GLOBAL_MUTEX", "GLOBAL_MUTEX_ASKED", "SCOPES", "WAITING_EVENT",
           "GlobalMutexState", "HOLDING", "Requester", "acquire_message", "gate", "grant_message", "is_global", "recovery_ask", "release_held",
           "release_message"]
