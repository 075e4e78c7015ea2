"""RunTask: execute user task code once per delivery and commit what it produced.

Pre-checks (canceled, paused, manual skip, timeout) come first. The task runs outside any
lock; its outcome is then committed with the usual read -> decide -> commit loop, where a
CONFLICT re-reads and re-applies the same outcome (the task is not run again). A zombie
worker's late commit is rejected by the dedup record of the RunTask message it ran.

Timeouts: a RetryableTask's own timeout (or the stage's ``stageTimeoutMs``) bounds the task
from its start and abandons an execution that outlives it. Every other task is bounded by
``EngineConfig.default_task_timeout_s``, checked before each execution and when one returns
``running()``: a task still RUNNING past it fails TERMINAL ("timed out", ``on_timeout`` first).
One execution of such a task is not interrupted (that costs a helper thread per execution).

Attempts: a task's transient failures are counted in its stage record (``StageRecord.tries``),
not in the message: each retry is a new RunTask message whose delivery ``attempts`` start at 0,
so handler failures (bounded by ``message_max_attempts``) and task retries (bounded by
``task_max_attempts``) never use up each other's budget.

An outcome holding a value that cannot be stored (``task_execution.vet_outcome``), or whose
transition still fails to encode, fails the task (TERMINAL, StateEncodingError in its exception
details) in that same single commit: it is never retried, dead-lettered or left RUNNING.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.backend.view_reads import redis_reads
from stabilize_redis.context.ancestor_context import with_view
from stabilize_redis.decisions.claim import stale
from stabilize_redis.decisions.codec import StageRecord, StateEncodingError, storable_text
from stabilize_redis.decisions.common import (
    PENDING_JUMP,
    UnknownTarget,
    attach,
    known_stage,
    known_task,
    now_ms,
)
from stabilize_redis.decisions.flow import SETTLE_COUNTERS
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.complete_task import finish_task
from stabilize_redis.handlers.signal_stage import commit_suspension, reopen_if_suspended
from stabilize_redis.handlers.task_execution import (
    Outcome,
    error_text,
    exception_details,
    execute,
    poll_backoff,
    task_timeout,
    vet_outcome,
)
from stabilize_redis.handlers.task_lookup import find_task, resolve_task
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import JumpToStage, Message, PauseTask, RunTask
from stabilize_redis.tasks.interface import RetryableTask, SkippableTask, Task
from stabilize_redis.tasks.result import TaskResult

log = logging.getLogger("stabilize_redis.handlers")

_FORWARD = {WorkflowStatus.SUCCEEDED, WorkflowStatus.SKIPPED,
            WorkflowStatus.FAILED_CONTINUE, WorkflowStatus.STOPPED}


class RunTaskHandler(Handler):
    message_type = RunTask

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, RunTask)
        # The task's cancellation token exists before the read: a cancel committed after the read
        # is published to a token that is already listening, never to none.
        self.ctx.tokens.open(message.task_id, (message.execution_id, message.stage_id))
        try:
            return self._handle(message, delivery)
        finally:
            self.ctx.tokens.close(message.task_id)

    def _handle(self, message: RunTask, delivery: Delivery | None) -> str:
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id

        snap = self.backend.read(wid, [sid], processed_id=message.message_id, counters=SETTLE_COUNTERS,
                                 with_downstreams=True)
        if snap.processed:  # already committed: a redelivery must not run user code again
            return self.backend.commit(Transition(wid), message, delivery)
        try:
            rec = known_stage(snap, sid)
            task = known_task(snap, rec, tid)
        except UnknownTarget as e:
            return self.unknown_target(message, delivery, e)
        if task.status != WorkflowStatus.RUNNING or stale(message, rec):
            return self.backend.commit(Transition(wid), message, delivery)
        wf = attach(snap)
        stage = rec.stage
        impl = resolve_task(self.ctx.registry, task, message.task_type)

        outcome: Outcome
        if impl is None:
            outcome = Outcome(result=TaskResult.terminal(
                f"no task registered for implementing_class {task.implementing_class!r}"))
        elif wf.is_canceled or wf.status.is_complete:
            outcome = self._canceled(impl, rec, wf.is_canceled)
        elif wf.status == WorkflowStatus.PAUSED:
            return self._paused(message, delivery, snap)
        elif stage.context.get("manualSkip") or (isinstance(impl, SkippableTask) and not impl.is_enabled(stage)):
            outcome = Outcome(result=TaskResult.skipped())
        else:
            # The task sees the stage; what it changes in place is not state (only its result
            # is), so the snapshot reused for the commit gets its context and outputs back.
            # ``execute`` sees its ancestors' outputs through its context, read as it asks.
            saved = copy.deepcopy((stage.context, stage.outputs))
            outcome = self._run(impl, rec, task)
            stage.context, stage.outputs = saved
        outcome = vet_outcome(outcome, _where(rec, task))
        if outcome.result is not None and outcome.result.status == WorkflowStatus.SUSPENDED:
            return commit_suspension(self, message, delivery, outcome.result)  # handlers.signal_stage
        return self._commit_outcome(message, delivery, impl, outcome, snap)

    # -- running -----------------------------------------------------------------------------

    def _run(self, impl: Task, rec: StageRecord, task: TaskExecution) -> Outcome:
        stage = rec.stage
        limit = task_timeout(impl, stage, self.config.default_task_timeout_s)
        default = self.config.default_task_timeout_s if limit is None and self.config.default_task_timeout_s > 0 \
            else None
        started = task.start_time or now_ms()
        remaining = None
        if limit is not None:
            remaining = limit - (now_ms() - started) / 1000.0
            if remaining <= 0:
                return self._timed_out(impl, rec, limit)
        elif default is not None and (now_ms() - started) / 1000.0 >= default:
            return self._timed_out(impl, rec, default)
        if isinstance(impl, RetryableTask):  # one execute() call may have a tighter limit of its own
            try:
                per_call = impl.get_execution_timeout(stage)
            except Exception as e:  # noqa: BLE001 - user code: the task fails with its error
                return Outcome(error=e)
            if per_call is not None and (remaining is None or per_call.total_seconds() < remaining):
                remaining = limit = max(per_call.total_seconds(), 0.0)
        stage.context = with_view(rec, redis_reads(self.backend, stage.execution.id))  # the caller restores it
        outcome = execute(impl, stage, self.ctx.tokens.open(task.id), remaining)  # handle() closes it
        if outcome.timed_out:
            return self._timed_out(impl, rec, limit or 0.0)
        if default is not None and outcome.result is not None and outcome.result.status == WorkflowStatus.RUNNING \
                and (now_ms() - started) / 1000.0 >= default:
            return self._timed_out(impl, rec, default)
        return outcome

    def _timed_out(self, impl: Task, rec: StageRecord, limit: float) -> Outcome:
        try:
            result = impl.on_timeout(rec.stage)
        except Exception as e:  # noqa: BLE001 - a failing hook still ends the task
            log.exception("on_timeout of stage %s failed", rec.stage.ref_id)
            result = TaskResult.terminal(f"task timed out after {limit:.1f}s; on_timeout failed: {e}")
        if result is None:
            result = TaskResult.terminal(f"task timed out after {limit:.1f}s")
        return Outcome(result=result, timed_out=True)

    def _canceled(self, impl: Task, rec: StageRecord, call_hook: bool) -> Outcome:
        result = TaskResult.canceled()
        if call_hook:
            try:
                hooked = impl.on_cancel(rec.stage)
            except Exception:  # noqa: BLE001
                log.exception("on_cancel of stage %s failed", rec.stage.ref_id)
                hooked = None
            if hooked is not None:
                kept = TaskResult(status=WorkflowStatus.CANCELED, context=hooked.context, outputs=hooked.outputs)
                vetted = vet_outcome(Outcome(result=kept), f"stage {rec.stage.ref_id!r}: on_cancel")
                if vetted.error is None:
                    result = kept
                else:  # the workflow is canceled either way; only the hook's values are dropped
                    log.warning("dropped on_cancel result: %s", vetted.error)
        return Outcome(result=result)

    # -- committing --------------------------------------------------------------------------

    @staticmethod
    def _kw(message: RunTask) -> dict[str, Any]:
        return {"execution_id": message.execution_id, "execution_type": message.execution_type,
                "stage_id": message.stage_id, "task_id": message.task_id, "attempt_token": message.attempt_token}

    def _paused(self, message: RunTask, delivery: Delivery | None, first_read: Snapshot) -> str:
        """The workflow is PAUSED: hand the task to PauseTask instead of running it. The choice
        depends on the meta, so its version is checked; if the workflow was resumed meanwhile
        the task is queued to run again instead."""
        wid, sid, tid = message.execution_id, message.stage_id, message.task_id
        reads = [first_read]

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = snap.stages.get(sid)
            task = find_task(rec.stage.tasks, tid) if rec is not None else None
            if snap.meta is None or rec is None or task is None or task.status != WorkflowStatus.RUNNING \
                    or stale(message, rec):
                return t
            t.check_meta(snap.meta_version)
            if snap.meta["status"] == WorkflowStatus.PAUSED.name:
                t.push(PauseTask(**self._kw(message)))
            else:
                t.push(RunTask(task_type=message.task_type, retry_count=message.retry_count, **self._kw(message)))
            return t

        return self.transact(message, delivery, lambda: reads.pop() if reads else self.backend.read(wid, [sid]),
                             decide)

    def _commit_outcome(self, message: RunTask, delivery: Delivery | None, impl: Task | None,
                        outcome: Outcome, first_read: Snapshot) -> str:
        """Commit the outcome, deciding first against the snapshot read before the task ran
        (its versions guard the commit) and re-reading only on CONFLICT."""
        wid, sid = message.execution_id, message.stage_id
        tid = message.task_id
        reads = [first_read]
        applied = [outcome]  # replaced by a failure if its transition cannot be encoded

        def read() -> Snapshot:
            return reads.pop() if reads else self.backend.read(wid, [sid], counters=SETTLE_COUNTERS,
                                                              with_downstreams=True)

        def apply(snap: Snapshot, current: Outcome) -> tuple[Transition, str]:
            t = Transition(wid)
            rec = snap.stages.get(sid)
            if snap.meta is None or rec is None:
                return t, ""
            attach(snap)
            task = find_task(rec.stage.tasks, tid)
            if task is None or task.status != WorkflowStatus.RUNNING or stale(message, rec):
                return t, ""  # another run's task now (a reset landed while this one ran): discarded
            reopen_if_suspended(t, snap)  # a task runs: the workflow no longer waits only on signals
            if current.result is not None:
                self._apply_result(t, snap, rec, task, impl, current.result, message)
            else:
                self._apply_error(t, snap, rec, task, current, message)
            return t, _where(rec, task)

        def decide(snap: Snapshot) -> Transition:
            t, where = apply(snap, applied[0])
            if applied[0] is not outcome:
                return t
            try:
                encode_now(t)
            except Exception as e:  # noqa: BLE001 - whatever msgpack/json raise, the task fails
                log.warning("%s: result cannot be encoded; failing the task", where, exc_info=True)
                applied[0] = Outcome(error=StateEncodingError(
                    f"{where} result cannot be encoded: {type(e).__name__}: {e}"))
                t, _ = apply(read(), applied[0])  # the failed decision changed ``snap`` in place
            return t

        return self.transact(message, delivery, read, decide)

    def _apply_result(self, t: Transition, snap: Snapshot, rec: StageRecord, task: TaskExecution,
                      impl: Task | None, result: TaskResult, message: RunTask) -> None:
        stage = rec.stage
        kw = self._kw(message)
        stage.context.update(result.context)
        rec.cat = [k for k in rec.cat if k not in result.context]  # written since the start: own wins
        stage.outputs.update(result.outputs)
        status = result.status
        if status == WorkflowStatus.RUNNING:
            fallback = self.config.task_backoff(message.retry_count)
            delay = poll_backoff(impl, stage, task, fallback) if impl is not None else fallback
            t.write_stage(rec)
            nxt = RunTask(task_type=message.task_type, retry_count=message.retry_count + 1,
                          attempts=message.attempts, **kw)
            t.push(nxt, delay)
            return
        if status == WorkflowStatus.REDIRECT:
            if result.target_stage_ref_id:
                self._redirect(t, rec, task, result, message)
                return
            stage.context["error"] = "REDIRECT result without target_stage_ref_id"
            self._finish(t, snap, rec, task, stage.failure_status(default=WorkflowStatus.TERMINAL),
                         WorkflowStatus.TERMINAL, message)
            return
        if status in _FORWARD:  # SUSPENDED never comes here: handle() commits it (signal_stage)
            self._finish(t, snap, rec, task, status, None, message)
            return
        if status not in (WorkflowStatus.CANCELED, WorkflowStatus.TERMINAL):
            status = WorkflowStatus.TERMINAL
        self._finish(t, snap, rec, task, stage.failure_status(default=status), status, message)

    @staticmethod
    def _redirect(t: Transition, rec: StageRecord, task: TaskExecution, result: TaskResult, message: RunTask) -> None:
        """The task jumps: it ends REDIRECT and a JumpToStage of this run of the stage is sent
        (its handler reads the region the jump resets: ``handlers.jump_to_stage``)."""
        task.status = WorkflowStatus.REDIRECT
        task.end_time = now_ms()
        t.write_stage(rec)
        assert result.target_stage_ref_id is not None
        rec.stage.context[PENDING_JUMP] = {"target": result.target_stage_ref_id, "context": dict(result.context),
                                           "outputs": dict(result.outputs), "attempt": rec.attempt}
        t.push(JumpToStage(execution_id=message.execution_id, execution_type=message.execution_type,
                           stage_id=rec.id, target_stage_ref_id=result.target_stage_ref_id,
                           jump_context=dict(result.context), jump_outputs=dict(result.outputs),
                           attempt_token=rec.attempt))
        t.event("task.redirected", "task", task.id, {"stage_id": rec.id, "name": task.name,
                                                    "target_stage_ref_id": result.target_stage_ref_id})

    def _finish(self, t: Transition, snap: Snapshot, rec: StageRecord, task: TaskExecution,
                status: WorkflowStatus, original: WorkflowStatus | None, message: RunTask) -> None:
        """The task ended: record it and route onward in this same commit (what a CompleteTask
        message would do, without the extra message)."""
        kw: dict[str, Any] = {"execution_id": message.execution_id, "execution_type": message.execution_type}
        finish_task(self.ctx, t, snap, rec, task, status, original, kw)

    def _apply_error(self, t: Transition, snap: Snapshot, rec: StageRecord, task: TaskExecution,
                     outcome: Outcome, message: RunTask) -> None:
        stage = rec.stage
        kw = self._kw(message)
        error = outcome.error
        assert error is not None
        attempt = rec.tries.get(task.id, 0) + 1
        if outcome.transient and attempt < self.config.task_max_attempts:
            stage.context.update(outcome.context_update)
            rec.tries[task.id] = attempt
            delay = outcome.retry_after if outcome.retry_after is not None \
                else self.config.task_backoff(attempt - 1) * random.uniform(0.8, 1.2)
            t.write_stage(rec)
            retry = RunTask(task_type=message.task_type, retry_count=message.retry_count, **kw)
            retry.set_error_context(error)
            t.push(retry, delay)
            t.event("task.retried", "task", task.id, {"stage_id": stage.id, "attempt": attempt,
                                                     "error": storable_text(error_text(error))[:500],
                                                     "delay_s": delay})
            return
        stage.context.update(outcome.context_update)
        details = exception_details(error, outcome.transient)
        if outcome.transient:
            details["details"]["attempts"] = attempt
        task.task_exception_details = {"exception": details}
        stage.context["exception"] = details
        self._finish(t, snap, rec, task, stage.failure_status(), WorkflowStatus.TERMINAL, message)


def _where(rec: StageRecord, task: TaskExecution) -> str:
    return f"stage {rec.stage.ref_id!r}: task {task.name!r}"


def encode_now(t: Transition) -> None:
    """Encode ``t``'s stage writes now (the commit would encode them later) and try its events
    as the commit will dump them (refusing NaN as PostgreSQL does), so a value that cannot be
    encoded raises here, where it can still fail the task, rather than in every commit."""
    t.encode_stages()
    for event in t.events:
        _EVENT_JSON.encode(event)


_EVENT_JSON = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)
