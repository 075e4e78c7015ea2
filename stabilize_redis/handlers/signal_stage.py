"""Signals (WCP-23/24): ``TaskResult.suspend()`` and the ``SignalStage`` message.

Contracts:

* A task that returns ``suspend()`` leaves its task and stage SUSPENDED in one commit
  (``commit_suspension``, called by RunTask). That commit reads the stage's signal buffer
  (``keys.signal_buffer_field``) and checks its version: if a persistent signal is buffered,
  the oldest one is consumed instead - the task stays RUNNING with ``_signal_name`` /
  ``_signal_data`` in the stage context and a RunTask queued, in that same commit.
* ``SignalStage`` to a SUSPENDED stage resumes its suspended task the same way (RUNNING,
  context, RunTask). To a finished stage it is refused (acked, ``signal.refused`` event). To a
  stage that is not suspended (still so when the commit lands: the stage's version is checked):
  a transient signal is discarded (``signal.discarded`` event); a
  persistent one is appended to the buffer - up to ``signal_buffer_max()`` signals
  (``STABILIZE_SIGNAL_BUFFER_MAX``, default 1000, as in stabilize); beyond it the message is
  dead-lettered ``signal_buffer_full``.
* Exactly once: the buffering commit checks the stage's version and the suspending commit
  checks the buffer's version, so whichever commits second CONFLICTs and decides again on the
  other's result - an early signal is never lost and never applied twice.
* The workflow shows SUSPENDED while it only waits on signals (``decisions.waiting``): the
  suspending commit reads every stage (and each join counter) and, when none keeps the workflow
  busy, writes the workflow meta SUSPENDED, checking the version of every stage it read (a
  stage changing meanwhile makes it decide again); reads of the whole workflow apply the same
  rule to what is stored (``layout.workflow_from_hash``). The commit that resumes a stage of a
  SUSPENDED workflow writes it RUNNING (``reopen_if_suspended``; RunTask calls it too, for a
  stage started another way - a jump or restart - while the workflow showed SUSPENDED).
  Completion rules are unchanged: CompleteWorkflow decides as before.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery
from stabilize_redis.decisions.claim import stale
from stabilize_redis.decisions.codec import StageRecord, meta_from_dict, pack, unpack
from stabilize_redis.decisions.common import attach, known_stage, stage_event_data
from stabilize_redis.decisions.layout import meta_extras
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.sub_workflow import start_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.decisions.waiting import blocker
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.task_lookup import find_task
from stabilize_redis.keys import STAGE_IDS_FIELD, join_counter, signal_buffer_field, stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import Message, RunTask, SignalStage
from stabilize_redis.tasks.result import TaskResult

log = logging.getLogger("stabilize_redis.handlers")

SIGNAL_BUFFER_MAX_ENV = "STABILIZE_SIGNAL_BUFFER_MAX"
DEFAULT_SIGNAL_BUFFER_MAX = 1000
STATUS_SCAN_LIMIT = 2000
"""A workflow with more stages is never shown SUSPENDED (the suspending commit would read them all)."""

_S = WorkflowStatus


def signal_buffer_max() -> int:
    """Persistent signals buffered per stage at most (``STABILIZE_SIGNAL_BUFFER_MAX``, >= 0)."""
    raw = os.environ.get(SIGNAL_BUFFER_MAX_ENV, "")
    try:
        return max(0, int(raw)) if raw.strip() else DEFAULT_SIGNAL_BUFFER_MAX
    except ValueError:
        log.warning("ignoring %s=%r (not an integer)", SIGNAL_BUFFER_MAX_ENV, raw)
        return DEFAULT_SIGNAL_BUFFER_MAX


def decode_buffer(raw: bytes | None) -> list[dict[str, Any]]:
    return list(unpack(raw)) if raw else []


def buffered_signals(backend: Any, workflow_id: str, stage_id: str) -> list[dict[str, Any]]:
    """The signals buffered for a stage, oldest first (inspection)."""
    raw, _ = backend.read_fields(workflow_id, [signal_buffer_field(stage_id)])[signal_buffer_field(stage_id)]
    return decode_buffer(raw)


def deliver(t: Transition, rec: StageRecord, task: TaskExecution, name: str, data: dict[str, Any],
            kw: dict[str, Any], how: str) -> None:
    """Resume ``task`` of ``rec`` with a signal: task and stage RUNNING, the signal in the stage
    context, a RunTask of this run of the stage queued and a ``stage.signaled`` event (``how``:
    'delivered' to a suspended stage, or 'consumed' from the buffer by the suspension)."""
    task.status = _S.RUNNING
    rec.stage.status = _S.RUNNING
    rec.stage.context["_signal_name"] = name
    rec.stage.context["_signal_data"] = data
    t.write_stage(rec)
    t.push(RunTask(stage_id=rec.id, task_id=task.id, task_type=task.implementing_class,
                   attempt_token=rec.attempt, **kw))
    t.event("stage.signaled", "stage", rec.id, stage_event_data(rec, signal_name=name, how=how))


def reopen_if_suspended(t: Transition, snap: Snapshot) -> None:
    """If the workflow shows SUSPENDED, write it RUNNING in ``t`` (guarded by the meta version)
    and update ``snap.meta`` so later decisions on ``snap`` see it RUNNING."""
    if snap.meta is None or snap.meta["status"] != _S.SUSPENDED.name:
        return
    snap.meta["status"] = _S.RUNNING.name
    wf = meta_from_dict(snap.meta)
    t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
    t.event("workflow.resumed", "workflow", snap.workflow_id, {"status": _S.RUNNING.name, "by": "signal"})


def commit_suspension(handler: Handler, message: RunTask, delivery: Delivery | None,
                      result: TaskResult) -> str:
    """Commit a task's ``suspend()`` result (see the module contract). Returns the outcome."""
    wid, sid, tid = message.execution_id, message.stage_id, message.task_id
    kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}
    buffer_name = signal_buffer_field(sid)

    def read() -> tuple[Snapshot, dict[str, tuple[bytes | None, int]]]:
        backend = handler.backend
        ids = backend.stage_ids(wid)
        if len(ids) > STATUS_SCAN_LIMIT:
            ids = [sid]
        snap = backend.read(wid, ids, counters=[join_counter(i) for i in ids if i != sid])
        return snap, backend.read_fields(wid, [buffer_name, STAGE_IDS_FIELD])

    state: dict[str, Any] = {}

    def snapshot() -> Snapshot:
        snap, state["fields"] = read()
        return snap

    def decide(snap: Snapshot) -> Transition:
        t = Transition(wid)
        rec = snap.stages.get(sid)
        task = find_task(rec.stage.tasks, tid) if rec is not None else None
        if snap.meta is None or rec is None or task is None or task.status != _S.RUNNING or stale(message, rec):
            return t  # another run's task now, or it ended meanwhile: discarded
        attach(snap)
        stage = rec.stage
        stage.context.update(result.context)
        stage.outputs.update(result.outputs)
        start_child(t, rec, kw)  # a SubWorkflowTask's child starts with this suspension
        raw, version = state["fields"][buffer_name]
        t.check(buffer_name, version)
        buffer = decode_buffer(raw)
        if buffer:
            signal = buffer.pop(0)
            t.writes[buffer_name] = pack(buffer)
            deliver(t, rec, task, signal.get("signal_name", ""), signal.get("signal_data") or {}, kw, "consumed")
            reopen_if_suspended(t, snap)
            return t
        task.status = _S.SUSPENDED
        stage.status = _S.SUSPENDED
        t.write_stage(rec)
        t.event("stage.suspended", "stage", sid, stage_event_data(rec, task_id=tid))
        if snap.meta["status"] != _S.RUNNING.name or snap.meta.get("canceled"):
            return t
        busy = blocker(snap.stages, snap.counters, snap.thresholds, sid)
        if busy is not None:  # the decision "not only waiting" rests on this stage
            t.check(stage_field(busy), snap.stages[busy].version)
            return t
        ids_raw, ids_version = state["fields"][STAGE_IDS_FIELD]
        if not set(unpack(ids_raw) if ids_raw else ()) <= set(snap.stages):
            return t  # over STATUS_SCAN_LIMIT, or a stage was added between the two reads
        t.check(STAGE_IDS_FIELD, ids_version)
        for other in snap.stages.values():
            if other.id != sid:
                t.check(stage_field(other.id), other.version)
        wf = meta_from_dict(snap.meta)
        wf.status = _S.SUSPENDED
        t.write_meta(wf, meta_extras(snap.meta), snap.meta_version)
        t.event("workflow.suspended", "workflow", wid, {"status": _S.SUSPENDED.name, "stage_id": sid})
        return t

    return handler.transact(message, delivery, snapshot, decide)


