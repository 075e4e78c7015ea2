"""CompleteStage: settle a stage's status from its tasks, clean up, and route onward.

Continuable (SUCCEEDED, FAILED_CONTINUE, SKIPPED): count toward each downstream's join and the
workflow's completion in the same commit. Halted (TERMINAL, STOPPED, CANCELED): a top-level
stage settles as halted (so do the downstreams that can no longer start); TERMINAL and CANCELED
also end the workflow at once, as stabilize does (CompleteWorkflow fails or cancels it and
cancels the running branches), while STOPPED lets the other branches finish and the workflow
completes when the last of them settles. A synthetic stage never settles toward the workflow:
it counts toward its parent's phase instead (``flow.notify_parent``).

``finish_stage`` is also called by RunTask/CompleteTask when a stage's last task ends, so a
single-task stage needs no separate CompleteStage message. A stage with synthetic children (or
a builder) is not settled there: it gets a CompleteStage, whose read includes its children, and
``complete_parent`` runs its after phase (after-stages on success, on-failure stages on
failure) before it settles. Neither is a stage with a ``mutex_key`` (RunTask's read lacks the
mutex): its CompleteStage reads the mutex too, and the commit that ends the stage, whatever its
status, hands the mutex to the first waiter (``decisions.mutex.release``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from stabilize_redis.backend.exclusion_reads import read_exclusions
from stabilize_redis.backend.graph_reads import read_graph
from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.dag.graph import StageGraphBuilder
from stabilize_redis.decisions.claim import claim_ready_stage
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import attach, known_stage, now_ms, stage_event_data
from stabilize_redis.decisions.flow import (
    SETTLE_COUNTERS,
    activated_downstreams,
    notify_parent,
    release_after_completion,
    settle_stage,
)
from stabilize_redis.decisions.global_mutex import release_held
from stabilize_redis.decisions.milestones import wake_watchers
from stabilize_redis.decisions.multi_merge import is_multi_merge
from stabilize_redis.decisions.mutex import Guarded, mutex_of
from stabilize_redis.decisions.mutex import release as mutex_release
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.stage_plans import GraphRead, plan_children
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler, HandlerContext
from stabilize_redis.handlers.task_lookup import resolve_task
from stabilize_redis.keys import stage_field
from stabilize_redis.models.stage import PLANNING_FAILED, StageExecution
from stabilize_redis.models.stage.phases import AFTER, BEFORE, FAILURE, ON_FAILURE_KEY, phase_of
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.queue.messages import CompleteStage, CompleteWorkflow, Message, StartStage
from stabilize_redis.stages.builder import StageDefinitionBuilder, planner_for

log = logging.getLogger("stabilize_redis.handlers")

_ENDS_WORKFLOW = (WorkflowStatus.TERMINAL, WorkflowStatus.CANCELED)
"""Halts of a top-level stage that end the workflow without waiting for its other branches."""

_HALT_ORDER = (WorkflowStatus.TERMINAL, WorkflowStatus.STOPPED, WorkflowStatus.CANCELED)


def cleanup_tasks(ctx: HandlerContext, rec: StageRecord) -> None:
    """Call ``on_cleanup`` of every task of a finished stage; a failing cleanup is logged."""
    for task in rec.stage.tasks:
        impl = resolve_task(ctx.registry, task)
        if impl is None:
            continue
        try:
            impl.on_cleanup(rec.stage)
        except Exception:  # noqa: BLE001 - user hook
            log.exception("on_cleanup of task %s (stage %s) failed", task.name, rec.stage.ref_id)


def has_phases(rec: StageRecord) -> bool:
    """``rec``'s stage has synthetic children, or a builder registered here that may plan some."""
    return bool(rec.children) or planner_for(rec.stage.type) is not None


def finish_stage(ctx: HandlerContext, t: Transition, snap: Snapshot, rec: StageRecord,
                 kw: dict[str, Any]) -> None:
    """Decide a RUNNING stage's completion into ``t`` (nothing if it is still running).
    ``snap`` must hold the stage's downstream records (read ``with_downstreams``): OR-split
    conditions name them by ref id, and single-upstream downstreams start in this commit.
    A stage with phases (``has_phases``) whose tasks ended gets a CompleteStage instead."""
    assert snap.meta is not None
    status = rec.stage.determine_status()
    if status in (WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED):
        return
    if has_phases(rec) or (rec.stage.mutex_key and mutex_of(snap) is None):
        t.push(CompleteStage(stage_id=rec.id, **kw))  # its read holds the children / the mutex
        return
    settle_finished(ctx, t, snap, rec, status, kw)


