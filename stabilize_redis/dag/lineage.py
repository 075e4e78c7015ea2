"""Ancestor outputs without reading ancestors: rank-tagged lineage.

stabilize gives a starting stage the merged outputs of *all* its transitive ancestors, merged in
topological order (lists concatenated without duplicates, everything else last-wins). Reading
every ancestor would make a transition's cost grow with the workflow. Instead each stage keeps
its ancestors' outputs in *lineage* form, ``{key: [[rank, value], ...]}`` with one entry per
contributing stage, ``rank`` being that stage's topological position. A stage's lineage is the
union of its direct upstreams' lineages plus their own outputs, so a start reads only the direct
upstreams, and merging by rank reproduces the topological-order merge exactly.

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Lineage = dict[str, list[list[Any]]]


def extend_lineage(lineage: Lineage, rank: float, outputs: Mapping[str, Any]) -> Lineage:
    """A new lineage: ``lineage`` plus the outputs of the stage of topological position ``rank``."""
    out: Lineage = {k: list(v) for k, v in lineage.items()}
    for key, value in outputs.items():
        entries = out.setdefault(key, [])
        if not any(e[0] == rank for e in entries):
            entries.append([rank, value])
    return out


def union_lineages(lineages: Iterable[Lineage]) -> Lineage:
    """Union of lineages; an ancestor reached through several paths contributes once."""
    out: Lineage = {}
    seen: dict[str, set[Any]] = {}  # key -> ranks in out[key], kept as it grows: linear in the entries
    for lineage in lineages:
        for key, entries in lineage.items():
            mine = out.setdefault(key, [])
            ranks = seen.setdefault(key, set())
            for entry in entries:
                if entry[0] not in ranks:
                    mine.append(list(entry))
                    ranks.add(entry[0])
    return out


def merge_value(current: Any, new: Any) -> Any:
    """stabilize's merge of two values: lists concatenate without duplicates, else last wins."""
    if isinstance(current, list) and isinstance(new, list):
        merged = list(current)
        for item in new:
            if item not in merged:
                merged.append(item)
        return merged
    return new


def materialize(lineage: Lineage) -> dict[str, Any]:
    """The merged outputs a lineage stands for, merged in rank (topological) order."""
    out: dict[str, Any] = {}
    for key, entries in lineage.items():
        ordered = sorted(entries, key=lambda e: e[0])
        value = ordered[0][1]
        for _, item in ordered[1:]:
            value = merge_value(value, item)
        out[key] = value
    return out


def context_with_ancestors(own_context: Mapping[str, Any], ancestors: Mapping[str, Any]) -> dict[str, Any]:
    """A starting stage's context: ancestor outputs underneath, its own context on top
    (own lists are concatenated after the ancestors' lists)."""
    out = dict(ancestors)
    for key, value in own_context.items():
        out[key] = merge_value(out[key], value) if key in out else value
    return out
