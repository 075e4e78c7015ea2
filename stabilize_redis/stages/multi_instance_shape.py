"""What a multi-instance group is made of, and the check that a submitted one is whole.

A group (WCP-12..15, 34) is a top-level stage P with ``mi_config``, its instance stages
``<P>_instance_<i>`` (top-level, each requiring P, context ``_mi_parent_ref_id`` = P's ref id and
``_mi_instance_index`` = i) and - when ``sync_on_complete`` - one join stage ``<P>_mi_join``
requiring every instance (an AND join, or N_OF_M with ``join_threshold``). The engine executes
what the config says, so a submitted group must be the shape its config describes
(``check_groups``): ``MultiInstanceBuilder`` builds exactly that. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.models.stage import JoinType, StageExecution

MI_PARENT = "_mi_parent_ref_id"
"""Instance context key (stabilize's): the ref id of the group's parent stage."""
MI_INDEX = "_mi_instance_index"
"""Instance context key (stabilize's): the instance's index, 0 for the first."""
MI_COUNT = "_mi_instance_count"
"""Parent context key (stabilize's): how many instances the group has (AddMultiInstance raises it)."""
MI_INSTANCE_TYPE = "_mi_instance_type"
"""Parent context key: the stage type of the group's instances (an added instance gets it)."""
MI_NAME_PREFIX = "_mi_instance_name_prefix"
"""Parent context key: the name prefix of the group's instances (``<prefix> [<index>]``)."""
MI_JOIN_OF = "_mi_join_of"
"""Join context key, set at submit: the ref id of the parent whose instances the join waits for."""
MI_CANCEL_REMAINING = "_mi_cancel_remaining"
"""Join context key, set at submit when the group's config has ``cancel_remaining``: the commit
that starts the join cancels the instances still unfinished."""
MI_NOT_NEEDED = "multiInstanceCanceledBy"
"""Context key of an instance canceled because its group's join had fired (cancel_remaining):
the join's ref id. The workflow's outcome counts such an instance as not taken (SKIPPED)."""


def instance_ref(parent_ref: str, index: int) -> str:
    return f"{parent_ref}_instance_{index}"


def join_ref(parent_ref: str) -> str:
    return f"{parent_ref}_mi_join"


def instance_stage(parent_ref: str, index: int, kind: str, prefix: str, context: dict[str, Any]) -> StageExecution:
    """Instance ``index`` of ``parent_ref``'s group: ``<prefix> [<index>]``, requiring the parent,
    with ``context`` (which the caller has given the instance keys)."""
    return StageExecution.create(type=kind, name=f"{prefix} [{index}]", ref_id=instance_ref(parent_ref, index),
                                 context=context, requisite_stage_ref_ids={parent_ref})


class GroupShapeError(ValueError):
    """A multi-instance group that is not the shape its ``mi_config`` describes; the message
    names the stage and the field."""


@dataclass
class Group:
    """One multi-instance group of a workflow, as submitted."""

    parent: StageExecution
    instances: list[StageExecution] = field(default_factory=list)
    join: StageExecution | None = None


def groups_of(stages: Iterable[StageExecution]) -> list[Group]:
    """The groups among ``stages`` (top-level parents with ``mi_config``), instances in index
    order. GroupShapeError for an instance naming a parent that has no ``mi_config``."""
    top = [s for s in stages if s.parent_stage_id is None]
    by_ref = {s.ref_id: s for s in top}
    groups = {s.ref_id: Group(s) for s in top if s.mi_config is not None}
    for stage in stages:
        owner = stage.context.get(MI_PARENT) if isinstance(stage.context, dict) else None
        if owner is None:
            continue
        where = f"stage {stage.ref_id!r}: context[{MI_PARENT!r}]"
        group = groups.get(owner) if isinstance(owner, str) else None
        if group is None or stage.parent_stage_id is not None:
            why = ("a synthetic stage cannot be an instance" if stage.parent_stage_id is not None else
                   f"stage {owner!r} has no mi_config" if owner in by_ref else f"no top-level stage {owner!r}")
            raise GroupShapeError(f"{where}: names the multi-instance parent {owner!r}, but {why}")
        group.instances.append(stage)
    for group in groups.values():
        group.instances.sort(key=lambda s: _index(s))
        group.join = by_ref.get(join_ref(group.parent.ref_id))
    return list(groups.values())


def _index(stage: StageExecution) -> int:
    value = stage.context.get(MI_INDEX)
    if type(value) is not int:
        raise GroupShapeError(f"stage {stage.ref_id!r}: context[{MI_INDEX!r}]: an instance needs an integer "
                              f"index, not {value!r}")
    return value


def check_groups(stages: list[StageExecution]) -> None:
    """Raise GroupShapeError unless every multi-instance group among ``stages`` is the shape its
    config describes (see the module docstring): ``count`` instances with distinct indexes,
    each requiring the parent; a join exactly when ``sync_on_complete`` and there is something
    to join (instances, or ``allow_dynamic``), requiring every instance (a dynamic group's join
    may require the parent too), N_OF_M with the config's threshold when ``join_threshold`` is
    set; ``cancel_remaining`` only with a threshold and no ``mutex_key`` on the instances; and
    ``count_from_context`` / ``collection_from_context`` agreeing with the count."""
    for stage in stages:
        if stage.mi_config is not None and stage.parent_stage_id is not None:
            raise GroupShapeError(f"stage {stage.ref_id!r}: mi_config: a synthetic stage cannot be a "
                                  "multi-instance parent")
    for group in groups_of(stages):
        _check_group(group)


def _check_group(group: Group) -> None:
    parent, mi = group.parent, group.parent.mi_config
    assert mi is not None
    at = f"stage {parent.ref_id!r}: mi_config."
    indexes = [_index(s) for s in group.instances]
    if len(set(indexes)) != len(indexes):
        raise GroupShapeError(f"{at}count: two instances of {parent.ref_id!r} share an index ({sorted(indexes)})")
    if len(group.instances) != mi.count:
        raise GroupShapeError(f"{at}count: {mi.count}, but the workflow has {len(group.instances)} instance "
                              f"stages of it (context {MI_PARENT} = {parent.ref_id!r})")
    for inst in group.instances:
        if parent.ref_id not in inst.requisite_stage_ref_ids:
            raise GroupShapeError(f"stage {inst.ref_id!r}: requisite_stage_ref_ids: an instance of "
                                  f"{parent.ref_id!r} must require it")
    _check_source(group, at)
    join, needs_join = group.join, mi.sync_on_complete and (bool(group.instances) or mi.allow_dynamic)
    if needs_join and join is None:
        raise GroupShapeError(f"{at}sync_on_complete: no stage {join_ref(parent.ref_id)!r} joins the instances")
    if join is not None and not needs_join:
        raise GroupShapeError(f"{at}sync_on_complete: {mi.sync_on_complete}, but stage "
                              f"{join.ref_id!r} joins the instances")
    if join is not None:
        _check_join(group, join, at)
    if mi.cancel_remaining:
        if mi.join_threshold <= 0 or join is None:
            raise GroupShapeError(f"{at}cancel_remaining: needs a join_threshold and a join (nothing else "
                                  "says when the remaining instances are no longer needed)")
        held = next((s for s in group.instances if s.mutex_key), None)
        if held is not None:
            raise GroupShapeError(f"stage {held.ref_id!r}: mutex_key: instances of a cancel_remaining group "
                                  "cannot take a mutex (canceling a waiting instance is not executed)")


def _check_source(group: Group, at: str) -> None:
    parent, mi = group.parent, group.parent.mi_config
    assert mi is not None
    if mi.count_from_context:
        value = parent.context.get(mi.count_from_context)
        if type(value) is not int or value != mi.count:
            raise GroupShapeError(f"{at}count_from_context: context[{mi.count_from_context!r}] is {value!r}, "
                                  f"not the count {mi.count} the instances were built for")
    if mi.collection_from_context:
        items: Any = parent.context.get(mi.collection_from_context)
        if not isinstance(items, list) or len(items) != mi.count:
            raise GroupShapeError(f"{at}collection_from_context: context[{mi.collection_from_context!r}] does "
                                  f"not hold the {mi.count} items the instances were built for")


def _check_join(group: Group, join: StageExecution, at: str) -> None:
    mi = group.parent.mi_config
    assert mi is not None
    refs = {s.ref_id for s in group.instances}
    allowed = refs | ({group.parent.ref_id} if mi.allow_dynamic else set())
    if not refs <= join.requisite_stage_ref_ids or not join.requisite_stage_ref_ids <= allowed:
        raise GroupShapeError(f"stage {join.ref_id!r}: requisite_stage_ref_ids: the join of "
                              f"{group.parent.ref_id!r} must require exactly its instances")
    if mi.join_threshold > 0 and (join.join_type is not JoinType.N_OF_M or join.join_threshold != mi.join_threshold):
        raise GroupShapeError(f"{at}join_threshold: {mi.join_threshold}, but stage {join.ref_id!r} is not an "
                              f"N_OF_M join with that threshold")
    if mi.join_threshold <= 0 and join.join_type is not JoinType.AND:
        raise GroupShapeError(f"{at}join_threshold: 0 (every instance), but stage {join.ref_id!r} is a "
                              f"{join.join_type.name} join")


def join_contexts(stages: list[StageExecution]) -> dict[str, dict[str, Any]]:
    """Join stage id -> the engine's keys for its context (MI_JOIN_OF, MI_CANCEL_REMAINING),
    for every group among ``stages`` that has a join."""
    out: dict[str, dict[str, Any]] = {}
    for group in groups_of(stages):
        mi = group.parent.mi_config
        if group.join is None or mi is None:
            continue
        keys: dict[str, Any] = {MI_JOIN_OF: group.parent.ref_id}
        if mi.cancel_remaining:
            keys[MI_CANCEL_REMAINING] = True
        out[group.join.id] = keys
    return out


__all__ = ["MI_CANCEL_REMAINING", "MI_COUNT", "MI_INDEX", "MI_INSTANCE_TYPE", "MI_JOIN_OF", "MI_NAME_PREFIX",
           "MI_NOT_NEEDED", "MI_PARENT", "Group", "GroupShapeError", "check_groups", "groups_of", "instance_ref",
           "instance_stage",
           "join_contexts", "join_ref"]
