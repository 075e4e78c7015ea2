"""CompleteWorkflow: decide the workflow's final status from its top-level stages, at once.

The commit that settles the workflow's last top-level stage releases this message once (the
settled count, ``decisions.layout``); a top-level stage that ends TERMINAL or CANCELED releases it
early, as stabilize does. Either way it is decided here from the stages read, without waiting:

* every top-level stage settled (a final status, or never able to start because an upstream
  halted): SUCCEEDED if all ran continuably, else TERMINAL if one is TERMINAL, else CANCELED if
  one is CANCELED (or the workflow was canceled), else - only STOPPED branches - SUCCEEDED, or
  TERMINAL when ``completeOtherBranchesThenFail`` is set in the workflow's or a stopped stage's
  context;
* not every stage settled, but one is TERMINAL (or CANCELED): the workflow ends so now and its
  running top-level stages get CancelStage (stabilize's fail-fast rule);
* otherwise (a redundant or early message): nothing - the commit that settles the last stage
  releases the message again. No handler re-queues it, polls or waits.

A CANCELED workflow's stages that never started are recorded CANCELED too. A child workflow
(``decisions.sub_workflow``) sends its parent stage its result as a persistent signal in the same
commit. Reading every stage
costs once per workflow, not per transition; every stage version read is in the read set.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import attach, known_workflow, now_ms
from stabilize_redis.decisions.concurrency import release_message
from stabilize_redis.decisions.deferred_choice import CHOICE_LOST_TO
from stabilize_redis.decisions.global_mutex import release_held
from stabilize_redis.decisions.layout import meta_extras, settlement
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.sub_workflow import done_signal
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.keys import stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.queue.messages import CancelStage, CompleteWorkflow, Message
from stabilize_redis.stages.multi_instance_shape import MI_NOT_NEEDED

_S = WorkflowStatus
_UNFINISHED = (_S.RUNNING, _S.PAUSED, _S.SUSPENDED)


def final_status(statuses: list[WorkflowStatus], complete_other_branches_then_fail: bool,
                 canceled: bool = False) -> WorkflowStatus:
    """The final status of a workflow whose top-level stages have all settled, from their
    statuses (NOT_STARTED ones never ran: an upstream halted)."""
    ran = [s for s in statuses if s != _S.NOT_STARTED]
    if len(ran) == len(statuses) and all(s in CONTINUABLE_STATUSES for s in ran):
        return _S.SUCCEEDED
    if _S.TERMINAL in ran:
        return _S.TERMINAL
    if _S.CANCELED in ran or canceled:
        return _S.CANCELED
    if _S.STOPPED in ran:
        return _S.TERMINAL if complete_other_branches_then_fail else _S.SUCCEEDED
    return _S.TERMINAL


def outcome_status(stage: StageExecution) -> WorkflowStatus:
    """A top-level stage's status as the workflow's outcome counts it: a deferred choice's losing
    branch (canceled by the winner, ``deferred_choice.CHOICE_LOST_TO``) was simply not taken, and
    so was an instance its multi-instance join no longer needed (``MI_NOT_NEEDED``)."""
    if stage.status == _S.CANCELED and (stage.context.get(CHOICE_LOST_TO) or stage.context.get(MI_NOT_NEEDED)):
        return _S.SKIPPED
    return stage.status


def early_status(statuses: list[WorkflowStatus]) -> WorkflowStatus | None:
    """The status a workflow ends with before every stage settled (stabilize's rule: any
    TERMINAL top-level stage, else any CANCELED one), or None: wait for the settled count."""
    if _S.TERMINAL in statuses:
        return _S.TERMINAL
    if _S.CANCELED in statuses:
        return _S.CANCELED
    return None


def _override_success(context: dict[str, Any], top: list[StageExecution]) -> bool:
    return bool(context.get("completeOtherBranchesThenFail")) or any(
        s.status == _S.STOPPED and s.context.get("completeOtherBranchesThenFail") for s in top)


class CompleteWorkflowHandler(Handler):
    message_type = CompleteWorkflow

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CompleteWorkflow)
        wid = message.execution_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def read() -> Snapshot:
            return self.backend.read(wid, self.backend.stage_ids(wid))

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            meta = known_workflow(snap)
            wf = attach(snap)
            if wf.status.is_complete:
                return t
            t.check_meta(snap.meta_version)
            for rec in snap.stages.values():
                t.check(stage_field(rec.id), rec.version)
            top = [r for r in snap.stages.values() if r.stage.parent_stage_id is None]
            statuses = [outcome_status(r.stage) for r in top]
            status: WorkflowStatus | None
            if settlement(snap.stages).complete:
                status = final_status(statuses, _override_success(wf.context, [r.stage for r in top]),
                                      wf.is_canceled)
            else:
                status = early_status(statuses)
            if status is None:
                return t
            wf.status = status
            wf.end_time = now_ms()
            t.write_meta(wf, meta_extras(meta), snap.meta_version)
            if status != _S.SUCCEEDED:
                for rec in top:
                    if rec.stage.status in _UNFINISHED:
                        t.push(CancelStage(stage_id=rec.id, **kw))
            if status == _S.CANCELED:
                for rec in snap.stages.values():
                    if rec.stage.status == _S.NOT_STARTED:
                        rec.stage.status = _S.CANCELED
                        rec.stage.end_time = wf.end_time
                        t.write_stage(rec)
            done = done_signal(wf.context, wid, message.execution_type, status, snap.stages.values())
            if done is not None:  # a child: its parent stage is told, in this commit
                t.push(done)
            for rec in snap.stages.values():  # a stage waiting for (or done with) a global mutex lets go
                if rec.stage.status == _S.NOT_STARTED or rec.stage.status.is_complete:
                    before = len(t.messages)
                    release_held(t, rec, kw)
                    if len(t.messages) > before:
                        t.write_stage(rec)
            release = release_message(wf, message.execution_type)
            if release is not None:  # a limited workflow: its slot (or place in line) is freed
                t.push(release)
            kind = {_S.SUCCEEDED: "workflow.completed", _S.CANCELED: "workflow.canceled"}.get(status, "workflow.failed")
            t.event(kind, "workflow", wid, {"status": status.name, "end_time": wf.end_time,
                                            "duration_ms": wf.end_time - (wf.start_time or wf.end_time)})
            return t

        return self.transact(message, delivery, read, decide)
