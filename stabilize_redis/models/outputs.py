"""The output-merge rule used to aggregate stage outputs (``Workflow.get_context``).

Merging is pure: inputs are never mutated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any


def _append_unique(target: list[Any], items: Iterable[Any]) -> None:
    """Append each item of ``items`` not already equal to an element of ``target``."""
    hashed: set[Any] = set()
    for existing in target:
        with contextlib.suppress(TypeError):
            hashed.add(existing)
    for item in items:
        try:
            if item in hashed:
                continue
            hashed.add(item)
        except TypeError:
            if item in target:
                continue
        target.append(item)


def merge_outputs_in_order(outputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge output dicts left to right.

    * When both the accumulated value and the new value for a key are lists, the new
      list's items are appended, skipping items already present (first occurrence wins
      and order is preserved).  The first list seen for a key is taken as is.
    * Otherwise the later value replaces the earlier one (last wins); a list replacing
      a non-list starts the key afresh.

    Returns a new dict; list values in it are copies, never the callers' lists.
    """
    result: dict[str, Any] = {}
    for mapping in outputs:
        for key, value in mapping.items():
            current = result.get(key)
            if isinstance(current, list) and isinstance(value, list):
                _append_unique(current, value)
            elif isinstance(value, list):
                result[key] = list(value)
            else:
                result[key] = value
    return result


__all__ = ["merge_outputs_in_order"]
