"""``StageContext``: a stage's context that falls back to its ancestors' outputs.

A key missing from the stage's own context is looked up in the outputs of its ancestors
(transitive upstreams and synthetic parents), nearest first: breadth-first from the stage, so
an upstream one hop away wins over one two hops away. Ancestors are the stages
``stage.execution`` holds: a stage retrieved alone (``store.retrieve_stage``) sees its direct
upstreams. A task's own ``stage.context`` needs no fallback: it already reads every ancestor's
outputs, merged in rank order (``context.ancestor_context``), as does a retrieved workflow's.

Writes and deletes go to the stage's own context; ``len`` and iteration cover it only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from stabilize_redis.models.stage import StageExecution


def ancestors_by_distance(stage: StageExecution) -> list[StageExecution]:
    """``stage``'s ancestors (upstreams, then theirs; parents of synthetic stages included),
    nearest first, each once; [] for a stage without a workflow."""
    if not stage.has_execution():
        return []

    def direct(s: StageExecution) -> list[StageExecution]:
        found = s.upstream_stages()
        if s.parent_stage_id is not None:
            with contextlib.suppress(ValueError):
                found.append(s.parent())
        return found

    seen = {stage.id}
    order: list[StageExecution] = []
    frontier = [stage]
    while frontier:
        nxt: list[StageExecution] = []
        for s in frontier:
            for a in direct(s):
                if a.id not in seen:
                    seen.add(a.id)
                    order.append(a)
                    nxt.append(a)
        frontier = nxt
    return order


class StageContext(MutableMapping[str, Any]):
    """``StageContext(stage, delegate)``: ``delegate`` (usually ``stage.context``) with
    ancestor outputs underneath (module docstring); ``in`` and ``get`` (Mapping's, over
    ``__getitem__``) see them too."""

    def __init__(self, stage: StageExecution, delegate: dict[str, Any]) -> None:
        self._stage = stage
        self._delegate = delegate

    @property
    def stage(self) -> StageExecution:
        return self._stage

    def __getitem__(self, key: str) -> Any:
        if key in self._delegate:
            return self._delegate[key]
        for ancestor in ancestors_by_distance(self._stage):
            if key in ancestor.outputs:
                return ancestor.outputs[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._delegate[key] = value

    def __delitem__(self, key: str) -> None:
        del self._delegate[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._delegate)

    def __len__(self) -> int:
        return len(self._delegate)

    def get_current_only(self, key: str, default: Any = None) -> Any:
        """The value in the stage's own context, ignoring ancestors."""
        return self._delegate.get(key, default)

    def get_all(self, key: str) -> list[Any]:
        """Every ancestor's output for ``key``, nearest first."""
        return [a.outputs[key] for a in ancestors_by_distance(self._stage) if key in a.outputs]

    def to_dict(self) -> dict[str, Any]:
        """A copy of the stage's own context."""
        return dict(self._delegate)

    def merge_with_ancestors(self) -> dict[str, Any]:
        """Ancestor outputs (nearer ones over farther ones) with the own context on top."""
        merged: dict[str, Any] = {}
        for ancestor in reversed(ancestors_by_distance(self._stage)):
            merged.update(ancestor.outputs)
        merged.update(self._delegate)
        return merged


def create_merged_context(stage: StageExecution) -> StageContext:
    """A StageContext over a new dict: ``stage``'s ancestor outputs with its context on top."""
    return StageContext(stage, StageContext(stage, stage.context).merge_with_ancestors())


__all__ = ["StageContext", "ancestors_by_distance", "create_merged_context"]
