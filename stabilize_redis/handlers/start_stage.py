"""StartStage: claim a ready stage, place it among its ancestors' outputs, and start its first task.

A join's StartStage is released by the commit that completes its last needed upstream (a
counter in the workflow hash), so no handler polls. Readiness is still checked against the
upstreams read here, and their versions are part of the read set, as is the workflow meta's
(a CancelWorkflow landing between read and commit makes the commit CONFLICT, and the stage is
then left alone). The stage's first task is started in the same commit (no separate StartTask
message). A stage whose join can no longer be met needs nothing here: the commit that halted
its upstream already counted it settled.

A stage with synthetic children, or of a type whose stage definition builder is registered in
this process, starts through its phases instead: it is claimed (RUNNING, context over its
ancestors' outputs) and ContinueParentStage(STAGE_BEFORE) plans it and runs its before-stages
first (``handlers.continue_parent_stage``). A synthetic stage with no sibling upstream is started
by its parent's phase, never by a StartStage of its own (one is ignored).

A stage with a ``mutex_key`` or ``deferred_choice_group`` is read with its exclusion state
(``backend.exclusion_reads``) and starts only past ``decisions.mutex.start_gate``: it waits for
its mutex (woken by the release), or loses its choice (CANCELED), in this commit; after the
decision, a mutex whose holder no longer holds is handed on (``decisions.mutex.tidy``).

A multi-instance join whose group has ``cancel_remaining`` (``stages.multi_instance_shape``) is
read with the synthetic descendants of the group's unfinished instances; the commit that starts
it cancels them (``cancel_remaining``): not-started ones never run, running ones see their
tokens canceled, and the workflow counts them as not taken.

A jump's target (``decisions.common.JUMP_BYPASS``, set by the jump's commit, which sent this
StartStage) starts without the readiness check of its join - over the outputs its finished
upstreams hold now - but past the same gates as any other stage.

A stage with a milestone (``decisions.milestones``) is read with its milestone's record and
starts only past ``milestone_gate`` (checked before the mutex): it starts, waits for the
milestone's next status change, or is skipped.

A plain AND join (``counted_join``) is read without its upstreams: its join counter decides.

A stage whose ``stageEnabled`` is an expression is read with the ancestors' outputs the expression
names (``backend.view_reads.ancestors_named``); no other start reads them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from stabilize_redis.backend.exclusion_reads import read_exclusions
from stabilize_redis.backend.graph_reads import read_descendants
from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.backend.view_reads import ancestors_named
from stabilize_redis.dag.readiness import PredicatePhase, evaluate_readiness
from stabilize_redis.decisions.claim import claim_ready_stage, needs_ancestors
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import JUMP_BYPASS, attach, known_stage
from stabilize_redis.decisions.global_mutex import gate as global_gate
from stabilize_redis.decisions.global_mutex import is_global
from stabilize_redis.decisions.milestones import both, milestone_gate, needs_milestone
from stabilize_redis.decisions.multi_merge import is_multi_merge, merge_counters, merge_step
from stabilize_redis.decisions.mutex import mutex_of, needs_exclusion, start_gate, tidy
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.expressions import stage_enabled_expression
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.cancel_region import cancel_active
from stabilize_redis.keys import SETTLE_COUNTERS, join_counter, ref_field, stage_field
from stabilize_redis.models.stage import JoinType
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import Message, StartStage
from stabilize_redis.reducers.fan_in import stage_reducers
from stabilize_redis.stages.multi_instance_shape import (
    MI_CANCEL_REMAINING,
    MI_JOIN_OF,
    MI_NOT_NEEDED,
    MI_PARENT,
)
from stabilize_redis.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize_redis.handlers")

REMAINING_CANCELED = "mi.remaining_canceled"
"""Event type (stage: a multi-instance join): its start canceled the group's unfinished instances
(data: ``stages``, their ref ids; ``tasks``, the ids of the running tasks whose tokens were
canceled)."""


def unneeded_instances(rec: StageRecord, ups: list[StageRecord]) -> list[StageRecord]:
    """The unfinished instances among ``ups`` of the group whose join ``rec`` is, when its
    group cancels the remaining instances as the join fires (``cancel_remaining``)."""
    if not rec.stage.context.get(MI_CANCEL_REMAINING):
        return []
    owner = rec.stage.context.get(MI_JOIN_OF)
    return [u for u in ups if u.stage.context.get(MI_PARENT) == owner and not u.stage.status.is_complete]


def cancel_remaining(t: Transition, snap: Snapshot, rec: StageRecord, ups: list[StageRecord], channel: str,
                     kw: dict[str, Any], registry: TaskRegistry) -> None:
    """Join ``rec`` started in ``t``: cancel its group's unfinished instances (and their
    synthetic descendants, read into ``snap``) in the same commit; each instance is marked
    MI_NOT_NEEDED, so the workflow's outcome counts it as not taken."""
    mine = unneeded_instances(rec, ups)
    if not mine:
        return
    family: list[StageRecord] = []
    level = mine
    while level:
        family += level
        level = [snap.stages[c] for r in level for c in r.children if c in snap.stages]
    for inst in mine:
        inst.stage.context[MI_NOT_NEEDED] = rec.stage.ref_id
    active = [r for r in family if not r.stage.status.is_complete]
    tasks = cancel_active(t, active, {}, channel, kw, registry)
    t.event(REMAINING_CANCELED, "stage", rec.id, {"stages": [r.stage.ref_id for r in mine], "tasks": tasks})


