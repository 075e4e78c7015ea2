"""Control handlers: CancelWorkflow, CancelStage, PauseTask, ResumeStage.

Each decision's read set holds everything it depended on: the stage versions it writes, and the
workflow meta's version whenever the decision looked at the workflow (PauseTask and ResumeStage
decide by its status), so an unpause landing between read and commit makes the commit CONFLICT
and the decision is made again on the new state.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.exclusion_reads import read_exclusions
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import stale
from stabilize_redis.decisions.common import (
    attach,
    known_stage,
    known_task,
    known_workflow,
    now_ms,
    stage_event_data,
)
from stabilize_redis.decisions.flow import notify_parent, settle_stage
from stabilize_redis.decisions.global_mutex import release_held
from stabilize_redis.decisions.layout import meta_extras, settlement
from stabilize_redis.decisions.milestones import wake_watchers
from stabilize_redis.decisions.mutex import mutex_of
from stabilize_redis.decisions.mutex import release as mutex_release
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.sub_workflow import cancel_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import (
    CancelStage,
    CancelWorkflow,
    CompleteWorkflow,
    Message,
    PauseTask,
    ResumeStage,
    RunTask,
)

_CANCELABLE_TASK = (WorkflowStatus.NOT_STARTED, WorkflowStatus.RUNNING, WorkflowStatus.PAUSED,
                    WorkflowStatus.SUSPENDED)


class CancelWorkflowHandler(Handler):
    """Flag the workflow canceled and cancel its unfinished top-level stages; the CancelStage
    that settles the last of them releases CompleteWorkflow (no delayed re-check). When none of
    them can (all settled already: nothing left to cancel, or stages that can never start),
    CompleteWorkflow is sent at once.

    The read set is the meta (written): the stage statuses only choose which CancelStage
    messages to send, and each CancelStage re-checks its stage (one that finished meanwhile is
    left as it is), so a stage changing after the read cannot make the decision wrong."""

    message_type = CancelWorkflow

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CancelWorkflow)
        wid = message.execution_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            meta = known_workflow(snap)
            wf = attach(snap)
            if wf.status.is_complete:
                return t
            wf.is_canceled = True
            wf.canceled_by = message.user or "anonymous"
            wf.cancellation_reason = message.reason or None
            t.write_meta(wf, meta_extras(meta), snap.meta_version)
            pending = [rec for rec in snap.stages.values()
                       if rec.stage.parent_stage_id is None and not rec.stage.status.is_complete]
            for rec in pending:
                t.push(CancelStage(stage_id=rec.id, **kw))
            settled = settlement(snap.stages).settled
            if all(rec.id in settled for rec in pending):  # no CancelStage can settle the last one
                t.push(CompleteWorkflow(**kw))
            return t

        return self.transact(message, delivery,
                             lambda: self.backend.read(wid, self.backend.stage_ids(wid)), decide)


class CancelStageHandler(Handler):
    """Cancel an unfinished stage and its unfinished tasks. The commit publishes the ids of tasks
    that were running, and every worker's listener cancels the token of any it is executing.

    A top-level stage settles (CANCELED, halted) in the same commit, with the downstreams that
    can no longer start; if that settles the last top-level stage the commit releases
    CompleteWorkflow, so the workflow ends at once rather than at the next stall sweep. Like
    stabilize, a canceled stage does not end its workflow's other branches. A stage with a
    ``mutex_key`` is read with its mutex: holding it, the commit hands it to the first waiter;
    waiting, the stage leaves the waiters."""

    message_type = CancelStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CancelStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}
        canceled_tasks: list[str] = []

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            canceled_tasks.clear()
            rec = known_stage(snap, sid)
            if rec.stage.status.is_complete:
                return t
            attach(snap)
            for task in rec.stage.tasks:
                if task.status in _CANCELABLE_TASK:
                    if task.status == WorkflowStatus.RUNNING:
                        canceled_tasks.append(task.id)
                    task.status = WorkflowStatus.CANCELED
                    task.end_time = now_ms()
            cancel_child(t, rec, kw, f"parent stage {rec.stage.ref_id} canceled")
            rec.stage.status = WorkflowStatus.CANCELED
            rec.stage.end_time = now_ms()
            t.write_stage(rec)
            for task_id in canceled_tasks:
                t.publish(self.backend.keys.cancel_channel, task_id)
            t.event("stage.canceled", "stage", sid, stage_event_data(rec, status="CANCELED"))
            mutex_release(t, mutex_of(snap), rec, kw)  # a holder hands its mutex on; a waiter leaves
            release_held(t, rec, kw)
            wake_watchers(t, rec, kw)  # a canceled milestone has passed its watchers
            if rec.stage.parent_stage_id is None:
                settle_stage(t, rec, kw)
            else:  # its parent's phase can no longer complete: the parent is told at once
                notify_parent(t, rec, kw, halted=True)
            return t

        def read() -> Snapshot:
            snap = self.backend.read(wid, [sid])
            rec = snap.stages.get(sid)
            return read_exclusions(self.backend, snap, rec) if rec is not None and rec.stage.mutex_key else snap

        return self.transact(message, delivery, read, decide)


class PauseTaskHandler(Handler):
    """The task and its stage become PAUSED; ResumeStage continues them. If the workflow was
    resumed before this message arrived, the task simply runs again."""

    message_type = PauseTask

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, PauseTask)
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            task = known_task(snap, rec, tid)
            if task.status != WorkflowStatus.RUNNING or stale(message, rec):
                return t
            t.check_meta(snap.meta_version)
            if known_workflow(snap)["status"] != WorkflowStatus.PAUSED.name:
                t.push(RunTask(execution_id=wid, execution_type=message.execution_type, stage_id=sid,
                               task_id=tid, task_type=task.implementing_class, attempt_token=rec.attempt))
                return t
            task.status = WorkflowStatus.PAUSED
            rec.stage.status = WorkflowStatus.PAUSED
            t.write_stage(rec)
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)


class ResumeStageHandler(Handler):
    """A PAUSED stage and its first PAUSED task run again; a PAUSED workflow resumes."""

    message_type = ResumeStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, ResumeStage)
        wid, sid = message.execution_id, message.stage_id

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            if rec.stage.status != WorkflowStatus.PAUSED:
                return t
            wf = attach(snap)
            t.check_meta(snap.meta_version)
            task = next((x for x in rec.stage.tasks if x.status == WorkflowStatus.PAUSED), None)
            rec.stage.status = WorkflowStatus.RUNNING
            if wf.status == WorkflowStatus.PAUSED:
                wf.resume()
                t.write_meta(wf, meta_extras(known_workflow(snap)), snap.meta_version)
            t.write_stage(rec)
            if task is not None:
                task.status = WorkflowStatus.RUNNING
                t.push(RunTask(execution_id=wid, execution_type=message.execution_type, stage_id=sid,
                               task_id=task.id, task_type=task.implementing_class, attempt_token=rec.attempt))
            return t

        return self.transact(message, delivery, lambda: self.backend.read(wid, [sid]), decide)
