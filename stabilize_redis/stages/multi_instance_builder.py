"""Multi-instance stages (WCP-12..15) with stabilize's ``MultiInstanceBuilder`` API.

A multi-instance activity is laid out as ordinary stages of the workflow, as in stabilize:

* the **parent** (the stage given to the builder) gets ``mi_config`` and, when ``tasks`` is
  given, the task template of its instances in ``context[MI_TASKS]`` (``AddMultiInstance``
  builds the tasks of an instance added at run time from it);
* **instances** ``<parent>_instance_<i>`` (type ``instance_type``, default the parent's type),
  each after the parent, with ``_mi_parent_ref_id``, ``_mi_instance_index`` and its own
  context (``instance_contexts[i]``; ``item_context_key: item`` for a collection);
* with ``sync_on_complete``, the **join** ``<parent>_mi_join`` (type ``noop``, no tasks) after
  every instance: an AND join, or N_OF_M with ``join_threshold`` - the engine's join counter
  counts instance completions and releases it once.

The builder returns instances and join; the caller adds them to the workflow (and makes the
next stage require ``join_ref_id(parent)``). ``tasks`` (an extension: stabilize's instances
have no tasks, a stage definition builder of ``instance_type`` gives them theirs) gives every
instance a fresh copy of those tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, StageExecution
from stabilize_redis.models.task import TaskExecution

MI_PARENT_REF = "_mi_parent_ref_id"
"""Instance context key: the ref id of its multi-instance parent."""
MI_INDEX = "_mi_instance_index"
"""Instance context key: its index (0-based; dynamic instances continue the numbering)."""
MI_COUNT = "_mi_instance_count"
"""Parent context key: the number of instances created so far (static and dynamic)."""
MI_TASKS = "_mi_tasks"
"""Parent context key: the task template of its instances, ``[{name, implementing_class}]``."""


def instance_ref_id(parent_ref_id: str, index: int) -> str:
    """Ref id of instance ``index`` of the multi-instance parent ``parent_ref_id``."""
    return f"{parent_ref_id}_instance_{index}"


def join_ref_id(parent_ref_id: str) -> str:
    """Ref id of the join stage of the multi-instance parent ``parent_ref_id``."""
    return f"{parent_ref_id}_mi_join"


def task_template(tasks: Sequence[TaskExecution]) -> list[dict[str, str]]:
    """The plain form of ``tasks`` kept in the parent's context (``MI_TASKS``)."""
    return [{"name": t.name, "implementing_class": t.implementing_class} for t in tasks]


def tasks_from_template(template: Sequence[dict[str, Any]]) -> list[TaskExecution]:
    """Fresh NOT_STARTED tasks (new ids) from a ``task_template``; first and last flagged."""
    tasks = [TaskExecution.create(name=str(t["name"]), implementing_class=str(t["implementing_class"]))
             for t in template]
    if tasks:
        tasks[0].stage_start = True
        tasks[-1].stage_end = True
    return tasks


def new_instance(parent: StageExecution, index: int, context: dict[str, Any], instance_type: str = "",
                 name_prefix: str = "Instance", template: Sequence[dict[str, Any]] = ()) -> StageExecution:
    """Instance ``index`` of ``parent``: after the parent, with ``context`` and the MI keys."""
    ctx: dict[str, Any] = {MI_PARENT_REF: parent.ref_id, MI_INDEX: index, **context}
    stage = StageExecution.create(type=instance_type or parent.type, name=f"{name_prefix} [{index}]",
                                  ref_id=instance_ref_id(parent.ref_id, index), context=ctx,
                                  requisite_stage_ref_ids={parent.ref_id})
    stage.tasks = tasks_from_template(template)
    return stage


