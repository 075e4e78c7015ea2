"""``AncestorContext``: what a task sees as ``stage.context`` - its own context over its
ancestors' outputs, the ancestors read only when a key is asked for (``decisions.views``).

A dict whose storage is the stage's own context: writes, ``pop``, ``update`` and
``dict.copy`` touch only that. Reads fall back to the ancestors: ``ctx[key]``, ``get``, ``in``;
iteration, ``len``, ``keys``/``items``/``values``, ``dict(ctx)`` and ``json.dumps(ctx)`` see
the merged whole (which reads every published output once). An own list value of a key in
``cat`` (list-valued in the own context when the stage started, not written since) is seen
after the ancestors' list, concatenated without duplicates - stabilize's merge.
"""

from __future__ import annotations

import copy
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from stabilize_redis.dag.lineage import merge_value
from stabilize_redis.decisions.codec import StageRecord, decode_stage
from stabilize_redis.decisions.views import AncestorView, Reads
from stabilize_redis.keys import OUTPUT_PREFIX, stage_field

_MISSING = object()


class AncestorContext(dict[str, Any]):
    def __init__(self, own: dict[str, Any], view: AncestorView, cat: list[str] | None = None) -> None:
        super().__init__(own)
        self._view = view
        self._cat = set(cat or ())

    def own(self) -> dict[str, Any]:
        """The stage's own context, as it would be stored."""
        return dict(dict.items(self))

    def _get(self, key: str) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING and not (key in self._cat and isinstance(value, list)):
            return value
        found, inherited = self._view.lookup(key)
        if not found:
            return value
        return inherited if value is _MISSING else merge_value(inherited, value)

    def _merged(self) -> dict[str, Any]:
        out = dict(self._view.materialize())
        for key, value in dict.items(self):
            out[key] = merge_value(out[key], value) if key in self._cat and key in out else value
        return out

    def __getitem__(self, key: str) -> Any:
        value = self._get(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._get(key)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._get(key) is not _MISSING

    def __setitem__(self, key: str, value: Any) -> None:
        self._cat.discard(key)
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        new = dict(*args, **kwargs)
        self._cat.difference_update(new)
        dict.update(self, new)

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return self._merged().keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return self._merged().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return self._merged().values()

    def __eq__(self, other: object) -> bool:
        return self._merged() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._merged())

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        return self._merged()

    def __copy__(self) -> AncestorContext:
        return AncestorContext(self.own(), self._view, sorted(self._cat))

    def __deepcopy__(self, memo: dict[int, Any]) -> AncestorContext:
        return AncestorContext(copy.deepcopy(self.own(), memo), self._view, sorted(self._cat))

    def __reduce__(self) -> Any:
        return (dict, (self._merged(),))


def with_view(rec: StageRecord, reads: Reads) -> AncestorContext:
    """``rec``'s own context over its ancestors' outputs, read through ``reads``."""
    return AncestorContext(own_context(rec.stage.context), AncestorView(rec, reads), rec.cat)


def hash_reads(raw: Mapping[bytes, bytes], records: Mapping[str, StageRecord] | None = None) -> Reads:
    """Reads of a workflow hash in memory (as HGETALL returns it; ``records``: those decoded)."""
    known = dict(records or {})

    def stages(ids: list[str]) -> dict[str, StageRecord]:
        out: dict[str, StageRecord] = {}
        for i in ids:
            if i not in known:
                blob = raw.get(stage_field(i).encode())
                if blob is None:
                    continue
                known[i] = decode_stage(blob)
            out[i] = known[i]
        return out

    def fields(names: list[str]) -> list[bytes | None]:
        return [raw.get(n.encode()) for n in names]

    def scan() -> Iterable[tuple[str, bytes]]:
        prefix = OUTPUT_PREFIX.encode()
        return [(k.decode(), v) for k, v in raw.items() if k.startswith(prefix)]

    return Reads(stages, fields, scan)


def own_context(context: dict[str, Any]) -> dict[str, Any]:
    """``context`` without its ancestors (the plain dict a record stores)."""
    return context.own() if isinstance(context, AncestorContext) else context


__all__ = ["AncestorContext", "hash_reads", "own_context", "with_view"]
