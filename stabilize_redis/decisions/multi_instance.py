"""AddMultiInstance (WCP-15): one instance added to a running multi-instance activity, in one
commit of O(1) stage records. Pure: into a Transition.

What the decision reads (``handlers.add_multi_instance``): the parent stage, its join stage
(``<parent>_mi_join``, found by ref id), the join's counter and its dead-upstream counter with
their thresholds, the settled count's threshold, the added-stage counter and the stage-id list.

The instance is accepted while the join has not fired: the join is NOT_STARTED and its counter
is below its threshold. Then, in one commit guarded by everything read: the instance's record
(after the parent, before the join), its ``u:``/``d:`` edge fields and ref id, the parent's
``MI_COUNT``, the join's threshold (and dead-upstream threshold) recomputed for one more
upstream, the settled count's threshold + 1 (the workflow waits for the instance), the
instance's own join counter (met when the parent already finished) and its StartStage. A
completion of another instance landing between read and commit changes the join counter, so
the commit CONFLICTs and the add is decided again: no completion and no add is lost, and the
join fires once, at the threshold that counts every accepted instance.

Not accepted (``MI_REJECTED`` event, nothing else written): no ``mi_config`` or not
``allow_dynamic``, the workflow not RUNNING, the parent halted, or the join already fired.

Cost: the join's record and upstream list are not rewritten (the added instance reaches the
join through its own ``d:`` field and record), so an add does not grow with the number of
instances - except the stage-id list (``keys.STAGE_IDS_FIELD``, one blob of all ids) and, when
the parent has not finished yet, the parent's downstream list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stabilize_redis.decisions.codec import StageRecord, pack
from stabilize_redis.decisions.common import stage_event_data
from stabilize_redis.decisions.layout import dead_gate, join_gate
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.stage_plans import ADDED_COUNTER, ADDED_RANK_BASE
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import (
    SETTLED_COUNTER,
    STAGE_IDS_FIELD,
    dead_counter,
    downstreams_field,
    join_counter,
    ref_field,
    stage_field,
    threshold_field,
    upstreams_field,
)
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import AddMultiInstance, StartStage
from stabilize_redis.stages.multi_instance_builder import MI_COUNT, MI_TASKS, new_instance
from stabilize_redis.support import check_stage
from stabilize_redis.validation import WorkflowValidationError, validate_storable

MI_ADDED = "multi_instance.added"
"""Event type: an instance was added (data: the instance's stage data, index, parent ref id)."""
MI_REJECTED = "multi_instance.rejected"
"""Event type: an AddMultiInstance was not accepted (data: parent ref id, reason)."""


@dataclass
class AddRead:
    """What the handler read besides the snapshot: the join's id (None: the parent has no join)
    and the stage-id list with its version."""

    join_id: str | None
    ids: list[str]
    ids_version: int


def counters_read(join_id: str | None) -> list[str]:
    """The counters (with thresholds) the decision reads."""
    names = [ADDED_COUNTER, SETTLED_COUNTER]
    if join_id is not None:
        names += [join_counter(join_id), dead_counter(join_id)]
    return names


def _reject(t: Transition, parent: StageRecord, reason: str) -> Transition:
    t.event(MI_REJECTED, "stage", parent.id, {"ref_id": parent.stage.ref_id, "reason": reason})
    return t


def plan_add_instance(t: Transition, snap: Snapshot, parent: StageRecord, extra: AddRead,
                      message: AddMultiInstance) -> Transition:
    """Add one instance of ``parent`` to ``t``, or reject it with an event (module docstring)."""
    assert snap.meta is not None
    t.check_meta(snap.meta_version)
    t.check(stage_field(parent.id), parent.version)
    stage = parent.stage
    cfg = stage.mi_config
    if cfg is None or not cfg.allow_dynamic:
        return _reject(t, parent, "the stage has no mi_config with allow_dynamic")
    if snap.meta["status"] != WorkflowStatus.RUNNING.name or snap.meta["canceled"]:
        return _reject(t, parent, f"the workflow is {snap.meta['status']}, not RUNNING")
    if stage.status.is_halt:
        return _reject(t, parent, f"the stage is {stage.status.name}: its instances can never run")
    join = snap.stages.get(extra.join_id) if extra.join_id else None
    if cfg.sync_on_complete and join is None:
        return _reject(t, parent, "the stage's join stage does not exist")
    kw: dict[str, Any] = {"execution_id": t.workflow_id, "execution_type": snap.meta["type"]}
    if join is not None:
        t.check(stage_field(join.id), join.version)
        jc, dc = join_counter(join.id), dead_counter(join.id)
        count, limit = snap.counters.get(jc, 0), snap.thresholds.get(jc, 0)
        dead_limit = snap.thresholds.get(dc, 1)
        t.expect_counter(jc, count)
        t.counter_checks[threshold_field(jc)] = limit
        t.counter_checks[threshold_field(dc)] = dead_limit
        if join.stage.status != WorkflowStatus.NOT_STARTED or count >= limit:
            return _reject(t, parent, f"the join {join.stage.ref_id!r} already fired "
                                      f"({count} of {limit} completions, {join.stage.status.name})")
        upstreams = dead_limit + limit  # (upstreams - gate + 1) + gate = upstreams + 1
        t.set_threshold(jc, join_gate(join.stage, upstreams))
        t.set_threshold(dc, dead_gate(join.stage, upstreams))
    index = int(stage.context.get(MI_COUNT, 0))
    inst = new_instance(stage, index, dict(message.instance_context), template=stage.context.get(MI_TASKS, ()))
    try:
        check_stage(inst)
        validate_storable(Workflow(id=t.workflow_id, application="", name="", stages=[inst]))
    except (WorkflowValidationError, ValueError) as e:
        return _reject(t, parent, f"the instance cannot be stored: {e}")
    added = snap.counters.get(ADDED_COUNTER, 0)
    t.expect_counter(ADDED_COUNTER, added)
    t.count(ADDED_COUNTER)
    rec = StageRecord(inst)
    rec.rank = ADDED_RANK_BASE + added
    rec.up = [parent.id]
    rec.down = [join.id] if join is not None else []
    t.write_stage(rec)
    t.writes[upstreams_field(rec.id)] = parent.id.encode()
    if join is not None:
        t.writes[downstreams_field(rec.id)] = join.id.encode()
    t.writes[ref_field(inst.ref_id)] = rec.id.encode()
    t.check(STAGE_IDS_FIELD, extra.ids_version)
    t.writes[STAGE_IDS_FIELD] = pack([*extra.ids, rec.id])
    stage.context[MI_COUNT] = index + 1
    t.write_stage(parent)
    settled_limit = snap.thresholds.get(SETTLED_COUNTER, 0)
    t.counter_checks[threshold_field(SETTLED_COUNTER)] = settled_limit
    t.set_threshold(SETTLED_COUNTER, settled_limit + 1)
    parent_done = stage.status.is_complete  # and not halted (rejected above)
    t.reset_counter(join_counter(rec.id), 1 if parent_done else 0, threshold=1)
    t.reset_counter(dead_counter(rec.id), 0, threshold=1)
    if parent_done:
        t.push(StartStage(stage_id=rec.id, **kw))
    else:  # the parent's completion starts it: it joins the parent's downstreams
        parent.down.append(rec.id)
        t.writes[downstreams_field(parent.id)] = " ".join(parent.down).encode()
    t.event(MI_ADDED, "stage", rec.id, stage_event_data(rec, index=index, parent_ref_id=stage.ref_id))
    return t


__all__ = ["MI_ADDED", "MI_REJECTED", "AddRead", "counters_read", "plan_add_instance"]
