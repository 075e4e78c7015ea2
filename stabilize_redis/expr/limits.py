"""The error type, size caps and work budget of condition expressions (see
:mod:`stabilize_redis.expressions` for what each bounds)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_EXPRESSION_LENGTH = 2000
"""Longest expression accepted, in characters."""

MAX_SEQUENCE_RESULT = 100_000
"""Largest string/list/tuple/bytes (items or characters) ``*``, ``+`` or ``str()`` may build."""

MAX_INT_BITS = 4096
"""Largest integer (in bits) a literal, an arithmetic operand or result, ``abs``, ``int()`` or
``str()`` may handle."""

MAX_NUMBER_TEXT = 5000
"""Longest string ``int()`` / ``float()`` accept, in characters."""

MAX_NESTING_DEPTH = 100
"""Deepest nesting of expression nodes evaluated."""

MAX_VALUE_DEPTH = 200
"""Deepest nesting of containers inside a value an operation visits."""

WORK_BUDGET_FLOOR = 500_000
"""Work units every evaluation may spend, however short the expression."""

WORK_PER_CHARACTER = 500
"""Work units per character of expression text, when that exceeds the floor."""


class ExpressionError(Exception):
    """The expression is malformed, uses a forbidden construct or fails to evaluate."""


@dataclass
class WorkMeter:
    """The work budget of one evaluation and the units spent, readable after it returns or raises.

    ``used`` never exceeds ``budget``: an operation that would exceed it is not run."""

    budget: int = 0
    used: int = 0


def work_budget(expression_length: int) -> int:
    """The work budget of an expression of ``expression_length`` characters."""
    return max(WORK_BUDGET_FLOOR, WORK_PER_CHARACTER * expression_length)
