"""How a whole workflow maps onto its hash, and back.

At submit the graph is laid out once: each stage record gets its direct upstream and downstream
stage ids, the gate of each downstream (how many upstream completions release its start), its
synthetic children and its topological rank. After that every transition reads only the stages
it touches.

The counters are laid out with their thresholds beside them (``keys.threshold_field``), counted
from the statuses the workflow is stored with (``settlement``, the same recount a reset uses):

* ``join_counter(S)``: continuable upstream completions of S; threshold: S's join gate;
* ``dead_counter(S)`` (top-level S): upstreams that halted or can never run; threshold:
  upstreams - gate + 1, the number at which S's join can no longer be met;
* ``SETTLED_COUNTER``: top-level stages settled - a final status, or unable to run - each
  flagged once (``settled_flag_field``); threshold: the number of top-level stages. Reaching it
  releases CompleteWorkflow (``lua/commit.lua``); ``HALTED_COUNTER`` counts the halted ones.
  Synthetic stages never count here: their parent settles once all its phases are done;
* ``phase_counter(P, phase)`` (P has synthetic children in ``phase``, see
  ``models.stage.phases``): children of that phase finished continuably; threshold: the
  number of children in the phase. Reaching it releases ContinueParentStage for P.

Each ``deferred_choice_group`` gets the ids of its top-level stages (``keys.choice_members_field``),
each ``cancel_region`` the ids of its stages (``keys.region_field``), and each milestone stage the
ids of its watchers in its context (``decisions.milestones.WATCHERS``); a multi-instance join
gets its group's parent ref id (and ``cancel_remaining``) in its context
(``stages.multi_instance_shape.join_contexts``).

Ranks (``StageRecord.rank``, the order ancestors' outputs merge in) put every stage after its
parent and its sibling upstreams: the top-level stages in topological order, then each
parent's children, level by level, in topological order among siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.context.ancestor_context import hash_reads, with_view
from stabilize_redis.dag.topological import topological_sort
from stabilize_redis.decisions.codec import (
    StageRecord,
    decode_stage,
    encode_stage,
    meta_from_dict,
    meta_to_dict,
    pack,
    unpack,
)
from stabilize_redis.decisions.milestones import WATCHERS, watchers_by_milestone
from stabilize_redis.decisions.views import publication
from stabilize_redis.decisions.waiting import waits_only_on_signals
from stabilize_redis.keys import (
    HALTED_COUNTER,
    META_FIELD,
    SETTLED_COUNTER,
    STAGE_IDS_FIELD,
    STATUS_FIELD,
    choice_members_field,
    counter_field,
    dead_counter,
    downstreams_field,
    join_counter,
    ref_field,
    region_field,
    settled_flag_field,
    stage_field,
    threshold_field,
    upstreams_field,
)
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution
from stabilize_redis.models.stage.phases import PHASES, phase_of
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.stages.multi_instance_shape import GroupShapeError, check_groups, join_contexts
from stabilize_redis.validation import WorkflowValidationError, validate_storable


def phase_counter(parent_id: str, phase: str) -> str:
    """Counter name: children of ``parent_id`` in ``phase`` that finished continuably (a join
    over the phase's children: ``join_counter`` of the pseudo id ``<parent>/<phase>``)."""
    return join_counter(f"{parent_id}/{phase}")


def phase_counts(children: list[StageRecord]) -> dict[str, tuple[int, int]]:
    """Phase -> (children finished continuably, children) of one parent's ``children``."""
    out: dict[str, tuple[int, int]] = {}
    for phase in PHASES:
        mine = [c for c in children if phase_of(c.stage) == phase]
        if mine:
            out[phase] = (sum(1 for c in mine if finished_ok(c.stage.status)), len(mine))
    return out


def phase_counter_fields(records: Mapping[str, StageRecord]) -> dict[str, bytes]:
    """The phase counters and thresholds of every parent among ``records``, from their
    children's statuses."""
    out: dict[str, bytes] = {}
    for rec in records.values():
        kids = [records[c] for c in rec.children if c in records]
        for phase, (done, total) in phase_counts(kids).items():
            name = phase_counter(rec.id, phase)
            out[threshold_field(name)] = b"%d" % total
            if done:
                out[counter_field(name)] = b"%d" % done
    return out


def ranked(stages: list[StageExecution]) -> list[StageExecution]:
    """``stages`` in rank order: top-level stages topologically, then each parent's children
    (level by level, topologically among siblings). WorkflowValidationError for a synthetic
    stage whose parent is not among ``stages``."""
    ids = {s.id for s in stages}
    groups: dict[str | None, list[StageExecution]] = {}
    for stage in stages:
        if stage.parent_stage_id is not None and stage.parent_stage_id not in ids:
            raise WorkflowValidationError(f"stage {stage.ref_id!r}: parent_stage_id: stage "
                                          f"{stage.parent_stage_id!r} is not a stage of this workflow")
        groups.setdefault(stage.parent_stage_id, []).append(stage)
    order: list[StageExecution] = []
    parents: list[str | None] = [None]
    while parents:
        level = topological_sort(groups.pop(parents.pop(0), []))
        order += level
        parents += [s.id for s in level]
    if groups:  # children of a child of themselves: a parent cycle
        cycle = sorted(s.ref_id for group in groups.values() for s in group)
        raise WorkflowValidationError(f"stage {cycle[0]!r}: parent_stage_id: synthetic stages "
                                      f"{cycle} are their own ancestors")
    return order


def join_gate(stage: StageExecution, upstream_count: int) -> int:
    """Number of upstream completions that release a stage's start."""
    if upstream_count == 0:
        return 0
    if stage.join_type in (JoinType.DISCRIMINATOR, JoinType.MULTI_MERGE):
        return 1
    if stage.join_type == JoinType.N_OF_M and stage.join_threshold > 0:
        return min(stage.join_threshold, upstream_count)
    return upstream_count


def dead_gate(stage: StageExecution, upstream_count: int) -> int:
    """Number of halted (or never-running) upstreams at which a stage can never start."""
    return upstream_count - join_gate(stage, upstream_count) + 1


@dataclass
class Settlement:
    """Counter values a set of stage records implies (see ``settlement``)."""

    settled: dict[str, bool] = field(default_factory=dict)
    """Top-level stage id -> halted, for every settled top-level stage: a final status (halted:
    TERMINAL, STOPPED, CANCELED), or NOT_STARTED with a join that can no longer be met
    (halted: True)."""
    joins: dict[str, int] = field(default_factory=dict)
    """Stage id -> continuable, finished upstreams counted toward its join."""
    dead: dict[str, int] = field(default_factory=dict)
    """Top-level stage id -> upstreams settled as halted."""
    top: int = 0
    """Number of top-level stages."""

    @property
    def complete(self) -> bool:
        """Every top-level stage has settled."""
        return len(self.settled) == self.top

    @property
    def halted(self) -> int:
        return sum(1 for h in self.settled.values() if h)


def settlement(records: Mapping[str, StageRecord],
               activates: Callable[[StageRecord, str], bool] | None = None) -> Settlement:
    """Recount, from the records' statuses alone, what the counters hold when every transition
    so far has been committed. ``activates(upstream, stage_id)`` says whether a finished
    upstream's split routed to the stage (default: always). Pure; used at layout, by
    CompleteWorkflow and recovery to tell whether every top-level stage has settled, and by
    resets to recount a region."""
    out = Settlement()
    for rec in sorted(records.values(), key=lambda r: r.rank):
        stage = rec.stage
        ups = [records[u] for u in rec.up if u in records]
        if ups:
            out.joins[rec.id] = sum(1 for u in ups if finished_ok(u.stage.status)
                                    and (activates is None or activates(u, rec.id)))
        if stage.parent_stage_id is not None:
            continue
        out.top += 1
        dead = sum(1 for u in ups if out.settled.get(u.id))
        if ups:
            out.dead[rec.id] = dead
        if stage.status.is_complete:
            out.settled[rec.id] = stage.status.is_halt
        elif stage.status == WorkflowStatus.NOT_STARTED and ups and dead >= dead_gate(stage, len(rec.up)):
            out.settled[rec.id] = True
    return out


def finished_ok(status: WorkflowStatus) -> bool:
    """A final status downstream stages may go on from (SUCCEEDED, FAILED_CONTINUE, SKIPPED)."""
    return status.is_complete and not status.is_halt


def counter_fields(records: Mapping[str, StageRecord], counts: Settlement) -> dict[str, bytes]:
    """The counter, threshold and settled-flag fields of ``records`` as ``counts`` says."""
    out: dict[str, bytes] = {}
    for rec in records.values():
        if not rec.up:
            continue
        gate = join_gate(rec.stage, len(rec.up))
        out[threshold_field(join_counter(rec.id))] = b"%d" % gate
        if counts.joins.get(rec.id):
            out[counter_field(join_counter(rec.id))] = b"%d" % counts.joins[rec.id]
        if rec.stage.parent_stage_id is None:
            out[threshold_field(dead_counter(rec.id))] = b"%d" % dead_gate(rec.stage, len(rec.up))
            if counts.dead.get(rec.id):
                out[counter_field(dead_counter(rec.id))] = b"%d" % counts.dead[rec.id]
    for sid, halted in counts.settled.items():
        out[settled_flag_field(sid)] = b"h" if halted else b"1"
    out[threshold_field(SETTLED_COUNTER)] = b"%d" % counts.top
    out[counter_field(SETTLED_COUNTER)] = b"%d" % len(counts.settled)
    out[counter_field(HALTED_COUNTER)] = b"%d" % counts.halted
    return out


def validate_plain_data(wf: Workflow) -> None:
    """Reject values that cannot be stored (WorkflowValidationError naming the stage and key
    path; see ``validation.validate_storable``) and multi-instance groups that are not the
    shape their config describes (``stages.multi_instance_shape.check_groups``)."""
    validate_storable(wf)
    try:
        check_groups(wf.stages)
    except GroupShapeError as e:
        raise WorkflowValidationError(str(e)) from None


def _siblings_key(stage: StageExecution) -> tuple[str | None, str]:
    return (stage.parent_stage_id, stage.ref_id)


def lay_out(wf: Workflow) -> dict[str, bytes]:
    """The hash fields of a new workflow (values without versions)."""
    validate_plain_data(wf)
    by_ref = {_siblings_key(s): s for s in wf.stages}
    records = {s.id: StageRecord(s) for s in wf.stages}
    for rank, stage in enumerate(ranked(wf.stages)):
        records[stage.id].rank = rank
    for stage in wf.stages:
        rec = records[stage.id]
        for ref in sorted(stage.requisite_stage_ref_ids):
            up = by_ref.get((stage.parent_stage_id, ref))
            if up is not None:
                rec.up.append(up.id)
                records[up.id].down.append(stage.id)
        if stage.parent_stage_id is not None and stage.parent_stage_id in records:
            records[stage.parent_stage_id].children.append(stage.id)
    for stage in ranked(wf.stages):  # upstreams before downstreams
        rec = records[stage.id]
        rec.np = all(records[u].np and not (records[u].stage.split_type == SplitType.OR
                                            and records[u].stage.split_conditions) for u in rec.up)
    top = [s for s in wf.stages if s.parent_stage_id is None]
    extras: dict[str, Any] = {
        "top": len(top),
        "initial": [s.id for s in top if not records[s.id].up],
    }
    fields: dict[str, bytes] = {
        META_FIELD: pack(meta_to_dict(wf, extras)),
        STATUS_FIELD: wf.status.name.encode(),
        STAGE_IDS_FIELD: pack([s.id for s in wf.stages]),
    }
    for mid, watchers in watchers_by_milestone(wf.stages).items():  # decisions.milestones
        records[mid].stage.context = {**records[mid].stage.context, WATCHERS: watchers}
    for jid, keys in join_contexts(wf.stages).items():  # what a multi-instance join does when it fires
        records[jid].stage.context = {**records[jid].stage.context, **keys}
    for rec in records.values():
        if rec.stage.status in CONTINUABLE_STATUSES:  # stored as ended: its outputs are published
            for name, _, line in publication(rec):
                fields[name] = fields.get(name, b"") + (line or "").encode()
        fields[stage_field(rec.id)] = encode_stage(rec)
        if rec.up:
            fields[upstreams_field(rec.id)] = " ".join(rec.up).encode()
        if rec.down:
            fields[downstreams_field(rec.id)] = " ".join(rec.down).encode()
    for stage in reversed(top):  # the first top-level stage of a ref id wins (stage_by_ref_id)
        fields[ref_field(stage.ref_id)] = stage.id.encode()
    groups: dict[str, list[str]] = {}
    for stage in top:  # the siblings a deferred choice's winner cancels (decisions.deferred_choice)
        if stage.deferred_choice_group:
            groups.setdefault(stage.deferred_choice_group, []).append(stage.id)
    for group, members in groups.items():
        fields[choice_members_field(group)] = " ".join(members).encode()
    regions: dict[str, list[str]] = {}
    for stage in wf.stages:  # what CancelRegion cancels (handlers.cancel_region)
        if stage.cancel_region:
            regions.setdefault(stage.cancel_region, []).append(stage.id)
    for region, members in regions.items():
        fields[region_field(region)] = " ".join(members).encode()
    fields.update(counter_fields(records, settlement(records)))
    fields.update(phase_counter_fields(records))
    return fields


def workflow_from_hash(raw: dict[bytes, bytes]) -> Workflow | None:
    """The full Workflow (stages in insertion order, strongly linked) from its hash; a RUNNING
    one that waits only on signals shows SUSPENDED (``decisions.waiting``). A stage that has
    started has its ancestors' outputs under its context (``context.ancestor_context``), as
    stabilize's copy at the start would; a stage not started yet shows its own context."""
    if not raw or META_FIELD.encode() not in raw:
        return None
    wf = meta_from_dict(unpack(raw[META_FIELD.encode()]))
    ids = unpack(raw[STAGE_IDS_FIELD.encode()]) if STAGE_IDS_FIELD.encode() in raw else []
    records: dict[str, StageRecord] = {}
    for sid in ids:
        blob = raw.get(stage_field(sid).encode())
        if blob is None:
            continue
        version = int(raw.get(f"v:{stage_field(sid)}".encode(), b"0"))
        records[sid] = decode_stage(blob, version)
    reads = hash_reads(raw, records)
    for rec in records.values():  # a started stage shows its ancestors' outputs, read from ``raw``
        if rec.stage.status != WorkflowStatus.NOT_STARTED:  # as asked (stabilize: copied at the start)
            rec.stage.context = with_view(rec, reads)
    stages = [rec.stage for rec in records.values()]
    wf.stages = stages
    if wf.status == WorkflowStatus.RUNNING and not wf.is_canceled and _waiting(raw, records):
        wf.status = WorkflowStatus.SUSPENDED  # decisions.waiting: every busy branch has ended since
    for stage in stages:
        stage.set_execution_strong(wf)
    return wf


def _waiting(raw: dict[bytes, bytes], records: dict[str, StageRecord]) -> bool:
    """``decisions.waiting.waits_only_on_signals`` over a whole workflow hash."""
    if not any(r.stage.status == WorkflowStatus.SUSPENDED for r in records.values()):
        return False
    counters: dict[str, int] = {}
    thresholds: dict[str, int] = {}
    for sid in records:
        name = join_counter(sid)
        counters[name] = int(raw.get(counter_field(name).encode(), b"0"))
        limit = raw.get(threshold_field(name).encode())
        if limit is not None:
            thresholds[name] = int(limit)
    return waits_only_on_signals(records, counters, thresholds)


def meta_extras(meta: dict[str, Any]) -> dict[str, Any]:
    return {"top": meta["top"], "initial": meta["initial"]}
