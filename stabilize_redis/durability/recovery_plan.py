"""Which messages a workflow's committed state needs to make progress again. Pure: no I/O.

After Redis loses messages (a restore from Postgres, an AOF ``everysec`` window) a workflow's
state is intact but the messages that would move it on are gone. ``recovery_messages`` derives
them from the state alone, following stabilize's WorkflowRecovery rules adapted to this
engine's message flow:

* a complete workflow needs nothing;
* a canceled, unfinished workflow gets CancelWorkflow (the handler cancels what is left and
  completes it);
* a NOT_STARTED workflow gets StartWorkflow;
* a limited workflow (``decisions.concurrency``) that is BUFFERED, RUNNING or PAUSED asks its
  limit again (LimitAcquire: answered as before where the limit's record knows it, and
  re-registered where a restore lost the record, so a BUFFERED one never waits on nothing); a
  stage holding or waiting for a global mutex re-registers / asks again likewise
  (``decisions.global_mutex.recovery_ask``);
* for a RUNNING (or PAUSED) workflow, stage by stage:

  - RUNNING stage with a RUNNING task: RunTask for that task (the handler runs user code only
    while the task is RUNNING, so a task already finished is never run again);
  - RUNNING stage whose tasks are settled up to a NOT_STARTED one: CompleteTask(SKIPPED) when
    the task before it was skipped (that message was in flight), else StartTask for it;
  - RUNNING stage with no task left to run (or a halted task): CompleteStage (the handler
    settles the stage from its tasks and releases its downstreams);
  - NOT_STARTED stage whose upstreams are complete as its join requires (or a top-level stage
    with no upstream): StartStage, or SkipStage when a finished upstream's OR-split did not
    activate it. The StartStage handler re-checks readiness and ``stageEnabled``;
  - NOT_STARTED target of a committed jump (``decisions.common.JUMP_BYPASS``): StartStage,
    whatever its join says (the jump's own StartStage may have been lost);
  - RUNNING stage whose task ended REDIRECT with its jump not decided yet
    (``decisions.common.PENDING_JUMP``): that JumpToStage again (of the same run: a stale one is
    discarded by its handler);
  - a multi-merge stage between runs (finished a run, ``_mm_done`` not set): StartStage for it
    (its next run, or the release of its downstreams), and its downstreams wait as if it were
    running;
  - SUSPENDED stage waiting for a child workflow it started (``decisions.sub_workflow``): its
    StartSubWorkflow again, rebuilt from ``_sub_workflow_config`` (a no-op where the child
    exists: the child's id is the stage's);
  - PAUSED, SUSPENDED and BUFFERED stages or tasks: nothing (they wait for an operator or a
    signal);
  - and CompleteWorkflow when every top-level stage has settled (the settled count, recounted
    from the statuses by ``decisions.layout.settlement``: a final status, or a join that can no
    longer be met because an upstream halted), or when one of them is TERMINAL or CANCELED (the
    workflow ends at once, as CompleteWorkflow's fail-fast rule says). A STOPPED branch alone
    waits for the others, as in the normal flow.

Every message the plan produces is one the engine's normal flow would have had pending for the
same state, and every handler re-checks the state it acts on, so a message the workflow
already had is a harmless no-op: nothing already completed is redone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stabilize_redis.dag.readiness import PredicatePhase, evaluate_readiness
from stabilize_redis.decisions.codec import StageRecord, decode_stage, meta_from_dict, unpack
from stabilize_redis.decisions.common import JUMP_BYPASS, PENDING_JUMP
from stabilize_redis.decisions.concurrency import acquire_message, is_limited
from stabilize_redis.decisions.flow import activated_downstreams
from stabilize_redis.decisions.global_mutex import recovery_ask
from stabilize_redis.decisions.layout import settlement
from stabilize_redis.decisions.multi_merge import MM_DONE
from stabilize_redis.decisions.sub_workflow import resend_start
from stabilize_redis.keys import META_FIELD, STAGE_IDS_FIELD, stage_field, version_field
from stabilize_redis.models.stage import JoinType, StageExecution, SyntheticStageOwner
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import (
    CancelWorkflow,
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    ContinueParentStage,
    JumpToStage,
    Message,
    RunTask,
    SkipStage,
    StartStage,
    StartTask,
    StartWorkflow,
)

_S = WorkflowStatus
_WAITING = frozenset({_S.PAUSED, _S.SUSPENDED, _S.BUFFERED, _S.REDIRECT})
"""Task statuses that wait for something other than a lost message (REDIRECT: unless its jump
is pending, see ``_running_stage``)."""
_ENDS_EARLY = frozenset({_S.TERMINAL, _S.CANCELED})
"""Top-level stage statuses that end the workflow before its other branches settle."""


def decode_workflow(raw: Mapping[bytes, bytes]) -> tuple[Workflow, dict[str, StageRecord]] | None:
    """A workflow hash's fields (as HGETALL returns them, or a snapshot's) as the Workflow (stages
    in insertion order, strongly linked) and its stage records by stage id; None without meta."""
    meta_blob = raw.get(META_FIELD.encode())
    if meta_blob is None:
        return None
    wf = meta_from_dict(unpack(meta_blob))
    ids_blob = raw.get(STAGE_IDS_FIELD.encode())
    ids: list[str] = list(unpack(ids_blob)) if ids_blob is not None else []
    records: dict[str, StageRecord] = {}
    for sid in ids:
        blob = raw.get(stage_field(sid).encode())
        if blob is None:
            continue
        version = int(raw.get(version_field(stage_field(sid)).encode(), b"0"))
        records[sid] = decode_stage(blob, version)
    wf.stages = [rec.stage for rec in records.values()]
    for stage in wf.stages:
        stage.set_execution_strong(wf)
    return wf, records


def plan_from_hash(raw: Mapping[bytes, bytes]) -> list[Message]:
    """``recovery_messages`` of a workflow given as its hash fields (empty without meta)."""
    decoded = decode_workflow(raw)
    if decoded is None:
        return []
    wf, records = decoded
    return recovery_messages(wf, records)


def recovery_messages(workflow: Workflow,
                      records: Mapping[str, StageRecord] | None = None) -> list[Message]:
    """The messages ``workflow``'s committed state needs (see the module docstring).

    ``records`` (stage id -> StageRecord, as stored) supply each stage's upstream ids and the
    downstream lists OR-splits are evaluated over; without them upstreams are found by
    requisite ref ids and OR-splits are not evaluated. Messages carry no id: the caller assigns
    them when enqueuing. The result is deterministic (workflow stage order)."""
    kw: dict[str, Any] = {"execution_id": workflow.id, "execution_type": workflow.type.name}
    status = workflow.status
    if status.is_complete:
        return []
    if workflow.is_canceled:
        return [CancelWorkflow(user=workflow.canceled_by or "recovery",
                               reason=workflow.cancellation_reason or "", **kw)]
    if status == _S.NOT_STARTED:
        return [StartWorkflow(**kw)]
    if status == _S.BUFFERED and is_limited(workflow):
        return [acquire_message(workflow, kw["execution_type"])]
    if status not in (_S.RUNNING, _S.PAUSED):
        return []
    by_id = {s.id: s for s in workflow.stages}
    out: list[Message] = [acquire_message(workflow, kw["execution_type"])] if is_limited(workflow) else []
    for stage in workflow.stages:
        rec = records.get(stage.id) if records is not None else None
        ask = recovery_ask(stage, rec.attempt if rec is not None else None, workflow.id, kw["execution_type"])
        if ask is not None:
            out.append(ask)
        if _between_runs(stage):
            out.append(StartStage(stage_id=stage.id, **kw))
        elif stage.status == _S.RUNNING:
            out.extend(_running_stage(stage, kw, rec.attempt if rec is not None else None,
                                      bool(rec is not None and rec.children)))
        elif stage.status == _S.NOT_STARTED:
            out.extend(_not_started_stage(stage, by_id, records, kw))
        elif stage.status == _S.SUSPENDED:
            start = resend_start(stage, workflow.id, kw["execution_type"])
            if start is not None:
                out.append(start)
    top = [s for s in workflow.stages if s.parent_stage_id is None]
    settled = settlement(records).complete if records is not None else all(s.status.is_complete for s in top)
    if top and (settled or any(s.status in _ENDS_EARLY for s in top)):
        out.append(CompleteWorkflow(**kw))
    return out


def _running_stage(stage: StageExecution, kw: dict[str, Any], attempt: int | None,
                   has_children: bool) -> list[Message]:
    skw = {**kw, "stage_id": stage.id}
    tkw = {**skw, "attempt_token": attempt}
    tasks = stage.tasks
    running = [t for t in tasks if t.status == _S.RUNNING]
    if running:
        return [RunTask(task_id=t.id, task_type=t.implementing_class, **tkw) for t in running]
    pending = stage.context.get(PENDING_JUMP)
    if isinstance(pending, dict) and any(t.status == _S.REDIRECT for t in tasks):
        return [JumpToStage(target_stage_ref_id=str(pending.get("target", "")),
                            jump_context=dict(pending.get("context") or {}),
                            jump_outputs=dict(pending.get("outputs") or {}),
                            **{**skw, "attempt_token": pending.get("attempt")})]
    if any(t.status in _WAITING for t in tasks):
        return []
    if has_children and all(t.status == _S.NOT_STARTED for t in tasks):
        # before its tasks: its before phase decides from its children (handlers.continue_parent_stage)
        return [ContinueParentStage(phase=SyntheticStageOwner.STAGE_BEFORE, **skw)]
    if has_children and all(t.status.is_complete for t in tasks):
        return [ContinueParentStage(phase=SyntheticStageOwner.STAGE_AFTER, **skw)]
    if any(t.status.is_halt for t in tasks):
        return [CompleteStage(**skw)]
    index = next((i for i, t in enumerate(tasks) if t.status == _S.NOT_STARTED), None)
    if index is None:
        return [CompleteStage(**skw)]
    if index == 0:
        return [StartTask(task_id=tasks[0].id, **tkw)]
    previous = tasks[index - 1]
    if previous.stage_end:
        return [CompleteStage(**skw)]
    if previous.status == _S.SKIPPED:
        return [CompleteTask(task_id=previous.id, status=_S.SKIPPED, **tkw)]  # type: ignore[arg-type]
    return [StartTask(task_id=tasks[index].id, **tkw)]


def _between_runs(stage: StageExecution) -> bool:
    """A multi-merge stage that finished a run and may owe more (``decisions.multi_merge``)."""
    return (stage.join_type == JoinType.MULTI_MERGE and bool(stage.requisite_stage_ref_ids)
            and stage.status in CONTINUABLE_STATUSES and not stage.context.get(MM_DONE))


def _upstreams(stage: StageExecution, by_id: Mapping[str, StageExecution],
               records: Mapping[str, StageRecord] | None) -> list[StageExecution]:
    rec = records.get(stage.id) if records is not None else None
    if rec is not None:
        return [by_id[u] for u in rec.up if u in by_id]
    refs = stage.requisite_stage_ref_ids
    return [s for s in by_id.values()
            if s.ref_id in refs and s.parent_stage_id == stage.parent_stage_id and s.id != stage.id]


def _activates(upstream: StageExecution, stage_id: str, by_id: Mapping[str, StageExecution],
               records: Mapping[str, StageRecord] | None) -> bool:
    """Whether a finished upstream's split routed to ``stage_id`` (always, unless an OR-split
    with conditions left it out)."""
    rec = records.get(upstream.id) if records is not None else None
    if rec is None or not upstream.split_conditions:
        return True
    if rec.act is not None:
        return stage_id in rec.act
    refs = {d: by_id[d].ref_id for d in rec.down if d in by_id}
    return stage_id in activated_downstreams(rec, refs)


def _not_started_stage(stage: StageExecution, by_id: Mapping[str, StageExecution],
                       records: Mapping[str, StageRecord] | None, kw: dict[str, Any]) -> list[Message]:
    skw = {**kw, "stage_id": stage.id}
    if stage.context.get(JUMP_BYPASS):
        return [StartStage(**skw)]  # a jump's target, started whatever its join says
    ups = _upstreams(stage, by_id, records)
    if not ups:
        return [StartStage(**skw)] if stage.parent_stage_id is None else []
    statuses = [_S.RUNNING if _between_runs(u) else u.status for u in ups]
    phase = evaluate_readiness(stage.join_type, statuses, stage.join_threshold)
    if phase != PredicatePhase.READY:
        return []
    finished: Sequence[StageExecution] = [u for u in ups if u.status in CONTINUABLE_STATUSES and not _between_runs(u)]
    if any(not _activates(u, stage.id, by_id, records) for u in finished):
        return [SkipStage(**skw)]
    return [StartStage(**skw)]


def describe(messages: Sequence[Message]) -> list[str]:
    """Short human-readable forms of planned messages, for logs and reports."""
    out: list[str] = []
    for m in messages:
        target = getattr(m, "task_id", "") or getattr(m, "stage_id", "")
        out.append(f"{type(m).__name__}({target})" if target else type(m).__name__)
    return out


__all__ = ["decode_workflow", "describe", "plan_from_hash", "recovery_messages"]

