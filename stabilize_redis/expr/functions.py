"""The built-in functions expressions may call, each checked against the size caps and charged
before it runs (see :mod:`stabilize_redis.expressions`)."""

from __future__ import annotations

from typing import Any

from stabilize_redis.expr.cost import ITERABLE, TEXT, Charger, measure
from stabilize_redis.expr.limits import MAX_NUMBER_TEXT, MAX_SEQUENCE_RESULT, ExpressionError

FUNCTIONS = ("len", "str", "int", "float", "bool", "min", "max", "abs", "any", "all")
"""Names an expression may call; ``Builtins.call_<name>`` implements each."""


class Builtins(Charger):
    """``call_<name>(args)`` for each of :data:`FUNCTIONS`; args are already evaluated.
    May raise TypeError/ValueError/OverflowError from the underlying built-in (the caller
    turns them into ExpressionError)."""

    def call_len(self, args: list[Any]) -> Any:
        self.charge(1, "len()")
        return len(*args)

    def call_bool(self, args: list[Any]) -> Any:
        self.charge(1, "bool()")
        return bool(*args)

    def call_abs(self, args: list[Any]) -> Any:
        bits = max((self.int_bits(a, "abs()") for a in args), default=0)
        self.charge(bits // 64 + 1, "abs()")
        return abs(*args)

    def call_str(self, args: list[Any]) -> Any:
        if len(args) != 1:
            if args and isinstance(args[0], bytes) and len(args[0]) > MAX_SEQUENCE_RESULT:
                raise ExpressionError(f"str() result too large (limit {MAX_SEQUENCE_RESULT} characters)")
            self.charge_sizes("str()", *args)
            return str(*args)
        value = args[0]
        self.charge_sizes("str()", value)
        if type(value) is str:
            return value
        if measure(value, MAX_SEQUENCE_RESULT, repr_chars=True) > MAX_SEQUENCE_RESULT:
            raise ExpressionError(f"str() result would be too large (limit {MAX_SEQUENCE_RESULT} characters)")
        text = str(value)
        if len(text) > MAX_SEQUENCE_RESULT:
            raise ExpressionError(f"str() result too large (limit {MAX_SEQUENCE_RESULT} characters)")
        self.charge(len(text), "str()")
        return text

    def number_text(self, args: list[Any], name: str) -> None:
        """Check and charge the text argument of ``int()`` / ``float()``."""
        if args and isinstance(args[0], TEXT):
            if len(args[0]) > MAX_NUMBER_TEXT:
                raise ExpressionError(f"{name}() argument too long ({len(args[0])} characters; "
                                      f"limit {MAX_NUMBER_TEXT})")
            self.charge(len(args[0]) + 1, f"{name}()")
        else:
            self.charge(1, f"{name}()")

    def call_int(self, args: list[Any]) -> Any:
        self.number_text(args, "int")
        result = int(*args)
        self.int_bits(result, "int()")
        return result

    def call_float(self, args: list[Any]) -> Any:
        self.number_text(args, "float")
        return float(*args)

    def over_iterables(self, name: str, args: list[Any]) -> None:
        """Check and charge the arguments of min/max/any/all (one iterable, or several values)."""
        if len(args) == 1 and not isinstance(args[0], ITERABLE):
            raise ExpressionError(f"{name}() needs a string, list, tuple or dict, got {type(args[0]).__name__}")
        self.charge_sizes(f"{name}()", *args)

    def call_min(self, args: list[Any]) -> Any:
        self.over_iterables("min", args)
        return min(*args)

    def call_max(self, args: list[Any]) -> Any:
        self.over_iterables("max", args)
        return max(*args)

    def call_any(self, args: list[Any]) -> Any:
        self.over_iterables("any", args)
        return any(*args)

    def call_all(self, args: list[Any]) -> Any:
        self.over_iterables("all", args)
        return all(*args)

