"""Stage writes of the WorkflowStore API (``store_stage``, ``add_stage``, ``remove_stage``) and of the
engine (``plan_children``), planned into a Transition. Pure; what they read first is read by
``backend.graph_reads``.

Each is one ``commit.lua`` call whose read set holds every field it decided from, so a write
racing an engine transition or another writer is refused (CONFLICT) instead of lost.

* **store_stage** writes what stabilize's UPDATE writes - status, context, outputs, start and
  end time, and the tasks - guarded by the stage version the caller read (``stage.version``)
  and, with ``expected_phase``, by the stored status. A mismatch raises ``ConcurrencyError``;
  on success ``stage.version`` (and the version of every task that changed) is raised by one.
  Structural fields (requisites, join/split settings, synthetic parent) are never rewritten.
* **add_stage** costs O(changed stages): it writes the new stage's field, its upstreams'
  records and ``d:`` fields, its own ``u:`` field, its parent's record (a synthetic stage), the
  stage-id list and the meta (top-level count and initial stages), never the whole workflow.
  Requisite ref ids are resolved to sibling stages through ``stage.execution`` (the workflow
  the caller holds) and checked against the stored records; only a ref the caller's workflow
  does not hold makes it read every stage record. Its join counter (and, top-level, its dead-
  upstream counter) is stored with its threshold, counted from its upstreams as they stand
  (the counters-v2 reset step); a top-level stage raises the settled count's threshold, so the
  workflow waits for it. In a RUNNING workflow a top-level stage whose join is already met (or
  that has no upstream) gets its StartStage in the same commit; one whose join can no longer
  be met is settled as halted.
* **plan_children** (the engine, when a stage definition builder plans synthetic stages at run
  time) adds a parent's new children in the commit that plans them, at the same cost: their
  records, their sibling edges, the parent's record (its children) and phase counters, the
  stage-id list; nothing top-level changes, so neither the meta nor the settled count does.
  ``add_stage`` of a synthetic stage raises its parent's phase threshold and sends the parent a
  ContinueParentStage, so a child added to a phase that is running is started by its parent.
* **remove_stage** removes a stage and its synthetic descendants, detaches them from their
  neighbours (a downstream loses the requisite, and its join gate and counters are recounted:
  it is started when the remaining upstreams already satisfy it), takes removed top-level
  stages off the settled count and its threshold, and releases CompleteWorkflow when every
  remaining top-level stage has settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.dag.topological import topological_sort
from stabilize_redis.decisions.codec import (
    StageRecord,
    StateEncodingError,
    ensure_plain,
    meta_from_dict,
    pack,
    stage_from_dict,
    stage_to_dict,
    task_to_dict,
    unpack,
)
from stabilize_redis.decisions.common import stage_event_data
from stabilize_redis.decisions.layout import (
    dead_gate,
    finished_ok,
    join_gate,
    meta_extras,
    phase_counter,
    phase_counts,
)
from stabilize_redis.decisions.transition import CounterOp, Transition
from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.keys import (
    SETTLED_COUNTER,
    STAGE_IDS_FIELD,
    counter_field,
    dead_counter,
    downstreams_field,
    join_counter,
    ref_field,
    stage_field,
    threshold_field,
    upstreams_field,
)
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.stage.phases import owner_of, phase_of
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import CompleteWorkflow, ContinueParentStage, StartStage
from stabilize_redis.support import check_stage
from stabilize_redis.validation import WorkflowValidationError, validate_storable

ADDED_COUNTER = "added"
"""Counter of stages added to a stored workflow; it numbers their topological ranks."""
ADDED_RANK_BASE = 1 << 32
"""Ranks of added stages start here, after every rank given at submit: an added stage can only
follow existing stages (nothing stored can require a stage that did not exist)."""

_MUTABLE = ("status", "context", "outputs", "tasks", "start", "end")
"""Stage-record keys ``store_stage`` writes (stabilize's UPDATE columns, plus the tasks)."""


def workflow_of(stage: StageExecution) -> Workflow:
    """The workflow ``stage`` is attached to; ValueError naming the stage when it has none."""
    if not stage.has_execution():
        raise ValueError(f"stage {stage.ref_id or stage.id!r} is not attached to a workflow "
                         "(set stage.execution, or add it to a Workflow)")
    return stage.execution


def _copy_stage(stage: StageExecution, where: str) -> dict[str, Any]:
    """The stored form of ``stage``'s own fields, taken now (later changes are not in it).
    WorkflowValidationError naming the field for a value no store can keep."""
    form = stage_to_dict(StageRecord(stage))
    try:
        ensure_plain(form["context"], f"{where}: context", as_text=True)
        ensure_plain(form["outputs"], f"{where}: outputs", as_text=True)
        for i, task in enumerate(form["tasks"]):
            ensure_plain({k: v for k, v in task.items() if k != "exc"}, f"{where}: tasks[{i}]")
            ensure_plain(task["exc"], f"{where}: tasks[{i}].exc", as_text=True)
        return dict(unpack(pack(form)))
    except (StateEncodingError, TypeError, OverflowError, ValueError) as e:
        raise WorkflowValidationError(str(e)) from None


@dataclass
class GraphRead:
    """The workflow-level fields an add or remove decides from, with their versions: the meta,
    the stage-id list, the count of stages added so far and the settled count's threshold (the
    number of top-level stages the workflow's completion waits for)."""

    meta: dict[str, Any]
    meta_version: int
    ids: list[str]
    ids_version: int
    added: int
    settled_limit: int

    @property
    def live(self) -> bool:
        """The workflow is RUNNING and not canceled: added or freed stages are started."""
        return self.meta["status"] == WorkflowStatus.RUNNING.name and not self.meta["canceled"]

    def kw(self, workflow_id: str) -> dict[str, Any]:
        return {"execution_id": workflow_id, "execution_type": self.meta["type"]}

    def change_top(self, t: Transition, delta: int) -> None:
        """The number of top-level stages changed by ``delta``: the settled count's threshold
        follows (guarded by the value read)."""
        t.counter_checks[threshold_field(SETTLED_COUNTER)] = self.settled_limit
        self.settled_limit += delta
        t.set_threshold(SETTLED_COUNTER, self.settled_limit)



def recount_join(t: Transition, graph: GraphRead, rec: StageRecord, ups: list[StageRecord]) -> None:
    """Store ``rec``'s join (and, top-level, dead-upstream) counters and thresholds as its
    upstreams ``ups`` now stand, and start it when that satisfies its join (a RUNNING
    workflow, the stage NOT_STARTED); a top-level stage whose join can no longer be met is
    settled as halted. Without upstreams its counters are removed and a top-level one is
    started. Used when a stage is added and when a stage's upstream is removed."""
    top = rec.stage.parent_stage_id is None
    kw = graph.kw(t.workflow_id)
    startable = graph.live and rec.stage.status == WorkflowStatus.NOT_STARTED
    if not ups:
        for name in (join_counter(rec.id), dead_counter(rec.id)):
            t.deletes += [counter_field(name), threshold_field(name)]
        if startable and top:
            t.push(StartStage(stage_id=rec.id, **kw))
        return
    gate = join_gate(rec.stage, len(ups))
    joined = sum(1 for u in ups if finished_ok(u.stage.status))
    t.reset_counter(join_counter(rec.id), joined, threshold=gate)
    if top:
        dead = sum(1 for u in ups if u.stage.status.is_halt)
        limit = dead_gate(rec.stage, len(ups))
        t.reset_counter(dead_counter(rec.id), dead, threshold=limit)
        if dead >= limit and rec.stage.status == WorkflowStatus.NOT_STARTED:
            t.settle(rec.id, True, CompleteWorkflow(**kw) if graph.live else None)
            return
    if startable and joined >= gate:
        t.push(StartStage(stage_id=rec.id, **kw))


@dataclass
class Versions:
    """The versions a committed stage write gives the caller's objects: the stage's, and each
    changed task's by task id."""

    stage: int
    tasks: dict[str, int] = field(default_factory=dict)

    def apply(self, stage: StageExecution) -> None:
        stage.version = self.stage
        for task in stage.tasks:
            if task.id in self.tasks:
                task.version = self.tasks[task.id]


def updated_record(stored: StageRecord, stage: StageExecution, expected_phase: str | None,
                   where: str) -> tuple[StageRecord, Versions]:
    """The record ``store_stage(stage, expected_phase)`` writes over ``stored``, and the
    versions the caller's objects get once it is committed. ConcurrencyError when
    ``stage.version`` (or the version of a task it changed) is not the stored one, or the
    stored status is not ``expected_phase``; WorkflowValidationError for a value that cannot
    be stored. ``where`` names the stage in errors."""
    if stored.version != stage.version:
        raise ConcurrencyError(f"{where} is at version {stored.version}, not {stage.version}: "
                               "it changed since it was read")
    if expected_phase is not None and stored.stage.status.name != expected_phase:
        raise ConcurrencyError(f"{where} is {stored.stage.status.name}, not {expected_phase}")
    mine = _copy_stage(stage, where)
    merged = stage_to_dict(stored)
    old_tasks = {t.id: t for t in stored.stage.tasks}
    versions = Versions(stored.version + 1)
    for task, stored_form in zip(stage.tasks, mine["tasks"], strict=True):
        old = old_tasks.get(task.id)
        if old is None:
            continue
        if {**stored_form, "v": 0} == {**task_to_dict(old), "v": 0}:
            stored_form["v"] = old.version
            continue
        if task.version != old.version:
            raise ConcurrencyError(f"task {task.name!r} of {where} is at version {old.version}, "
                                   f"not {task.version}: it changed since it was read")
        stored_form["v"] = versions.tasks[task.id] = old.version + 1
    for key in _MUTABLE:
        merged[key] = mine[key]
    return stage_from_dict(merged, stored.version), versions


def detached_copy(stage: StageExecution) -> StageExecution:
    """A copy of ``stage`` (tasks, context and outputs included) that later changes to the
    original do not reach; same ids and versions, no workflow link. WorkflowValidationError for
    a value no store can keep."""
    return stage_from_dict(_copy_stage(stage, f"stage {stage.ref_id!r}"), stage.version).stage


def sibling_hints(stage: StageExecution) -> dict[str, list[str]]:
    """Ref id -> ids of the stages of the caller's workflow that are ``stage``'s siblings."""
    out: dict[str, list[str]] = {}
    if not stage.has_execution():
        return out
    for other in stage.execution.stages:
        if other.id != stage.id and other.parent_stage_id == stage.parent_stage_id:
            out.setdefault(other.ref_id, []).append(other.id)
    return out


def _join_list(ids: list[str]) -> bytes:
    return " ".join(ids).encode()


def plan_add(t: Transition, graph: GraphRead, stage: StageExecution, ups: list[StageRecord],
             parent: StageRecord | None) -> Versions:
    """Add ``stage`` to ``t`` (see the module docstring); ``graph`` is updated as written, so
    several adds can share one transition."""
    check = Workflow(id=t.workflow_id, application=graph.meta["application"], name=graph.meta["name"],
                     stages=[])
    form = _copy_stage(stage, f"stage {stage.ref_id!r}")
    form.update(up=[], down=[], children=[], rank=ADDED_RANK_BASE + graph.added, anc={})
    rec = stage_from_dict(form, 0)
    check.stages = [rec.stage]
    validate_storable(check)
    graph.added += 1
    t.count(ADDED_COUNTER)
    rec.up = [u.id for u in ups]
    t.write_stage(rec)
    if rec.up:
        t.writes[upstreams_field(rec.id)] = _join_list(rec.up)
    for up in ups:
        up.down.append(rec.id)
        t.write_stage(up)
        t.writes[downstreams_field(up.id)] = _join_list(up.down)
    if parent is not None:
        parent.children.append(rec.id)
        t.write_stage(parent)
        phase = phase_of(rec.stage)
        # The phase's threshold grows by one (an increment, so nothing else needs reading); the
        # parent starts the child if that phase is running.
        t.counters.append(CounterOp(threshold_field(phase_counter(parent.id, phase)), "", 1, None))
        if graph.live:
            t.push(ContinueParentStage(stage_id=parent.id, phase=owner_of(phase), **graph.kw(t.workflow_id)))
    else:
        t.writes[ref_field(rec.stage.ref_id)] = rec.id.encode()
    graph.ids.append(rec.id)
    extras = meta_extras(graph.meta)
    if stage.parent_stage_id is None:
        extras["top"] = int(extras["top"]) + 1
        if not ups:
            extras["initial"] = [*extras["initial"], rec.id]
        graph.change_top(t, 1)
    graph.meta.update(extras)
    recount_join(t, graph, rec, ups)
    t.event("stage.added", "stage", rec.id, stage_event_data(rec))
    return Versions(1)


def plan_children(t: Transition, graph: GraphRead, parent: StageRecord, siblings: list[StageRecord],
                  stages: list[StageExecution]) -> list[StageRecord]:
    """Add ``stages`` (new synthetic children of ``parent``, built by its stage definition
    builder) to ``t`` and return their records: each record, its sibling edges (requisite ref
    ids among ``siblings``, the parent's children read, and the new stages) with join counters
    counted from those siblings' statuses, ``parent.children`` (``parent`` is written), every
    phase counter of the parent recounted, and the stage-id list (guarded by the version read).
    The caller holds ``siblings`` in its read set. Raises WorkflowValidationError or
    NotExecutedError (a ValueError) for a stage that cannot be stored or executed, a duplicate
    or unknown ref id, or a cycle."""
    by_ref = {r.stage.ref_id: r for r in siblings}
    added: list[StageRecord] = []
    for stage in stages:
        where = f"stage {stage.ref_id!r}"
        stage.parent_stage_id = parent.id
        check_stage(stage)
        if stage.ref_id in by_ref:
            raise WorkflowValidationError(f"{where}: ref_id: duplicate_ref: stage {parent.stage.ref_id!r} "
                                          f"already has a synthetic stage with ref_id {stage.ref_id!r}")
        form = _copy_stage(stage, where)
        form.update(up=[], down=[], children=[], rank=ADDED_RANK_BASE + graph.added, anc={})
        rec = stage_from_dict(form, 0)
        validate_storable(Workflow(id=t.workflow_id, application=graph.meta["application"],
                                   name=graph.meta["name"], stages=[rec.stage]))
        graph.added += 1
        by_ref[stage.ref_id] = rec
        added.append(rec)
    if not added:
        return added
    topological_sort([r.stage for r in by_ref.values()])  # unknown refs, self edges, cycles
    changed: dict[str, StageRecord] = {}
    for rec in added:
        for ref in sorted(rec.stage.requisite_stage_ref_ids):
            up = by_ref[ref]
            rec.up.append(up.id)
            up.down.append(rec.id)
            changed[up.id] = up
            t.writes[downstreams_field(up.id)] = _join_list(up.down)
        if rec.up:
            t.writes[upstreams_field(rec.id)] = _join_list(rec.up)
    t.count(ADDED_COUNTER, incr=len(added))
    for rec in added:
        changed[rec.id] = rec
        if rec.up:
            ups = [by_ref[r] for r in rec.stage.requisite_stage_ref_ids]
            t.reset_counter(join_counter(rec.id), sum(1 for u in ups if finished_ok(u.stage.status)),
                            threshold=join_gate(rec.stage, len(ups)))
        t.event("stage.added", "stage", rec.id, stage_event_data(rec))
    for rec in changed.values():
        t.write_stage(rec)
    parent.children += [r.id for r in added]
    t.write_stage(parent)
    for phase, (done, total) in phase_counts(list(by_ref.values())).items():
        t.reset_counter(phase_counter(parent.id, phase), done, threshold=total)
    graph.ids += [r.id for r in added]
    t.check(STAGE_IDS_FIELD, graph.ids_version)
    t.writes[STAGE_IDS_FIELD] = pack(graph.ids)
    return added


def write_graph(t: Transition, graph: GraphRead, meta_version: int, ids_version: int,
                workflow: Workflow | None = None) -> None:
    """Write the stage-id list and the meta as ``graph`` now holds them, guarded by the
    versions they were read at; ``workflow`` supplies the meta's workflow fields when the
    same commit changes them (default: as read)."""
    t.check(STAGE_IDS_FIELD, ids_version)
    t.writes[STAGE_IDS_FIELD] = pack(graph.ids)
    t.write_meta(workflow or meta_from_dict(graph.meta), meta_extras(graph.meta), meta_version)


@dataclass
class Removal:
    """What a removal reads: the removed records, their surviving neighbours and the other
    upstreams of the downstreams that lose one."""

    removed: dict[str, StageRecord] = field(default_factory=dict)
    records: dict[str, StageRecord] = field(default_factory=dict)


def plan_remove(t: Transition, graph: GraphRead, removal: Removal, stage_id: str) -> None:
    """Remove ``stage_id`` and its synthetic descendants in ``t`` (see the module docstring)."""
    gone = removal.removed
    for rec in gone.values():
        t.check(stage_field(rec.id), rec.version)
        t.deletes += [stage_field(rec.id), upstreams_field(rec.id), downstreams_field(rec.id)]
        if rec.stage.parent_stage_id is None:
            t.deletes.append(ref_field(rec.stage.ref_id))
        for name in (join_counter(rec.id), dead_counter(rec.id)):
            t.deletes += [counter_field(name), threshold_field(name)]
        if rec.stage.parent_stage_id is None:
            t.unsettle(rec.id)
    changed: dict[str, StageRecord] = {}
    freed: list[StageRecord] = []
    for rec in removal.records.values():
        if rec.id in gone:
            continue
        lost_down = [d for d in rec.down if d in gone]
        if lost_down:
            rec.down = [d for d in rec.down if d not in gone]
            _write_list(t, downstreams_field(rec.id), rec.down)
            changed[rec.id] = rec
        if set(rec.children) & set(gone):
            rec.children = [c for c in rec.children if c not in gone]
            changed[rec.id] = rec
        lost_up = [u for u in rec.up if u in gone]
        if lost_up:
            rec.up = [u for u in rec.up if u not in gone]
            for u in lost_up:
                rec.stage.requisite_stage_ref_ids.discard(gone[u].stage.ref_id)
            _write_list(t, upstreams_field(rec.id), rec.up)
            changed[rec.id] = rec
            freed.append(rec)
    for rec in freed:
        ups = [removal.records[u] for u in rec.up if u in removal.records]
        recount_join(t, graph, rec, ups)
    for rec in changed.values():
        t.write_stage(rec)
    removed_top = [r for r in gone.values() if r.stage.parent_stage_id is None]
    graph.ids = [i for i in graph.ids if i not in gone]
    if removed_top:
        extras = meta_extras(graph.meta)
        extras["top"] = max(0, int(extras["top"]) - len(removed_top))
        extras["initial"] = [i for i in extras["initial"] if i not in gone]
        graph.meta.update(extras)
        graph.change_top(t, -len(removed_top))
        if graph.live:
            t.complete_when_settled(CompleteWorkflow(**graph.kw(t.workflow_id)))
    for rec in gone.values():
        t.event("stage.removed", "stage", rec.id, stage_event_data(rec))


def _write_list(t: Transition, name: str, ids: list[str]) -> None:
    if ids:
        t.writes[name] = _join_list(ids)
    else:
        t.writes.pop(name, None)
        t.deletes.append(name)


__all__ = ["ADDED_COUNTER", "GraphRead", "Versions", "detached_copy",
           "plan_add", "plan_children", "plan_remove", "sibling_hints", "updated_record", "workflow_of",
           "write_graph"]
