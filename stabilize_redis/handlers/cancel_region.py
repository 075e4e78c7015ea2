"""CancelRegion (WCP-25): cancel, in ONE commit, every unfinished stage tagged with a
``cancel_region`` and their synthetic children (at any depth).

The region's stage ids are laid out at submit (``keys.region_field``), so the read costs
O(region): the region's records, then their children level by level, then the mutexes the
region's unfinished stages use. The decision, for each unfinished stage:

* it becomes CANCELED with its unfinished tasks (as CancelStage does); the ids of tasks that
  were RUNNING are published on the cancel channel when the commit lands, so the worker
  executing one - in any process - cancels its token, and its RunTask calls ``on_cancel``;
* one NOT_STARTED never runs: any StartStage, fused start or RunTask decided on the old record
  CONFLICTs on its version, and one decided after sees CANCELED;
* a mutex it waits for loses it as a waiter; a mutex it holds is handed to the first waiter
  outside the region (waiters leave before holders hand over); its milestone watchers are
  woken (``decisions.milestones``);
* a top-level one settles as halted, with the downstreams that can no longer start; a synthetic
  one whose parent is not canceled with it tells its parent, as CancelStage does.

Like CancelStage, this does not end the other branches: the workflow ends by the settled count
when they finish, and - as stabilize decides for a workflow with a CANCELED stage - it ends
CANCELED (a region-canceled stage is not treated as "not taken" the way a deferred choice's
loser is). Every record read is in the read set (a reset of a finished region stage between
read and commit makes the commit CONFLICT), and so is the meta (the decision depends on the
workflow's status). A region with no unfinished stage, an unknown region, or a finished
workflow: nothing but a ``region.cancel_ignored`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from stabilize_redis.backend.graph_reads import read_descendants
from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import attach, known_workflow, now_ms, stage_event_data
from stabilize_redis.decisions.flow import notify_parent, settle_stage
from stabilize_redis.decisions.global_mutex import release_held
from stabilize_redis.decisions.milestones import wake_watchers
from stabilize_redis.decisions.mutex import MutexState
from stabilize_redis.decisions.mutex import release as mutex_release
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.sub_workflow import cancel_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.task_lookup import resolve_task
from stabilize_redis.keys import mutex_field, region_field, stage_field, version_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import CancelRegion, Message
from stabilize_redis.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize_redis.handlers")

REGION_CANCELED = "region.canceled"
"""Event type (workflow): data ``region``, ``stages`` (ref ids canceled), ``tasks`` (ids of the
running tasks whose tokens were canceled)."""
REGION_CANCEL_IGNORED = "region.cancel_ignored"
"""Event type (workflow): a CancelRegion found nothing to cancel (data: ``region``, ``reason``)."""

_CANCELABLE_TASK = (WorkflowStatus.NOT_STARTED, WorkflowStatus.RUNNING, WorkflowStatus.PAUSED,
                    WorkflowStatus.SUSPENDED)


@dataclass
class RegionRead(Snapshot):
    """A snapshot of one region: its stages and their synthetic children (``stages``), the ids
    laid out for it (``members``) and the state of each mutex an unfinished one uses."""

    members: list[str] = field(default_factory=list)
    mutexes: dict[str, MutexState] = field(default_factory=dict)


def read_region(backend: RedisBackend, workflow_id: str, region: str) -> RegionRead:
    """The region's laid-out ids (one HGET), their records (one read), their children level by
    level (one read per level), and the mutexes of their unfinished stages (one HMGET)."""
    key = backend.part(workflow_id).workflow(workflow_id)
    raw = backend.client.hget(key, region_field(region))
    members = raw.decode().split() if raw else []
    snap = backend.read(workflow_id, members)
    out = RegionRead(**{f.name: getattr(snap, f.name) for f in fields(Snapshot)}, members=members)
    out.stages.update({k: v for k, v in read_descendants(backend, workflow_id, list(out.stages.values())).items()
                       if k not in out.stages})
    names = sorted({rec.stage.mutex_key for rec in out.stages.values()
                    if rec.stage.mutex_key and not rec.stage.status.is_complete})
    if names:
        values = backend.client.hmget(key, [f for n in names for f in (mutex_field(n), version_field(mutex_field(n)))])
        for i, name in enumerate(names):
            out.mutexes[name] = MutexState.decode(name, values[2 * i], int(values[2 * i + 1] or 0))
    return out


def cancel_record(t: Transition, rec: StageRecord, kw: dict[str, Any]) -> tuple[list[TaskExecution], list[str]]:
    """``rec``'s stage and its unfinished tasks become CANCELED in ``t`` (with a
    ``stage.canceled`` event; a child workflow it waits for is canceled too); returns the tasks
    that had started (RUNNING, PAUSED, SUSPENDED) and the ids of those that were RUNNING
    (executing somewhere, or about to)."""
    cancel_child(t, rec, kw, f"parent stage {rec.stage.ref_id} canceled")
    now = now_ms()
    started: list[TaskExecution] = []
    running: list[str] = []
    for task in rec.stage.tasks:
        if task.status in _CANCELABLE_TASK:
            if task.status != WorkflowStatus.NOT_STARTED:
                started.append(task)
            if task.status == WorkflowStatus.RUNNING:
                running.append(task.id)
            task.status = WorkflowStatus.CANCELED
            task.end_time = now
    rec.stage.status = WorkflowStatus.CANCELED
    rec.stage.end_time = now
    t.write_stage(rec)
    t.event("stage.canceled", "stage", rec.id, stage_event_data(rec, status="CANCELED"))
    return started, running


def call_on_cancel(registry: TaskRegistry, rec: StageRecord, tasks: list[TaskExecution]) -> None:
    """``on_cancel`` of each of ``tasks`` (started tasks of ``rec``'s canceled stage), after the
    cancel committed; a failing hook is logged, what a hook returns is not stored."""
    for task in tasks:
        impl = resolve_task(registry, task)
        if impl is None:
            continue
        try:
            impl.on_cancel(rec.stage)
        except Exception:  # noqa: BLE001 - user hook
            log.exception("on_cancel of task %s (stage %s) failed", task.name, rec.stage.ref_id)


def decide_region(t: Transition, snap: RegionRead, region: str, channel: str, kw: dict[str, Any],
                  registry: TaskRegistry) -> None:
    """Cancel every unfinished stage of ``snap`` into ``t`` (see the module docstring);
    ``registry``: where the ``on_cancel`` hooks run after the commit are looked up."""
    known_workflow(snap)
    wf = attach(snap)
    t.check_meta(snap.meta_version)
    records = sorted(snap.stages.values(), key=lambda r: r.rank)
    active = [r for r in records if not r.stage.status.is_complete]
    reason = ("the workflow has finished" if wf.status.is_complete else
              "no stage is tagged with it" if not snap.members else
              "every stage of it has finished" if not active else None)
    if reason is not None:
        for rec in records:
            t.check(stage_field(rec.id), rec.version)
        t.event(REGION_CANCEL_IGNORED, "workflow", t.workflow_id, {"region": region, "reason": reason})
        return
    for rec in records:
        if rec not in active:
            t.check(stage_field(rec.id), rec.version)
    tasks = cancel_active(t, active, snap.mutexes, channel, kw, registry)
    t.event(REGION_CANCELED, "workflow", t.workflow_id,
            {"region": region, "stages": [rec.stage.ref_id for rec in active], "tasks": tasks})


def cancel_active(t: Transition, active: list[StageRecord], mutexes: Mapping[str, MutexState], channel: str,
                  kw: dict[str, Any], registry: TaskRegistry) -> list[str]:
    """Cancel every stage of ``active`` (unfinished, read with their synthetic children among
    them) in ``t``, as the module docstring says: CANCELED with their tasks, tokens published,
    ``on_cancel`` after the commit, mutexes (``mutexes``, by name) left or handed on, milestone
    watchers woken, top-level ones settled as halted, a synthetic one whose parent is not among
    them telling its parent. Returns the ids of the tasks that were RUNNING."""
    tasks: list[str] = []
    for rec in active:
        started, running = cancel_record(t, rec, kw)
        tasks += running
        if started:
            t.on_commit(partial(call_on_cancel, registry, rec, started))
        wake_watchers(t, rec, kw)
    for task_id in tasks:
        t.publish(channel, task_id)
    # waiters leave their mutexes first, so a holder's mutex goes to a waiter outside the region
    for rec in sorted(active, key=lambda r: mutexes.get(r.stage.mutex_key or "", MutexState("")).holder == r.id):
        mutex_release(t, mutexes.get(rec.stage.mutex_key or ""), rec, kw)
        release_held(t, rec, kw)
    canceled = {rec.id for rec in active}
    for rec in active:
        parent = rec.stage.parent_stage_id
        if parent is None:
            settle_stage(t, rec, kw)
        elif parent not in canceled:
            notify_parent(t, rec, kw, halted=True)
    return tasks


class CancelRegionHandler(Handler):
    """Cancel every unfinished stage of a ``cancel_region`` in one commit (``decide_region``)."""

    message_type = CancelRegion

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, CancelRegion)
        wid, region = message.execution_id, message.region
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(snap: Snapshot) -> Transition:
            assert isinstance(snap, RegionRead)
            t = Transition(wid)
            decide_region(t, snap, region, self.backend.keys.cancel_channel, kw, self.ctx.registry)
            return t

        return self.transact(message, delivery, lambda: read_region(self.backend, wid, region), decide)
