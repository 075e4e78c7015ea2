"""Measuring values and charging work: the cost accounting of one evaluation.

A work unit is one AST node evaluated, or one item, character or 64-bit integer limb that an
operation visits. :func:`measure` sizes a value by an iterative walk that stops as soon as the
count exceeds a limit, so measuring costs O(min(size, limit)); :class:`Charger` charges an
operation to a :class:`~stabilize_redis.expr.limits.WorkMeter` *before* it runs and raises
:class:`~stabilize_redis.expr.limits.ExpressionError` instead of exceeding the budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from stabilize_redis.expr.limits import (
    MAX_INT_BITS,
    MAX_SEQUENCE_RESULT,
    MAX_VALUE_DEPTH,
    ExpressionError,
    WorkMeter,
)

NUMBER = (int, float)
SEQUENCE = (str, bytes, list, tuple)
TEXT = (str, bytes)
ITERABLE = (str, bytes, list, tuple, dict, set, frozenset)
HASHED = (Mapping, set, frozenset)


def _repr_chars(value: Any) -> int:
    """An upper bound on ``len(repr(value))`` for a value that is not a container."""
    if isinstance(value, str):
        if value.isprintable():
            both_quotes = "'" in value and '"' in value
            return len(value) + 2 + value.count("\\") + (value.count("'") if both_quotes else 0)
        return 10 * len(value) + 2
    if isinstance(value, bytes):
        return 4 * len(value) + 3
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"integer too large to convert ({value.bit_length()} bits; limit {MAX_INT_BITS})")
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    return 64  # other types: str() checks the length it actually produced


def _work_units(value: Any) -> int:
    """Work units of visiting a value that is not a container."""
    if isinstance(value, (str, bytes)):
        return len(value) + 1
    if isinstance(value, int):
        return value.bit_length() // 64 + 1
    return 1


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_FLAT_MINIMUM = 8  # below this many slots, walking is cheaper than trying the C-level sums
_KNOWN_SIZES = 4096  # containers whose size one walk remembers (values built by '*' repeat a few)


def _flat_work_units(items: Any) -> int | None:
    """:func:`_work_units` summed over a collection of plain scalars (``str bytes int float bool
    None``), computed by C-level loops; None when it holds anything else."""
    kinds = set(map(type, items))
    if not kinds <= _SCALARS:
        return None
    total = len(items)
    if str in kinds:
        total += sum(map(len, filter(str.__instancecheck__, items)))
    if bytes in kinds:
        total += sum(map(len, filter(bytes.__instancecheck__, items)))
    if int in kinds:
        total += sum(map(int.bit_length, filter(int.__instancecheck__, items))) // 64
    return total


def _flat_mapping_units(mapping: Mapping[Any, Any]) -> int | None:
    """:func:`_flat_work_units` of a mapping's keys plus its values, or None."""
    keys = _flat_work_units(mapping.keys())
    values = _flat_work_units(mapping.values()) if keys is not None else None
    return None if keys is None or values is None else keys + values


def measure(value: Any, limit: int, *, repr_chars: bool = False) -> int:
    """The size of ``value`` in work units (or, with ``repr_chars``, an upper bound on the length
    of its ``str()``), counting every nested item -- a container that occurs several times
    counts each time; once the count exceeds ``limit`` the walk stops and returns a number
    greater than ``limit``, so it costs O(min(size, limit)).

    Iterative: deep values never raise RecursionError; a value nested deeper than
    :data:`MAX_VALUE_DEPTH` raises ExpressionError."""
    total = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    open_containers: list[tuple[int, int]] = []  # (id, total before it) per stack entry but the first
    known: dict[int, int] = {}  # id -> size of a container already measured in full
    while stack:
        for item in stack[-1]:
            if type(item) in _SCALARS:
                total += _repr_chars(item) if repr_chars else _work_units(item)
                if total > limit:
                    return total
                continue
            before = total
            size = known.get(id(item))
            if size is not None:
                total += size
                if total > limit:
                    return total
                continue
            cls = type(item)
            is_mapping = cls is dict or (cls is not list and isinstance(item, Mapping))
            if not is_mapping and not isinstance(item, (list, tuple, set, frozenset)):
                total += _repr_chars(item) if repr_chars else _work_units(item)
                if total > limit:
                    return total
                continue
            slots = 2 * len(item) if is_mapping else len(item)
            total += 13 + 2 * slots if repr_chars else 1  # repr: brackets, separators, "frozenset()"
            if total + slots > limit:
                return total + slots
            if not item:
                continue
            if not repr_chars and slots >= _FLAT_MINIMUM:
                flat = _flat_mapping_units(item) if is_mapping else _flat_work_units(item)
                if flat is not None:
                    total += flat
                    if total > limit:
                        return total
                    if len(known) < _KNOWN_SIZES:
                        known[id(item)] = total - before
                    continue
            if len(stack) >= MAX_VALUE_DEPTH:
                raise ExpressionError(f"value is nested too deeply (limit {MAX_VALUE_DEPTH} levels)")
            stack.append(itertools.chain.from_iterable(item.items()) if is_mapping else iter(item))
            open_containers.append((id(item), before))
            break
        else:
            stack.pop()
            if open_containers:
                key, before = open_containers.pop()
                if len(known) < _KNOWN_SIZES:
                    known[key] = total - before
    return total


def describe(value: Any) -> str:
    """A short rendering of ``value`` for error messages (never builds a large string)."""
    try:
        small = measure(value, 60) <= 60
    except ExpressionError:
        small = False
    if small:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    size = f" of length {len(value)}" if isinstance(value, ITERABLE) else ""
    return f"<{type(value).__name__}{size}>"


def exc_text(exc: BaseException) -> str:
    """``Type: message`` for an exception from Python code, truncated; never repr()s its arguments."""
    arg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {arg[:200]}" if arg else type(exc).__name__


class Charger:
    """Charges the operations of one evaluation to ``meter``."""

    def __init__(self, meter: WorkMeter) -> None:
        self.meter = meter

    def charge(self, units: int, what: str) -> None:
        """Spend ``units`` on ``what``, or raise ExpressionError (spending the rest) if they do not fit."""
        used = self.meter.used + units
        if used > self.meter.budget:
            self.meter.used = self.meter.budget  # measuring what did not fit spent the rest
            raise ExpressionError(f"{what} exceeds the expression's work budget ({self.meter.budget} units)")
        self.meter.used = used

    def charge_sizes(self, what: str, *values: Any) -> None:
        """Charge for an operation that may visit every part of ``values``."""
        remaining = self.meter.budget - self.meter.used
        total = 0
        for value in values:
            total += measure(value, remaining - total)
            if total > remaining:
                break
        self.charge(total, what)

    def build(self, what: str, length: int, make: Callable[[], Any]) -> Any:
        """Build a string/sequence of ``length`` items after checking the cap and charging."""
        if length > MAX_SEQUENCE_RESULT:
            raise ExpressionError(f"result of {what} too large ({length} items; limit {MAX_SEQUENCE_RESULT})")
        self.charge(length + 1, what)
        return make()

    @staticmethod
    def int_bits(value: Any, what: str) -> int:
        """The bit length of an int ``value`` (0 for other values), capped at MAX_INT_BITS."""
        if not isinstance(value, int):
            return 0
        bits = value.bit_length()
        if bits > MAX_INT_BITS:
            raise ExpressionError(f"integer too large for {what} ({bits} bits; limit {MAX_INT_BITS})")
        return bits