def settle_finished(ctx: HandlerContext, t: Transition, snap: Snapshot, rec: StageRecord,
                    status: WorkflowStatus, kw: dict[str, Any]) -> None:
    """``rec``'s stage ends with ``status`` (final) in ``t``: cleanup hooks, events, then a
    continuable status releases its downstreams (and settles it, or counts it toward its
    parent's phase); a halt settles a top-level stage as halted or tells a synthetic stage's
    parent at once."""
    stage = rec.stage
    if status in CONTINUABLE_STATUSES and stage.context.get("_blocking_failure"):
        status = WorkflowStatus.TERMINAL
    stage.status = status
    stage.end_time = now_ms()
    mutex_release(t, mutex_of(snap), rec, kw)
    release_held(t, rec, kw)  # a global mutex goes back to its record
    wake_watchers(t, rec, kw)  # a milestone's end decides its waiting watchers again
    if status.is_complete:  # user hooks run once the ending is committed, never inside a decision
        t.on_commit(lambda: cleanup_tasks(ctx, rec))
    t.write_stage(rec)
    # No copy of the outputs: the stage record holds them (events stay small and capped).
    data = stage_event_data(rec, status=status.name, version=rec.version + 1)
    if status in CONTINUABLE_STATUSES:
        refs = {d: snap.stages[d].stage.ref_id for d in rec.down if d in snap.stages}
        t.event("stage.completed", "stage", rec.id, data)
        if is_multi_merge(rec):  # one run ended: the next run, or the release (handlers.multi_merge)
            t.push(StartStage(stage_id=rec.id, **kw))
            return
        release_after_completion(t, snap, rec, kw, activated_downstreams(rec, refs, snap.ancestors.get(rec.id)),
                                 ctx.registry)
    else:
        t.event("stage.failed", "stage", rec.id, data)
        for did in rec.down:  # the halt may be what completes a multi-merge downstream
            down = snap.stages.get(did)
            if down is not None and is_multi_merge(down):
                t.push(StartStage(stage_id=did, **kw))
        if stage.parent_stage_id is None:
            settle_stage(t, rec, kw, end_now=status in _ENDS_WORKFLOW)
        else:
            notify_parent(t, rec, kw, halted=True)


# -- stages with synthetic children ---------------------------------------------------------------


@dataclass
class Family(Guarded):
    """A snapshot of one stage with its downstreams and its synthetic children (in ``stages``),
    and - when its type has a builder here - the graph fields adding children needs; for a stage
    with a ``mutex_key``, its mutex state (``exclusions``), which its ending releases."""

    graph: GraphRead | None = None


def read_family(backend: RedisBackend, workflow_id: str, stage_id: str) -> Family:
    """Read the stage (with downstreams and the settle counters), then its children, then the
    graph fields if its builder may add stages: one round trip each, only as needed."""
    snap = backend.read(workflow_id, [stage_id], counters=SETTLE_COUNTERS, with_downstreams=True)
    family = Family(**{f.name: getattr(snap, f.name) for f in fields(Snapshot)})
    rec = snap.stages.get(stage_id)
    if rec is None:
        return family
    if rec.children:
        family.stages.update(backend.read(workflow_id, rec.children).stages)
    if planner_for(rec.stage.type) is not None:
        family.graph = read_graph(backend, workflow_id)
    if rec.stage.mutex_key:
        family.exclusions = read_exclusions(backend, family, rec).exclusions
    return family


def children_of(t: Transition, snap: Snapshot, rec: StageRecord) -> list[StageRecord]:
    """``rec``'s children read into ``snap``, each put in ``t``'s read set (decisions depend on
    their statuses)."""
    kids = [snap.stages[c] for c in rec.children if c in snap.stages]
    for kid in kids:
        if stage_field(kid.id) not in t.writes:
            t.check(stage_field(kid.id), kid.version)
    return kids


def start_phase(ctx: HandlerContext, t: Transition, rec: StageRecord, kids: list[StageRecord],
                kw: dict[str, Any]) -> None:
    """Start, in ``t``, every child of ``kids`` (one phase) that waits for no sibling and has
    not started; the others start through their sibling joins. A child waiting for no sibling
    sees its parent's outputs and ancestors (``decisions.views.sources_of``)."""
    for kid in kids:
        if not kid.up and kid.stage.status == WorkflowStatus.NOT_STARTED:
            claim_ready_stage(ctx.registry, t, kid, [], kw)


