"""Mutual exclusion (WCP-17/39/40): stages of one workflow sharing a ``mutex_key`` never run at
the same time, and a blocked stage is woken by the release, never by polling. Pure: it adds to a
Transition, never touches Redis.

Each mutex is one versioned field of the workflow hash (``keys.mutex_field``) holding its
``holder`` (a stage id), the run of the holder that took it (``StageRecord.attempt``, or
DESIGNATED while the holder was handed the mutex and its StartStage has not run yet) and the
``waiters`` in arrival order. Every decision that changes it writes it guarded by the version it
read, so two starts racing for one mutex cannot both take it: one commit CONFLICTs and is
decided again on the new state.

* A stage with a mutex_key starts only through StartStage, whose read holds the field and the
  holder's record (``backend.exclusion_reads``); any other start path (the fused single-upstream
  start, a launch at submit, a jump or restart target) defers to a StartStage
  (``claim.claim_ready_stage`` with no gate).
* ``acquire``: the holder designated by a release takes it; so does any stage when the mutex is
  free with nobody waiting. Otherwise the stage stays NOT_STARTED and joins the waiters.
* ``release``: the commit that ends the holder, whatever its status (CompleteStage:
  ``settle_finished``; CancelStage) hands the mutex to the first waiter - it becomes the
  designated holder and gets a StartStage in that commit - or frees it.
* A holder no longer holds when its record says so: finished, reset by a jump or restart (its
  run changed), or gone. A reset commit sends its stage a StartStage (``reset.recount``), and
  StartStage hands the mutex on from any such holder (``tidy``), so a waiter never waits on
  nothing. A designated holder whose StartStage does not start it hands the mutex on there too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.decisions.codec import StageRecord, pack, unpack
from stabilize_redis.decisions.deferred_choice import ChoiceState, choose
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import mutex_field, stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import StartStage

DESIGNATED = -1
"""``MutexState.attempt`` of a holder handed the mutex by a release, not started yet."""

HOLDING = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.PAUSED, WorkflowStatus.SUSPENDED})
"""Statuses in which a stage that took a mutex still holds it."""

MUTEX_WAITING = "mutex.waiting"
MUTEX_ACQUIRED = "mutex.acquired"
MUTEX_HANDED_OVER = "mutex.handed_over"
MUTEX_RELEASED = "mutex.released"
"""Event types (data: ``mutex_key``; ``from``/``to`` stage ids where they apply)."""


@dataclass
class MutexState:
    """One mutex as read: holder (None: free), the holder's run that took it, the waiters in
    arrival order, and the field's version (0: never written)."""

    key: str
    version: int = 0
    holder: str | None = None
    attempt: int = DESIGNATED
    waiters: list[str] = field(default_factory=list)

    @classmethod
    def decode(cls, key: str, blob: bytes | None, version: int) -> MutexState:
        if not blob:
            return cls(key, version)
        data = unpack(blob)
        return cls(key, version, data.get("h"), int(data.get("a", DESIGNATED)), list(data.get("w", [])))

    def encode(self) -> bytes:
        return pack({"h": self.holder, "a": self.attempt, "w": self.waiters})


@dataclass
class Exclusions:
    """The mutex and deferred-choice state read for one stage (None: it has no such setting)."""

    mutex: MutexState | None = None
    choice: ChoiceState | None = None


@dataclass
class Guarded(Snapshot):
    """A snapshot with the exclusion state of the stage it was read for; ``stages`` also holds
    the mutex holder's record and the choice group's members' records."""

    exclusions: Exclusions = field(default_factory=Exclusions)


def needs_exclusion(stage: StageExecution) -> bool:
    """Whether ``stage`` may start only where its exclusion state was read (StartStage)."""
    return bool(stage.mutex_key or stage.deferred_choice_group)


def mutex_of(snap: Snapshot) -> MutexState | None:
    """The mutex state ``snap`` holds, if it was read with one."""
    return snap.exclusions.mutex if isinstance(snap, Guarded) else None


def _write(t: Transition, state: MutexState) -> None:
    name = mutex_field(state.key)
    t.check(name, state.version)
    t.writes[name] = state.encode()


