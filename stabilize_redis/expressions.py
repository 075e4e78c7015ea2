"""A safe, cost-bounded evaluator for the small expression language of workflow conditions.

This is the public interface; the implementation is in :mod:`stabilize_redis.expr` (limits,
cost accounting, built-in functions, interpreter).

Used by ``stageEnabled`` and by OR-split ``split_conditions``.  Expressions are parsed
with :mod:`ast` and interpreted node by node; nothing is ever compiled or executed as
Python code.  Supported:

* literals: numbers, strings, ``True``/``False``/``None`` (also ``true``/``false``/``null``
  when the context has no such key), list, tuple and dict displays;
* names, looked up in the context mapping (an unknown name is an error);
* subscripts ``a['b']`` / ``a[0]`` (no slices, no attribute access);
* comparisons ``== != < <= > >= in not in`` and ``is`` / ``is not`` against
  ``None``/``True``/``False``, chained as in Python;
* ``and`` / ``or`` (short-circuit, Python semantics), ``not``, unary ``-``/``+`` on numbers;
* arithmetic ``+ - * / // %`` on numbers, ``+`` of two strings/lists/tuples/bytes of one
  type and ``*`` of one of those by an integer (no ``**``, no ``%`` formatting);
* ``x if cond else y``;
* calls to ``len str int float bool min max abs any all`` with positional arguments.

Anything else -- attribute access, lambdas, comprehensions, f-strings, dunder names, other
calls, ``**`` -- raises :class:`ExpressionError` naming the construct.

Cost bound.  Every evaluation has a work budget of :func:`work_budget` units:
``max(WORK_BUDGET_FLOOR, WORK_PER_CHARACTER * len(expression))``.  A unit is one AST node
evaluated, or one item, character or 64-bit integer limb that an operation visits.  Work is
charged *before* the operation runs: comparisons and ``in`` (by the size of both operands;
``in`` a dict or set by the needle's size), subscripts and dict keys (the key is hashed),
``*``/``+`` (the result's length), ``str()`` (the operand's size, then the result's length),
``int()``/``float()`` of text, ``min``/``max``/``any``/``all`` (their arguments' sizes) and
integer arithmetic (the operands' limbs).  The size of a value -- context values included --
is measured by an iterative walk that counts nested items and stops as soon as the count
exceeds what is left of the budget, so measuring is bounded by the budget too.  An evaluation
that would exceed its budget raises :class:`ExpressionError`; the total work of any
evaluation is therefore at most ``work_budget(len(expression))``, i.e. linear in the
expression's length with a generous floor.  :class:`WorkMeter` reports what was spent.

Size caps, checked before a value is built:

* :data:`MAX_EXPRESSION_LENGTH` characters of expression text;
* :data:`MAX_SEQUENCE_RESULT` items/characters for any string, list, tuple or bytes built
  by ``*``, ``+`` or ``str()``;
* :data:`MAX_INT_BITS` bits for integer literals, operands and results of arithmetic,
  ``abs``, ``int()`` and ``str()`` of an integer;
* :data:`MAX_NUMBER_TEXT` characters of text given to ``int()`` / ``float()``;
* :data:`MAX_NESTING_DEPTH` levels of expression nesting and :data:`MAX_VALUE_DEPTH` levels
  of nesting in any value an operation visits (deep values are never handed to C code that
  recurses without a guard, such as hashing).

Every failure -- syntax, a forbidden construct, an unknown name or key, a type error,
division by zero, an exceeded budget or cap, and any ``RecursionError``, ``MemoryError``,
``OverflowError`` or ``ValueError`` during parsing or evaluation -- surfaces as
:class:`ExpressionError` with a short message (values in messages are abbreviated).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from stabilize_redis.expr.interpreter import evaluate_expression, expression_names
from stabilize_redis.expr.limits import (
    MAX_EXPRESSION_LENGTH,
    MAX_INT_BITS,
    MAX_NESTING_DEPTH,
    MAX_NUMBER_TEXT,
    MAX_SEQUENCE_RESULT,
    MAX_VALUE_DEPTH,
    WORK_BUDGET_FLOOR,
    WORK_PER_CHARACTER,
    ExpressionError,
    WorkMeter,
    work_budget,
)

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

logger = logging.getLogger(__name__)


class StageEnabled(NamedTuple):
    """How a ``stageEnabled`` value was decided."""

    enabled: bool
    """True means "run the stage"."""
    error: str | None = None
    """Why the expression could not be evaluated (``enabled`` is then True), else None."""


def stage_enabled_expression(value: Any) -> str | None:
    """The expression a ``stageEnabled`` value holds (``check_stage_enabled``), or None."""
    if isinstance(value, Mapping):
        expression = value.get("expression", "true") if value.get("type") == "expression" else None
    else:
        expression = value
    return expression if isinstance(expression, str) else None


def check_stage_enabled(value: Any, ctx: Mapping[str, Any]) -> StageEnabled:
    """Interpret a stage's ``stageEnabled`` context value against ``ctx``; never raises.

    * missing (None) -> enabled;
    * a bool -> itself;
    * ``{"type": "expression", "expression": e}`` -> ``bool(evaluate_expression(e, ctx))``
      (``e`` defaults to ``"true"``);
    * a string -> evaluated as an expression;
    * anything else (including dicts of another type) -> enabled.

    As in stabilize, an expression that fails to evaluate does not skip the stage: the result
    is enabled, with the ExpressionError's message as ``error`` for the caller to report.
    """
    if isinstance(value, bool):
        return StageEnabled(value)
    expression = stage_enabled_expression(value)
    if expression is None:
        return StageEnabled(True)
    try:
        return StageEnabled(bool(evaluate_expression(expression, ctx)))
    except ExpressionError as exc:
        return StageEnabled(True, str(exc))


def evaluate_stage_enabled(value: Any, ctx: Mapping[str, Any]) -> bool:
    """:func:`check_stage_enabled`'s decision; True means "run the stage". An expression that
    fails to evaluate is logged (WARNING) and the stage runs."""
    decision = check_stage_enabled(value, ctx)
    if decision.error is not None:
        logger.warning("stageEnabled expression could not be evaluated (%s); running the stage", decision.error)
    return decision.enabled


def stage_expression_context(stage: StageExecution) -> dict[str, Any]:
    """The mapping ``stageEnabled`` expressions see: the stage's context, plus each other
    stage's outputs under that stage's ref_id (when non-empty)."""
    ctx: dict[str, Any] = dict(stage.context)
    if stage.has_execution():
        for other in stage.execution.stages:
            if other.ref_id != stage.ref_id and other.outputs:
                ctx[other.ref_id] = other.outputs
    return ctx


__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_INT_BITS",
    "MAX_NESTING_DEPTH",
    "MAX_NUMBER_TEXT",
    "MAX_SEQUENCE_RESULT",
    "MAX_VALUE_DEPTH",
    "WORK_BUDGET_FLOOR",
    "WORK_PER_CHARACTER",
    "ExpressionError",
    "StageEnabled",
    "WorkMeter",
    "check_stage_enabled",
    "evaluate_expression",
    "evaluate_stage_enabled",
    "expression_names",
    "stage_enabled_expression",
    "stage_expression_context",
    "work_budget",
]