def read_milestone(backend: RedisBackend, snap: Snapshot, rec: StageRecord) -> str | None:
    """Add the record of watcher ``rec``'s milestone (the top-level stage of its
    ``milestone_ref_id``) to ``snap.stages``; its id, or None when there is no such stage."""
    assert rec.stage.milestone_ref_id is not None
    raw = backend.client.hget(backend.part(snap.workflow_id).workflow(snap.workflow_id),
                              ref_field(rec.stage.milestone_ref_id))
    mid = raw.decode() if raw else None
    if mid is not None and mid not in snap.stages:
        snap.stages.update(backend.read(snap.workflow_id, [mid]).stages)
    return mid

def counted_join(rec: StageRecord) -> bool:
    """Whether ``rec``'s start needs only its join counter, not its upstreams: a not-started AND
    join of several upstreams none of which an OR split can prune (``StageRecord.np``), with no
    gate, reducer, ``stageEnabled`` expression or multi-instance group to read them for, not a
    jump's target. Its counter reaching its threshold means every upstream ended continuably,
    and its sources are its upstreams (``decisions.views``): a 10,000-wide fan's join starts
    without reading 10,000 records."""
    stage = rec.stage
    return (stage.status == WorkflowStatus.NOT_STARTED and rec.np and len(rec.up) > 1
            and stage.join_type == JoinType.AND and not stage.context.get(JUMP_BYPASS)
            and not needs_exclusion(stage) and not needs_milestone(stage) and not is_global(stage)
            and not needs_ancestors(stage) and not stage_reducers(rec)
            and not stage.context.get(MI_CANCEL_REMAINING))


class StartStageHandler(Handler):
    message_type = StartStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            t = plan(snap)
            mutex = mutex_of(snap)
            if mutex is not None:  # a holder that did not start or no longer holds hands it on
                tidy(t, mutex, snap.stages[sid], snap.stages, kw)
            return t

        def plan(snap: Snapshot) -> Transition:
            t = Transition(wid)
            rec = known_stage(snap, sid)
            wf = attach(snap)
            stage = rec.stage
            t.check_meta(snap.meta_version)
            if wf.status.is_complete or wf.is_canceled:
                return t
            bypass = stage.status == WorkflowStatus.NOT_STARTED and bool(stage.context.get(JUMP_BYPASS))
            if is_multi_merge(rec) and not bypass:
                merge_step(self.ctx.registry, t, snap, rec, kw)
                return t
            if stage.status != WorkflowStatus.NOT_STARTED:
                return t
            if stage.parent_stage_id is not None and not rec.up and not bypass:
                return t  # started by its parent's phase (ContinueParentStage)
            if counted[0]:  # its counter says whether every upstream ended continuably
                name = join_counter(sid)
                count = snap.counters.get(name)
                if count is None or count != snap.thresholds.get(name):
                    return t
                t.expect_counter(name, count)
                claim_ready_stage(self.ctx.registry, t, rec, [], kw)
                return t
            ups = [snap.stages[u] for u in rec.up if u in snap.stages]
            for up in ups:
                t.check(stage_field(up.id), up.version)
            if not bypass and evaluate_readiness(stage.join_type, [u.stage.status for u in ups],
                                                 stage.join_threshold) != PredicatePhase.READY:
                return t
            # the ancestors' outputs come from the upstreams that released the join (N-of-M and
            # discriminator joins start while others still run: their partial outputs stay out)
            done = [u for u in ups if u.stage.status.is_complete and not u.stage.status.is_halt]
            if is_global(stage) and not global_gate(t, rec, kw):
                return t  # it waits for its global mutex (asked for in this commit)
            watched = milestone_gate(snap.stages, milestone[0], kw) if needs_milestone(stage) else None
            claim_ready_stage(self.ctx.registry, t, rec, done, kw, gate=both(watched, start_gate(snap, kw)),
                              ancestors=ancestors[0])
            if stage.status == WorkflowStatus.RUNNING:
                cancel_remaining(t, snap, rec, ups, self.backend.keys.cancel_channel, kw, self.ctx.registry)
            return t

        milestone: list[str | None] = [None]  # the watcher's milestone stage id, as last read
        ancestors: list[dict[str, Any] | None] = [None]  # for a stageEnabled expression, as last read

        counted: list[bool] = [False]  # read without its upstreams (``counted_join``)

        def read() -> Snapshot:
            snap = self.backend.read(wid, [sid], counters=[join_counter(sid)])
            rec = snap.stages.get(sid)
            counted[0] = rec is not None and counted_join(rec)
            if counted[0] or rec is None:
                return snap
            snap = self.backend.read(wid, [sid], with_upstreams=True)
            rec = snap.stages.get(sid)
            if rec is not None and rec.stage.status == WorkflowStatus.NOT_STARTED and needs_ancestors(rec.stage):
                probe = replace(rec, seg="", src=None)  # placed as its claim will place it
                expression = stage_enabled_expression(rec.stage.context.get("stageEnabled"))
                ancestors[0] = ancestors_named(self.backend, wid, probe, [expression or ""], rec.stage.context)
            if rec is not None and rec.stage.status == WorkflowStatus.NOT_STARTED:
                unneeded = unneeded_instances(rec, [snap.stages[u] for u in rec.up if u in snap.stages])
                snap.stages.update(read_descendants(self.backend, wid, unneeded))
            if rec is not None and needs_milestone(rec.stage):
                milestone[0] = read_milestone(self.backend, snap, rec)
            if rec is not None and needs_exclusion(rec.stage):
                return read_exclusions(self.backend, snap, rec)
            if rec is None or not is_multi_merge(rec):
                return snap
            if not rec.stage.status.is_complete:
                return self.backend.read(wid, [sid], with_upstreams=True, counters=merge_counters(sid))
            return self.backend.read(wid, [sid], with_upstreams=True, with_downstreams=True,
                                     counters=[*merge_counters(sid), *SETTLE_COUNTERS])

        return self.transact(message, delivery, read, decide)
