"""A safe evaluator for the small expression language of workflow conditions.

Used by ``stageEnabled`` and by OR-split ``split_conditions``.  Expressions are parsed
with :mod:`ast` and interpreted node by node; nothing is ever compiled or executed as
Python code.  Supported:

* literals: numbers, strings, ``True``/``False``/``None`` (also ``true``/``false``/``null``
  when the context has no such key), list, tuple and dict displays;
* names, looked up in the context mapping (an unknown name is an error);
* subscripts ``a['b']`` / ``a[0]`` (no slices, no attribute access);
* comparisons ``== != < <= > >= in not in`` and ``is`` / ``is not`` against
  ``None``/``True``/``False``, chained as in Python;
* ``and`` / ``or`` (short-circuit, Python semantics), ``not``, unary ``-``/``+``;
* arithmetic ``+ - * / // %`` (no ``**``);
* ``x if cond else y``;
* calls to ``len str int float bool min max abs any all`` with positional arguments.

Anything else -- attribute access, lambdas, comprehensions, f-strings, dunder names, other
calls, ``**`` -- raises :class:`ExpressionError` naming the construct.  Expressions are
limited to :data:`MAX_EXPRESSION_LENGTH` characters and sequence/string results of ``*``
to :data:`MAX_SEQUENCE_RESULT` items.
"""

from __future__ import annotations

import ast
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

logger = logging.getLogger(__name__)

MAX_EXPRESSION_LENGTH = 2000
"""Longest expression accepted, in characters."""

MAX_SEQUENCE_RESULT = 100_000
"""Largest string/list a ``*`` may produce."""