def _hand_off(t: Transition, state: MutexState, kw: dict[str, Any]) -> None:
    """The holder is done: the first waiter becomes the designated holder (its StartStage sent
    in ``t``), or the mutex is free."""
    previous = state.holder
    if state.waiters:
        state.holder, state.attempt = state.waiters.pop(0), DESIGNATED
        t.push(StartStage(stage_id=state.holder, **kw))
        t.event(MUTEX_HANDED_OVER, "stage", state.holder,
                {"mutex_key": state.key, "from": previous, "to": state.holder})
    else:
        state.holder, state.attempt = None, DESIGNATED
        if previous is not None:
            t.event(MUTEX_RELEASED, "stage", previous, {"mutex_key": state.key, "from": previous})
    _write(t, state)


def holder_live(state: MutexState, records: Mapping[str, StageRecord]) -> bool:
    """The holder still holds: designated (its StartStage will take or pass it), or the run that
    took it is still running (``records`` must hold the holder's record; missing: removed)."""
    if state.holder is None:
        return False
    if state.attempt == DESIGNATED:
        return True
    rec = records.get(state.holder)
    return rec is not None and rec.attempt == state.attempt and rec.stage.status in HOLDING


def _check_holder(t: Transition, state: MutexState, records: Mapping[str, StageRecord]) -> None:
    rec = records.get(state.holder) if state.holder is not None else None
    if rec is not None and stage_field(rec.id) not in t.writes:
        t.check(stage_field(rec.id), rec.version)


def acquire(t: Transition, state: MutexState, rec: StageRecord, records: Mapping[str, StageRecord],
            kw: dict[str, Any]) -> bool:
    """``rec`` (ready, enabled, about to start) asks for its mutex in ``t``. True: it holds it
    now and starts in ``t``; False: it waits (it is among the waiters, once). A holder that no
    longer holds is passed over: its first other waiter is handed the mutex before ``rec``."""
    if state.holder == rec.id and state.attempt == DESIGNATED:
        return _take(t, state, rec)
    if not holder_live(state, records):
        _check_holder(t, state, records)
        state.waiters = [w for w in state.waiters if w != rec.id]
        if not state.waiters:
            return _take(t, state, rec)
        _hand_off(t, state, kw)
    if rec.id not in state.waiters:
        state.waiters.append(rec.id)
        _write(t, state)
        t.event(MUTEX_WAITING, "stage", rec.id, {"mutex_key": state.key, "holder": state.holder,
                                                 "position": len(state.waiters)})
    else:
        t.check(mutex_field(state.key), state.version)
    return False


def _take(t: Transition, state: MutexState, rec: StageRecord) -> bool:
    state.holder, state.attempt = rec.id, rec.attempt
    state.waiters = [w for w in state.waiters if w != rec.id]
    _write(t, state)
    t.event(MUTEX_ACQUIRED, "stage", rec.id, {"mutex_key": state.key})
    return True


def release(t: Transition, state: MutexState | None, rec: StageRecord, kw: dict[str, Any]) -> None:
    """``rec``'s stage ends (or is canceled) in ``t``: if it holds its mutex, hand the mutex on;
    if it waits, it leaves the waiters."""
    if state is None:
        return
    if state.holder == rec.id:
        _hand_off(t, state, kw)
    elif rec.id in state.waiters:
        state.waiters.remove(rec.id)
        _write(t, state)


def tidy(t: Transition, state: MutexState, rec: StageRecord, records: Mapping[str, StageRecord],
         kw: dict[str, Any]) -> None:
    """After StartStage decided ``rec``: a mutex whose holder no longer holds is handed on - the
    holder is ``rec`` and it did not start (a designated holder that was not ready, was skipped
    or canceled; a reset or finished one), or another holder that finished or was reset."""
    if state.holder == rec.id:
        if rec.stage.status in HOLDING and state.attempt == rec.attempt:
            return
        _hand_off(t, state, kw)
    elif state.holder is not None and not holder_live(state, records):
        _check_holder(t, state, records)
        _hand_off(t, state, kw)


def start_gate(snap: Snapshot, kw: dict[str, Any]) -> Callable[[Transition, StageRecord], bool] | None:
    """The gate ``claim.claim_ready_stage`` asks before starting a stage read into ``snap`` with
    its exclusion state (None: ``snap`` holds none): the mutex first (a waiting stage has not
    started, so it has not taken its choice), then the deferred choice."""
    if not isinstance(snap, Guarded):
        return None
    ex = snap.exclusions

    def gate(t: Transition, rec: StageRecord) -> bool:
        if ex.mutex is not None and not acquire(t, ex.mutex, rec, snap.stages, kw):
            return False
        return ex.choice is None or choose(t, ex.choice, rec, snap.stages, kw)

    return gate
