"""Multi-instance groups at run time: adding an instance (WCP-15) and the instances a firing
join no longer needs (``cancel_remaining``). Pure: into a Transition.

**Adding** (``decide_add``), one commit: the new instance ``<P>_instance_<n>`` (n = the parent's
``_mi_instance_count``, which goes up by one) is added as a top-level stage requiring the parent
P (``stage_plans.plan_add``: P's downstream list, the stage-id list, the meta, the settled
count's threshold), and - when the group has a join J that has not fired - J requires it too:
J's upstream list and requisites, its join threshold (``layout.join_gate`` over one more
upstream: an AND join waits for one more, an N_OF_M join keeps its threshold) and its dead-
upstream threshold, all in the same commit. The read set holds P, J, J's counter and thresholds,
the meta and the stage-id list, so two adds racing serialise (one CONFLICTs and is decided
again on the other's result) and an add racing J's release either lands before it (J waits for
the new instance) or sees it fired and is rejected. The instance starts when P has finished
(at once if it has) like any stage whose upstream finished.

Rejected - a ``mi.instance_rejected`` event with the reason and a WARNING, nothing else
changed - when the stage has no ``mi_config`` or does not ``allow_dynamic``, the workflow has
finished or is canceled, P halted (its instances can never run), J has fired (started, or its
counter reached its threshold), or the instance would have no tasks and no stage builder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import stage_event_data
from stabilize_redis.decisions.layout import dead_gate, join_gate
from stabilize_redis.decisions.stage_plans import GraphRead, plan_add, write_graph
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import (
    dead_counter,
    downstreams_field,
    join_counter,
    stage_field,
    threshold_field,
    upstreams_field,
)
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.stages.multi_instance_shape import (
    MI_COUNT,
    MI_INDEX,
    MI_INSTANCE_TYPE,
    MI_NAME_PREFIX,
    MI_PARENT,
    instance_stage,
)
from stabilize_redis.validation import WorkflowValidationError

log = logging.getLogger("stabilize_redis.handlers")

INSTANCE_ADDED = "mi.instance_added"
"""Event type (stage: the new instance): data ``parent``, ``index``, ``instances`` (the group's
count now), ``join_gate`` (completions the join now needs, absent without a join)."""
INSTANCE_REJECTED = "mi.instance_rejected"
"""Event type (stage: the parent): an AddMultiInstance that added nothing; data ``reason``."""


@dataclass
class AddRead:
    """What ``decide_add`` decides from: the parent, the join (None: the group has none) with
    its join counter and the two thresholds as read, a record of the first instance (the
    template an added instance copies its type and tasks from; None when there is none), and
    the graph fields ``plan_add`` writes."""

    parent: StageRecord
    join: StageRecord | None
    join_count: int
    join_limit: int | None
    dead_limit: int | None
    template: StageRecord | None
    graph: GraphRead


def new_instance(parent: StageRecord, template: StageRecord | None, index: int,
                 instance_context: dict[str, Any]) -> StageExecution:
    """The stage of instance ``index`` of ``parent``'s group: the template's type and tasks
    (fresh, NOT_STARTED), ``instance_context`` with the instance keys over it."""
    p = parent.stage
    kind = template.stage.type if template is not None else str(p.context.get(MI_INSTANCE_TYPE) or p.type)
    prefix = str(p.context.get(MI_NAME_PREFIX) or "Instance")
    stage = instance_stage(p.ref_id, index, kind, prefix, {**instance_context, MI_PARENT: p.ref_id, MI_INDEX: index})
    if template is not None:
        stage.tasks = [TaskExecution.create(t.name, t.implementing_class) for t in template.stage.tasks]
        stage.cancel_region = template.stage.cancel_region
    return stage


def rejection(read: AddRead, has_builder: bool) -> str | None:
    """Why the add cannot be executed, or None."""
    p = read.parent.stage
    mi = p.mi_config
    if mi is None:
        return f"stage {p.ref_id!r} is not a multi-instance stage (no mi_config)"
    if not mi.allow_dynamic:
        return f"stage {p.ref_id!r} does not allow instances added at run time (mi_config.allow_dynamic is False)"
    if not read.graph.live:
        return f"the workflow is {read.graph.meta['status']}{' and canceled' if read.graph.meta['canceled'] else ''}"
    if p.status.is_halt:
        return f"stage {p.ref_id!r} ended {p.status.name}: its instances can never run"
    join = read.join
    if join is not None and (join.stage.status != WorkflowStatus.NOT_STARTED
                             or (read.join_limit is not None and read.join_count >= read.join_limit)):
        return f"the group's join {join.stage.ref_id!r} has already fired: an instance added now would not be waited for"
    if join is None and mi.sync_on_complete and p.status.is_complete:
        return f"stage {p.ref_id!r} has finished and its group has no join to wait for a new instance"
    if (read.template is None or not read.template.stage.tasks) and not has_builder:
        kind = read.template.stage.type if read.template is not None else p.context.get(MI_INSTANCE_TYPE) or p.type
        return f"an instance of type {kind!r} would have no tasks: no instance to copy them from, no stage builder"
    return None


def reject(t: Transition, read: AddRead, reason: str) -> None:
    """``t`` only records why (the parent's version in the read set: the refusal was decided on it)."""
    rec = read.parent
    t.check_meta(read.graph.meta_version)
    t.check(stage_field(rec.id), rec.version)
    log.warning("workflow %s: AddMultiInstance to stage %s (%s) rejected: %s", t.workflow_id, rec.stage.ref_id,
                rec.id, reason)
    t.event(INSTANCE_REJECTED, "stage", rec.id, stage_event_data(rec, reason=reason))


def decide_add(t: Transition, read: AddRead, instance_context: dict[str, Any], has_builder: bool) -> None:
    """Add one instance to ``read.parent``'s group in ``t``, or reject it (module docstring).
    ``has_builder``: a stage builder is registered here for the instance type (so an instance
    without tasks still has some)."""
    reason = rejection(read, has_builder)
    if reason is None:
        try:
            _add(t, read, instance_context)
            return
        except WorkflowValidationError as e:  # raised before anything is written into ``t``
            reason = f"the instance cannot be stored: {e}"
    reject(t, read, reason)


def _add(t: Transition, read: AddRead, instance_context: dict[str, Any]) -> None:
    parent, join, graph = read.parent, read.join, read.graph
    p = parent.stage
    assert p.mi_config is not None
    index = int(p.context.get(MI_COUNT, p.mi_config.count))
    stage = new_instance(parent, read.template, index, instance_context)
    p.context[MI_COUNT] = index + 1
    p.mi_config.count = index + 1
    t.check(stage_field(parent.id), parent.version)
    plan_add(t, graph, stage, [parent], None)
    rec = t.writes[stage_field(stage.id)]
    assert isinstance(rec, StageRecord)
    data: dict[str, Any] = {"parent": p.ref_id, "index": index, "instances": index + 1}
    if join is not None:
        t.check(stage_field(join.id), join.version)
        t.expect_counter(join_counter(join.id), read.join_count)
        for name, limit in ((join_counter(join.id), read.join_limit), (dead_counter(join.id), read.dead_limit)):
            t.counter_checks[threshold_field(name)] = limit or 0
        join.up.append(rec.id)
        join.stage.requisite_stage_ref_ids.add(stage.ref_id)
        rec.down = [join.id]
        # merge order: the new instance's outputs come after the parent's and before the join's
        rec.rank = join.rank - 1 / (index + 2)
        gate = join_gate(join.stage, len(join.up))
        t.set_threshold(join_counter(join.id), gate)
        t.set_threshold(dead_counter(join.id), dead_gate(join.stage, len(join.up)))
        t.writes[upstreams_field(join.id)] = " ".join(join.up).encode()
        t.writes[downstreams_field(rec.id)] = join.id.encode()
        t.write_stage(join)
        data["join_gate"] = gate
    write_graph(t, graph, graph.meta_version, graph.ids_version)
    t.event(INSTANCE_ADDED, "stage", rec.id, stage_event_data(rec, **data))


__all__ = ["INSTANCE_ADDED", "INSTANCE_REJECTED", "AddRead", "decide_add", "new_instance", "rejection"]