class ExpressionError(Exception):
    """The expression is malformed, uses a forbidden construct or fails to evaluate."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "min": min,
    "max": max,
    "abs": abs,
    "any": any,
    "all": all,
}

_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}

_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Lambda: "lambda expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred (*) arguments are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slicing is not allowed",
}


def _fail_if_too_large(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_SEQUENCE_RESULT:
        raise ExpressionError(f"result too large ({len(value)} items; limit {MAX_SEQUENCE_RESULT})")
    return value


class _Evaluator:
    def __init__(self, ctx: Mapping[str, Any]) -> None:
        self.ctx = ctx

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(
                _FORBIDDEN.get(type(node), f"'{type(node).__name__}' expressions are not allowed")
            )
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return node.value
        raise ExpressionError(f"{type(node.value).__name__} literals are not allowed")

    def _Name(self, node: ast.Name) -> Any:
        name = node.id
        if name.startswith("__"):
            raise ExpressionError(f"dunder name '{name}' is not allowed")
        if name in self.ctx:
            return self.ctx[name]
        if name in _LITERAL_NAMES:
            return _LITERAL_NAMES[name]
        raise ExpressionError(f"unknown name '{name}'")

    def _Subscript(self, node: ast.Subscript) -> Any:
        container = self.eval(node.value)
        key = self.eval(node.slice)
        if isinstance(container, Mapping):
            try:
                return container[key]
            except KeyError:
                raise ExpressionError(f"key {key!r} not found") from None
            except TypeError as exc:
                raise ExpressionError(f"invalid key {key!r}: {exc}") from None
        if isinstance(container, Sequence):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExpressionError(f"sequence index must be an integer, got {type(key).__name__}")
            try:
                return container[key]
            except IndexError:
                raise ExpressionError(f"index {key} out of range") from None
        raise ExpressionError(f"cannot subscript a value of type {type(container).__name__}")

    def _Compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise ExpressionError(f"comparison '{type(op).__name__}' is not allowed")
            if isinstance(op, (ast.Is, ast.IsNot)) and not (
                isinstance(comparator, ast.Constant) and comparator.value in (None, True, False)
            ):
                raise ExpressionError("'is' / 'is not' may only compare with None, True or False")
            right = self.eval(comparator)
            try:
                if not fn(left, right):
                    return False
            except TypeError as exc:
                raise ExpressionError(
                    f"cannot compare {type(left).__name__} with {type(right).__name__}: {exc}"
                ) from None
            left = right
        return True

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if is_and and not value:
                return value
            if not is_and and value:
                return value
        return value

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.eval(node.operand)
        try:
            if isinstance(node.op, ast.Not):
                return not operand
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
        except TypeError as exc:
            raise ExpressionError(f"bad operand for unary operator: {exc}") from None
        raise ExpressionError(f"unary operator '{type(node.op).__name__}' is not allowed")

    def _BinOp(self, node: ast.BinOp) -> Any:
        if isinstance(node.op, ast.Pow):
            raise ExpressionError("exponentiation (**) is not allowed")
        fn = _BINARY.get(type(node.op))
        if fn is None:
            raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")
        left = self.eval(node.left)
        right = self.eval(node.right)
        if isinstance(node.op, ast.Mod) and isinstance(left, str):
            raise ExpressionError("string formatting with % is not allowed")
        if isinstance(node.op, ast.Mult):
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * max(count, 0) > MAX_SEQUENCE_RESULT
                ):
                    raise ExpressionError(f"result too large (limit {MAX_SEQUENCE_RESULT} items)")
        try:
            return _fail_if_too_large(fn(left, right))
        except ZeroDivisionError:
            raise ExpressionError("division by zero") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"cannot apply '{type(node.op).__name__}': {exc}") from None

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def _List(self, node: ast.List) -> Any:
        return [self.eval(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self.eval(e) for e in node.elts)

    def _Dict(self, node: ast.Dict) -> Any:
        result: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                raise ExpressionError("dict unpacking (**) is not allowed")
            key = self.eval(key_node)
            try:
                result[key] = self.eval(value_node)
            except TypeError as exc:
                raise ExpressionError(f"invalid dict key {key!r}: {exc}") from None
        return result

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            what = "method calls" if isinstance(node.func, ast.Attribute) else "calls of computed functions"
            raise ExpressionError(f"{what} are not allowed")
        name = node.func.id
        fn = _FUNCTIONS.get(name)
        if fn is None:
            raise ExpressionError(
                f"call to '{name}' is not allowed (allowed: {', '.join(sorted(_FUNCTIONS))})"
            )
        if node.keywords:
            raise ExpressionError(f"keyword arguments to '{name}' are not allowed")
        args = [self.eval(a) for a in node.args]
        try:
            return fn(*args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"{name}() failed: {exc}") from None


def evaluate_expression(expr: str, ctx: Mapping[str, Any]) -> Any:
    """Evaluate ``expr`` against ``ctx`` and return the value (see the module doc for the language).

    Raises:
        ExpressionError: empty, too long, syntactically invalid, a forbidden construct, an
            unknown name or key, or an evaluation failure (type error, division by zero ...).
    """
    if not isinstance(expr, str):
        raise ExpressionError(f"expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression too long ({len(text)} chars; limit {MAX_EXPRESSION_LENGTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression syntax: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("expression is too deeply nested or malformed") from None
    try:
        return _Evaluator(ctx).eval(tree.body)
    except RecursionError:
        raise ExpressionError("expression is too deeply nested") from None


def evaluate_stage_enabled(value: Any, ctx: Mapping[str, Any]) -> bool:
    """Interpret a stage's ``stageEnabled`` context value; True means "run the stage".

    * missing (None) -> True;
    * a bool -> itself;
    * ``{"type": "expression", "expression": e}`` -> ``bool(evaluate_expression(e, ctx))``
      (``e`` defaults to ``"true"``);
    * a string -> evaluated as an expression;
    * anything else (including dicts of another type) -> True.

    As in stabilize, an expression that fails to evaluate does not skip the stage: the
    failure is logged and True is returned.
    """
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    expression: Any = None
    if isinstance(value, Mapping):
        if value.get("type") != "expression":
            return True
        expression = value.get("expression", "true")
    elif isinstance(value, str):
        expression = value
    else:
        return True
    if not isinstance(expression, str):
        return True
    try:
        return bool(evaluate_expression(expression, ctx))
    except ExpressionError as exc:
        logger.warning(
            "stageEnabled expression %r could not be evaluated (%s); running the stage", expression, exc
        )
        return True


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
    "MAX_SEQUENCE_RESULT",
    "ExpressionError",
    "evaluate_expression",
    "evaluate_stage_enabled",
    "stage_expression_context",
]