def core_status(stage: StageExecution, before: list[StageRecord]) -> WorkflowStatus | None:
    """The status the before-stages and tasks give ``stage`` (a halt among them: its failure
    status; planning failed: failure), or None while they are unfinished."""
    if stage.context.get(PLANNING_FAILED):
        return stage.failure_status()
    statuses = [b.stage.status for b in before] + [task.status for task in stage.tasks]
    for halt in _HALT_ORDER:
        if halt in statuses:
            return stage.failure_status() if halt == WorkflowStatus.TERMINAL else halt
    if not all(s in CONTINUABLE_STATUSES for s in statuses):
        return None
    return WorkflowStatus.FAILED_CONTINUE if WorkflowStatus.FAILED_CONTINUE in statuses else WorkflowStatus.SUCCEEDED


def planning_failed(t: Transition, rec: StageRecord, error: Exception) -> None:
    """Record in ``rec``'s context that its builder (or the stages it built) failed."""
    log.error("workflow %s, stage %s (%s): planning synthetic stages failed: %s", t.workflow_id,
              rec.stage.ref_id, rec.id, error)
    rec.stage.context["exception"] = {"details": {"error": f"{type(error).__name__}: {error}"}}
    rec.stage.context[PLANNING_FAILED] = True
    t.write_stage(rec)


def build_phase(t: Transition, graph: GraphRead, rec: StageRecord, kids: list[StageRecord],
                builder: StageDefinitionBuilder, phase: str) -> list[StageRecord]:
    """Ask ``builder`` for ``phase``'s stages of ``rec`` and add them in ``t``; returns their
    records (none when planning failed, which ``planning_failed`` records)."""
    stage = rec.stage
    graph_builder = (StageGraphBuilder.before_stages(stage) if phase == BEFORE
                     else StageGraphBuilder.after_stages(stage))
    try:
        if phase == BEFORE:
            builder.before_stages(stage, graph_builder)
        elif phase == AFTER:
            builder.after_stages(stage, graph_builder)
        else:
            builder.on_failure_stages(stage, graph_builder)
        built = graph_builder.build()
        if phase == FAILURE:
            for new in built:
                new.context[ON_FAILURE_KEY] = True
        return plan_children(t, graph, rec, kids, built)
    except Exception as e:  # noqa: BLE001 - user builder code, or what it built
        planning_failed(t, rec, e)
        return []


def complete_parent(ctx: HandlerContext, t: Transition, snap: Family, rec: StageRecord,
                    kw: dict[str, Any]) -> None:
    """The after phase of a RUNNING stage with phases, into ``t``: once its before-stages and
    tasks are done, run its after-stages (on success) or on-failure stages (on failure) -
    planned by its builder if it has none of that kind - and settle it when they are done
    (a halted after-stage gives the stage its halt status). Nothing while anything it waits
    for is unfinished."""
    kids = children_of(t, snap, rec)
    before = [k for k in kids if phase_of(k.stage) == BEFORE]
    status = core_status(rec.stage, before)
    if status is None:
        return
    phase = AFTER if status in CONTINUABLE_STATUSES else FAILURE
    mine = [k for k in kids if phase_of(k.stage) == phase]
    builder = planner_for(rec.stage.type)
    if not mine and builder is not None and snap.graph is not None and not rec.stage.context.get(PLANNING_FAILED):
        mine = build_phase(t, snap.graph, rec, kids, builder, phase)
        if rec.stage.context.get(PLANNING_FAILED):
            status = rec.stage.failure_status()
    halted = [k.stage.status for k in mine if k.stage.status.is_halt]
    if halted:
        if phase == AFTER:
            status = next(h for h in _HALT_ORDER if h in halted)
    elif not all(k.stage.status.is_complete for k in mine):
        start_phase(ctx, t, rec, mine, kw)
        return
    settle_finished(ctx, t, snap, rec, status, kw)


class CompleteStageHandler(Handler):
    message_type = CompleteStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CompleteStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            assert isinstance(snap, Family)
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            if rec.stage.status != WorkflowStatus.RUNNING:
                if rec.stage.status.is_halt:
                    if rec.stage.parent_stage_id is None:
                        t.push(CompleteWorkflow(**kw))
                    else:
                        notify_parent(t, rec, kw, halted=True)
                return t
            if has_phases(rec):
                t.check_meta(snap.meta_version)
                if not (wf.status.is_complete or wf.is_canceled):
                    complete_parent(self.ctx, t, snap, rec, kw)
                return t
            finish_stage(self.ctx, t, snap, rec, kw)
            return t

        return self.transact(message, delivery, lambda: read_family(self.backend, wid, sid), decide)
