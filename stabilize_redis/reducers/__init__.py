"""Fan-in reducers: how a join stage combines one key produced by several upstream branches.

Without a reducer, a key that several upstreams output reaches the join the way every ancestor
output does (``dag.lineage``): merged in topological order, lists concatenated, anything else
last-wins, so three researchers each returning ``{"finding": ...}`` leave one finding. A stage
that sets ``output_reducers={"finding": "collect"}`` (persisted as its context key
``_output_reducers``) gets instead, under ``finding``, the combination of the values its
upstreams produced (``apply_output_reducers``). The engine applies it when the stage starts,
over the upstreams that released it (``reducers.fan_in``).

Built-in reducers, each a function of the list of branch values (in the upstreams' topological
order, the order the default merge uses):

* ``collect`` / ``append``: one list; a branch's list value contributes its items, any other
  value (``None`` included) is one item;
* ``extend``: like ``collect``, but ``None`` values are left out;
* ``sum``: the sum of the values that are not ``None`` (0 when there are none);
* ``max`` / ``min``: the largest / smallest value that is not ``None`` (``None`` when there is none);
* ``merge``: the dict values merged left to right, later keys winning (non-dicts ignored);
* ``first`` / ``last``: the first / last branch's value.

The built-ins never mutate their input and depend on nothing but it. ``register_reducer`` adds
a named reducer of your own (or replaces a built-in under the same name); see ``fan_in`` for the
contract it must keep, since the engine calls it while it decides a stage's start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Reducer = Callable[[list[Any]], Any]
"""A reducer: the list of values the branches produced for one key -> the combined value."""


def _collect(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        out += value if isinstance(value, list) else [value]
    return out


def _extend(values: list[Any]) -> list[Any]:
    return _collect([v for v in values if v is not None])


def _sum(values: list[Any]) -> Any:
    total: Any = 0
    for value in values:
        if value is not None:
            total = total + value
    return total


def _extremum(pick: Callable[..., Any]) -> Reducer:
    def reduce(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        return pick(present) if present else None
    return reduce


def _merge(values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        if isinstance(value, dict):
            out.update(value)
    return out


def _first(values: list[Any]) -> Any:
    return values[0] if values else None


def _last(values: list[Any]) -> Any:
    return values[-1] if values else None


BUILTIN_REDUCERS: Mapping[str, Reducer] = {
    "collect": _collect,
    "append": _collect,
    "extend": _extend,
    "sum": _sum,
    "max": _extremum(max),
    "min": _extremum(min),
    "merge": _merge,
    "first": _first,
    "last": _last,
}
"""The reducers every process knows, by name."""

_registered: dict[str, Reducer] = {}
_lock = threading.Lock()


def register_reducer(name: str, reducer: Reducer) -> None:
    """Make ``reducer`` usable as ``output_reducers={key: name}`` in this process (a registered
    name takes precedence over a built-in one). Register it at import of the module a worker's
    ``--app`` names, so every worker that may start the join knows it."""
    if not isinstance(name, str) or not name:
        raise ValueError("a reducer name must be a non-empty string")
    if not callable(reducer):
        raise TypeError(f"reducer {name!r} is not callable")
    with _lock:
        _registered[name] = reducer


def unregister_reducer(name: str) -> None:
    """Forget a reducer registered under ``name`` (a built-in of that name applies again)."""
    with _lock:
        _registered.pop(name, None)


def get_reducer(name: str) -> Reducer | None:
    """The reducer named ``name``: a registered one, else a built-in, else None."""
    if not isinstance(name, str):
        return None
    registered = _registered.get(name)
    return registered if registered is not None else BUILTIN_REDUCERS.get(name)


def is_registered(name: str) -> bool:
    """Whether ``name`` resolves to a reducer registered with ``register_reducer`` (user code)
    rather than a built-in."""
    return isinstance(name, str) and name in _registered


def apply_output_reducers(reducers: Mapping[str, str], branch_outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """For each ``key -> reducer name`` of ``reducers``, the named reducer applied to the values
    the branches of ``branch_outputs`` (each branch's outputs, in order) have under ``key``.
    A key no branch produced is absent from the result; keys not in ``reducers`` are never in it.
    Raises ValueError naming reducer and key for a name that resolves to no reducer, and lets
    what a reducer raises propagate."""
    result: dict[str, Any] = {}
    for key, name in reducers.items():
        reducer = get_reducer(name)
        if reducer is None:
            raise ValueError(f"unknown output reducer {name!r} for key {key!r}")
        values = [outputs[key] for outputs in branch_outputs if key in outputs]
        if values:
            result[key] = reducer(values)
    return result


__all__ = ["BUILTIN_REDUCERS", "Reducer", "apply_output_reducers", "get_reducer", "is_registered",
           "register_reducer", "unregister_reducer"]
