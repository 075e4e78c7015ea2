"""stabilize's merge of ancestor outputs, and the rank-tagged lineage of older records.

A key several ancestors output is merged in topological (rank) order: lists concatenated
without duplicates, anything else last-wins (``merge_value``). Ancestors' outputs are found by
reference now (``decisions.views``); records started before that hold a copy in *lineage* form,
``{key: [[rank, value], ...]}``, which ``materialize`` merges (a reset takes it back out of such a
record's context: ``decisions.reset.strip_inherited``).

Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

Lineage = dict[str, list[list[Any]]]


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
