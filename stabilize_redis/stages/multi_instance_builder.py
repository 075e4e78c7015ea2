"""``MultiInstanceBuilder`` (stabilize's API): the stages of a multi-instance group.

Each method sets ``parent_stage.mi_config`` and returns the new stages - the instances
``<ref>_instance_<i>`` (each requiring the parent) and, when synchronised, the join
``<ref>_mi_join`` - for the caller to put in the workflow beside the parent. Stages that should
follow the whole group require ``<ref>_mi_join``. Instances get the parent's type unless
``instance_type`` is given; set their tasks as for any stage (or register a stage builder for
their type). The shape is checked at submit (``stages.multi_instance_shape``).

Where stabilize's builder differs: ``create_dynamic`` keeps ``allow_dynamic`` when it seeds
instances, and always returns a join (requiring the parent and the seeded instances) so added
instances have something that waits for them; ``create_from_collection`` also takes
``join_threshold`` and ``cancel_remaining``.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, StageExecution
from stabilize_redis.stages.multi_instance_shape import (
    MI_COUNT,
    MI_INDEX,
    MI_INSTANCE_TYPE,
    MI_NAME_PREFIX,
    MI_PARENT,
    instance_stage,
    join_ref,
)


def _instances(parent: StageExecution, count: int, instance_type: str, prefix: str,
               contexts: list[dict[str, Any]] | None) -> list[StageExecution]:
    out: list[StageExecution] = []
    for i in range(count):
        ctx: dict[str, Any] = {MI_PARENT: parent.ref_id, MI_INDEX: i}
        if contexts and i < len(contexts):
            ctx.update(contexts[i])
        out.append(instance_stage(parent.ref_id, i, instance_type or parent.type, prefix, ctx))
    return out


def _join(parent: StageExecution, requires: set[str], join_threshold: int) -> StageExecution:
    join = StageExecution.create(type="noop", name=f"{parent.name} [MI Join]", ref_id=join_ref(parent.ref_id),
                                 requisite_stage_ref_ids=requires)
    join.join_type = JoinType.N_OF_M if join_threshold > 0 else JoinType.AND
    join.join_threshold = join_threshold
    return join


def _remember(parent: StageExecution, count: int, instance_type: str, prefix: str) -> None:
    parent.context[MI_COUNT] = count
    parent.context[MI_INSTANCE_TYPE] = instance_type or parent.type
    parent.context[MI_NAME_PREFIX] = prefix


class MultiInstanceBuilder:
    """Builders of multi-instance groups (static methods, as in stabilize)."""

    @staticmethod
    def create_fixed(parent_stage: StageExecution, count: int, instance_type: str = "",
                     instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                     join_threshold: int = 0, cancel_remaining: bool = False,
                     instance_contexts: list[dict[str, Any]] | None = None) -> list[StageExecution]:
        """``count`` instances (WCP-12 without sync, WCP-13 with), each with
        ``instance_contexts[i]`` over its context; with ``sync_on_complete`` a join that waits for
        all of them, or for ``join_threshold`` of them (WCP-34; ``cancel_remaining``: the rest are
        canceled when it fires). Returns the instances, then the join."""
        parent_stage.mi_config = MultiInstanceConfig(count=count, sync_on_complete=sync_on_complete,
                                                     join_threshold=join_threshold,
                                                     cancel_remaining=cancel_remaining)
        _remember(parent_stage, count, instance_type, instance_name_prefix)
        stages = _instances(parent_stage, count, instance_type, instance_name_prefix, instance_contexts)
        if sync_on_complete and stages:
            stages.append(_join(parent_stage, {s.ref_id for s in stages}, join_threshold))
        return stages

    @staticmethod
    def create_from_context(parent_stage: StageExecution, count_key: str, instance_type: str = "",
                            instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                            join_threshold: int = 0, cancel_remaining: bool = False) -> list[StageExecution]:
        """As ``create_fixed`` with the count read now from ``parent_stage.context[count_key]``
        (WCP-14); no stages (and no config) when it is not a positive integer."""
        count = parent_stage.context.get(count_key, 0)
        if type(count) is not int or count <= 0:
            return []
        stages = MultiInstanceBuilder.create_fixed(parent_stage, count, instance_type, instance_name_prefix,
                                                   sync_on_complete, join_threshold, cancel_remaining)
        assert parent_stage.mi_config is not None
        parent_stage.mi_config.count_from_context = count_key
        return stages

    @staticmethod
    def create_from_collection(parent_stage: StageExecution, collection_key: str, instance_type: str = "",
                               instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                               item_context_key: str = "item", join_threshold: int = 0,
                               cancel_remaining: bool = False) -> list[StageExecution]:
        """One instance per item of the list ``parent_stage.context[collection_key]``, the item in
        the instance's context under ``item_context_key``; no stages when it is not a non-empty
        list."""
        items = parent_stage.context.get(collection_key, [])
        if not isinstance(items, list) or not items:
            return []
        stages = MultiInstanceBuilder.create_fixed(parent_stage, len(items), instance_type, instance_name_prefix,
                                                   sync_on_complete, join_threshold, cancel_remaining,
                                                   [{item_context_key: item} for item in items])
        assert parent_stage.mi_config is not None
        parent_stage.mi_config.collection_from_context = collection_key
        return stages

    @staticmethod
    def create_dynamic(parent_stage: StageExecution, instance_type: str = "", instance_name_prefix: str = "Instance",
                       initial_count: int = 0) -> list[StageExecution]:
        """A group that grows at run time (WCP-15): ``initial_count`` instances and a join that
        requires the parent and them; each ``AddMultiInstance`` adds an instance and makes the
        join wait for it too, until the join fires (later ones are rejected). The join's
        ``output_reducers`` see the parent's outputs too (it is one of the join's upstreams)."""
        stages = MultiInstanceBuilder.create_fixed(parent_stage, initial_count, instance_type, instance_name_prefix,
                                                   sync_on_complete=True)
        parent_stage.mi_config = MultiInstanceConfig(count=initial_count, allow_dynamic=True, sync_on_complete=True)
        instances = [s for s in stages if s.ref_id != join_ref(parent_stage.ref_id)]
        return [*instances, _join(parent_stage, {parent_stage.ref_id, *(s.ref_id for s in instances)}, 0)]


__all__ = ["MultiInstanceBuilder"]