class MultiInstanceBuilder:
    """Builds the stages of a multi-instance activity (see the module docstring)."""

    @staticmethod
    def create_fixed(parent_stage: StageExecution, count: int, instance_type: str = "",
                     instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                     join_threshold: int = 0, cancel_remaining: bool = False,
                     instance_contexts: list[dict[str, Any]] | None = None,
                     tasks: Sequence[TaskExecution] | None = None) -> list[StageExecution]:
        """``count`` instances (WCP-12 without ``sync_on_complete``, WCP-13 with it) and the
        join; ``join_threshold`` > 0: the join goes on after that many (N_OF_M);
        ``cancel_remaining``: recorded in ``mi_config`` (see support.py for what runs)."""
        if count < 0:
            raise ValueError(f"stage {parent_stage.ref_id!r}: count must be >= 0, not {count}")
        previous = parent_stage.mi_config
        parent_stage.mi_config = MultiInstanceConfig(
            count=count, sync_on_complete=sync_on_complete, join_threshold=join_threshold,
            cancel_remaining=cancel_remaining,
            count_from_context=previous.count_from_context if previous else "",
            collection_from_context=previous.collection_from_context if previous else "",
            allow_dynamic=previous.allow_dynamic if previous else False)
        template = task_template(tasks or [])
        if template:
            parent_stage.context[MI_TASKS] = template
        parent_stage.context[MI_COUNT] = count
        contexts = instance_contexts or []
        stages = [new_instance(parent_stage, i, dict(contexts[i]) if i < len(contexts) else {},
                               instance_type, instance_name_prefix, template) for i in range(count)]
        if sync_on_complete and (stages or parent_stage.mi_config.allow_dynamic):
            join = StageExecution.create(type="noop", name=f"{parent_stage.name} [MI Join]",
                                         ref_id=join_ref_id(parent_stage.ref_id),
                                         context={MI_PARENT_REF: parent_stage.ref_id},
                                         requisite_stage_ref_ids={s.ref_id for s in stages} or
                                         {parent_stage.ref_id})
            join.join_type = JoinType.N_OF_M if join_threshold > 0 else JoinType.AND
            join.join_threshold = join_threshold
            stages.append(join)
        return stages

    @staticmethod
    def create_from_context(parent_stage: StageExecution, count_key: str, instance_type: str = "",
                            instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                            join_threshold: int = 0, cancel_remaining: bool = False,
                            tasks: Sequence[TaskExecution] | None = None) -> list[StageExecution]:
        """WCP-14: as many instances as ``parent_stage.context[count_key]`` says (read now, at
        build time); none (an empty list) when it is missing or not positive."""
        count = int(parent_stage.context.get(count_key, 0))
        if count <= 0:
            return []
        parent_stage.mi_config = MultiInstanceConfig(count=count, count_from_context=count_key)
        return MultiInstanceBuilder.create_fixed(parent_stage, count, instance_type, instance_name_prefix,
                                                 sync_on_complete, join_threshold, cancel_remaining,
                                                 tasks=tasks)

    @staticmethod
    def create_from_collection(parent_stage: StageExecution, collection_key: str, instance_type: str = "",
                               instance_name_prefix: str = "Instance", sync_on_complete: bool = True,
                               item_context_key: str = "item",
                               tasks: Sequence[TaskExecution] | None = None) -> list[StageExecution]:
        """One instance per item of the list ``parent_stage.context[collection_key]``, the item
        in its context under ``item_context_key``; none when it is missing, empty or not a list."""
        collection = parent_stage.context.get(collection_key, [])
        if not isinstance(collection, list) or not collection:
            return []
        parent_stage.mi_config = MultiInstanceConfig(count=len(collection), collection_from_context=collection_key)
        return MultiInstanceBuilder.create_fixed(parent_stage, len(collection), instance_type, instance_name_prefix,
                                                 sync_on_complete,
                                                 instance_contexts=[{item_context_key: i} for i in collection],
                                                 tasks=tasks)

    @staticmethod
    def create_dynamic(parent_stage: StageExecution, instance_type: str = "",
                       instance_name_prefix: str = "Instance", initial_count: int = 0,
                       tasks: Sequence[TaskExecution] | None = None) -> list[StageExecution]:
        """WCP-15: ``initial_count`` instances and the join; ``AddMultiInstance`` adds more
        while the join has not fired (each raises the join's threshold in its own commit)."""
        parent_stage.mi_config = MultiInstanceConfig(count=initial_count, allow_dynamic=True)
        return MultiInstanceBuilder.create_fixed(parent_stage, initial_count, instance_type, instance_name_prefix,
                                                 True, tasks=tasks)


__all__ = ["MI_COUNT", "MI_INDEX", "MI_PARENT_REF", "MI_TASKS", "MultiInstanceBuilder", "instance_ref_id",
           "join_ref_id", "new_instance", "task_template", "tasks_from_template"]