class SignalStageHandler(Handler):
    """SignalStage: deliver, buffer, discard or refuse a signal (module contract). A signal to
    a workflow or stage that does not exist is dead-lettered ``unknown_target``."""

    message_type = SignalStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, SignalStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}
        buffer_name = signal_buffer_field(sid)
        limit = signal_buffer_max()
        fields: dict[str, tuple[bytes | None, int]] = {}
        overflow: list[int] = []

        def read() -> Snapshot:
            snap = self.backend.read(wid, [sid])
            fields.update(self.backend.read_fields(wid, [buffer_name]))
            return snap

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            overflow.clear()
            rec = known_stage(snap, sid)
            stage = rec.stage
            info = stage_event_data(rec, signal_name=message.signal_name, persistent=message.persistent,
                                    stage_status=stage.status.name)
            task = next((x for x in stage.tasks if x.status == _S.SUSPENDED), None)
            if stage.status == _S.SUSPENDED and task is not None:
                deliver(t, rec, task, message.signal_name, dict(message.signal_data), kw, "delivered")
                reopen_if_suspended(t, snap)
                return t
            if stage.status.is_complete or stage.status == _S.SUSPENDED:
                t.event("signal.refused", "stage", sid, {**info, "reason": "the stage has finished"
                                                         if stage.status.is_complete else "no suspended task"})
                return t
            if not message.persistent:
                # the stage must still not be suspended when the discard commits: a suspension that
                # lands first makes this CONFLICT, and the signal is then delivered
                t.check(stage_field(sid), rec.version)
                t.event("signal.discarded", "stage", sid, {**info, "reason": "transient signal to a stage "
                                                           "that is not SUSPENDED"})
                return t
            raw, version = fields[buffer_name]
            buffer = decode_buffer(raw)
            if len(buffer) >= limit:
                overflow.append(len(buffer))
                return t
            buffer.append({"signal_name": message.signal_name, "signal_data": dict(message.signal_data)})
            t.check(stage_field(sid), rec.version)  # it must still not be suspended at commit
            t.check(buffer_name, version)
            t.writes[buffer_name] = pack(buffer)
            t.event("signal.buffered", "stage", sid, {**info, "depth": len(buffer)})
            return t

        def decide_or_overflow(snap: Snapshot) -> Transition:
            t = decide(snap)
            if overflow:
                raise _Overflow(overflow[0])
            return t

        try:
            return self.transact(message, delivery, read, decide_or_overflow)
        except _Overflow as full:
            return self._dead_letter_full(message, delivery, full.depth, limit)

    def _dead_letter_full(self, message: SignalStage, delivery: Delivery | None, depth: int, limit: int) -> str:
        text = (f"signal_buffer_full: stage {message.stage_id} holds {depth} buffered signals "
                f"(limit {limit}, {SIGNAL_BUFFER_MAX_ENV}); signal {message.signal_name!r} not buffered")
        if delivery is None:
            delivery = Delivery(self.backend.part(message.workflow_id).index, "", message.message_id or "",
                                message.encode().encode())
        if not self.backend.dead_letter(delivery, "signal_buffer_full", text, unless_processed=True,
                                        workflow_id=message.workflow_id):
            return CommitOutcome.DUPLICATE
        log.warning("dead-lettered SignalStage %s: %s", message.message_id, text)
        return "dead"


class _Overflow(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


__all__ = ["DEFAULT_SIGNAL_BUFFER_MAX", "SIGNAL_BUFFER_MAX_ENV", "SignalStageHandler", "buffered_signals",
           "commit_suspension", "deliver", "reopen_if_suspended", "signal_buffer_max"]
