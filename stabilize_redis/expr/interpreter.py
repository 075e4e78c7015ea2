"""Parsing and node-by-node evaluation of condition expressions (the language, its caps and its
cost bound are documented in :mod:`stabilize_redis.expressions`). Nothing is compiled or
executed as Python code."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stabilize_redis.expr.cost import HASHED, NUMBER, SEQUENCE, TEXT, describe, exc_text
from stabilize_redis.expr.functions import FUNCTIONS, Builtins
from stabilize_redis.expr.limits import (
    MAX_EXPRESSION_LENGTH,
    MAX_INT_BITS,
    MAX_NESTING_DEPTH,
    MAX_SEQUENCE_RESULT,
    ExpressionError,
    WorkMeter,
    work_budget,
)

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

_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
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


class Evaluator(Builtins):
    """Evaluates one expression's nodes against ``ctx``, charging ``meter``."""

    def __init__(self, ctx: Mapping[str, Any], meter: WorkMeter) -> None:
        super().__init__(meter)
        self.ctx = ctx
        self.depth = 0

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(
                _FORBIDDEN.get(type(node), f"'{type(node).__name__}' expressions are not allowed")
            )
        self.charge(1, "evaluation")
        if self.depth >= MAX_NESTING_DEPTH:
            raise ExpressionError(f"expression is nested too deeply (limit {MAX_NESTING_DEPTH} levels)")
        self.depth += 1
        try:
            return method(node)
        finally:
            self.depth -= 1

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is None or isinstance(node.value, (bool, float, str)):
            return node.value
        if isinstance(node.value, int):
            self.int_bits(node.value, "a literal")
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
            self.charge_sizes("subscript", key)
            try:
                return container[key]
            except KeyError:
                raise ExpressionError(f"key {describe(key)} not found") from None
            except TypeError as exc:
                raise ExpressionError(f"invalid key {describe(key)}: {exc_text(exc)}") from None
        if isinstance(container, Sequence):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExpressionError(f"sequence index must be an integer, got {type(key).__name__}")
            try:
                return container[key]
            except IndexError:
                raise ExpressionError(f"index {describe(key)} out of range") from None
        raise ExpressionError(f"cannot subscript a value of type {type(container).__name__}")

    def _Compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise ExpressionError(f"comparison '{type(op).__name__}' is not allowed")
            is_identity = isinstance(op, (ast.Is, ast.IsNot))
            if is_identity and not (
                isinstance(comparator, ast.Constant) and comparator.value in (None, True, False)
            ):
                raise ExpressionError("'is' / 'is not' may only compare with None, True or False")
            right = self.eval(comparator)
            if is_identity:
                self.charge(1, "comparison")
            elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, HASHED):
                self.charge_sizes("'in'", left)
            else:
                self.charge_sizes("comparison", left, right)
            try:
                if not fn(left, right):
                    return False
            except TypeError as exc:
                raise ExpressionError(
                    f"cannot compare {type(left).__name__} with {type(right).__name__}: {exc_text(exc)}"
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
        if isinstance(node.op, ast.Not):
            return not operand
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise ExpressionError(f"unary operator '{type(node.op).__name__}' is not allowed")
        symbol = "-" if isinstance(node.op, ast.USub) else "+"
        if not isinstance(operand, NUMBER):
            raise ExpressionError(f"bad operand type for unary {symbol}: {type(operand).__name__}")
        self.charge(self.int_bits(operand, f"unary {symbol}") // 64 + 1, f"unary {symbol}")
        return -operand if symbol == "-" else +operand

    def _BinOp(self, node: ast.BinOp) -> Any:
        if isinstance(node.op, ast.Pow):
            raise ExpressionError("exponentiation (**) is not allowed")
        entry = _BINARY.get(type(node.op))
        if entry is None:
            raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")
        symbol, fn = entry
        left = self.eval(node.left)
        right = self.eval(node.right)
        if isinstance(node.op, ast.Mod) and isinstance(left, TEXT):
            raise ExpressionError("string formatting with % is not allowed")
        if isinstance(left, NUMBER) and isinstance(right, NUMBER):
            return self.arithmetic(node.op, symbol, fn, left, right)
        if isinstance(node.op, ast.Add) and isinstance(left, SEQUENCE) and type(left) is type(right):
            return self.build("'+'", len(left) + len(right), lambda: operator.add(left, right))
        if isinstance(node.op, ast.Mult):
            seq, count = (left, right) if isinstance(left, SEQUENCE) else (right, left)
            if isinstance(seq, SEQUENCE) and isinstance(count, int):
                times = max(0, min(count, MAX_SEQUENCE_RESULT + 1))
                return self.build("'*'", len(seq) * times, lambda: seq * times)
        raise ExpressionError(
            f"unsupported operand types for {symbol}: {type(left).__name__} and {type(right).__name__}"
        )

    def arithmetic(self, op: ast.operator, symbol: str, fn: Callable[[Any, Any], Any],
                   left: float, right: float) -> Any:
        what = f"'{symbol}'"
        a, b = self.int_bits(left, what), self.int_bits(right, what)
        if isinstance(left, int) and isinstance(right, int):
            if isinstance(op, ast.Mult):
                result_bits = a + b
            elif isinstance(op, (ast.Add, ast.Sub)):
                result_bits = max(a, b) + 1
            else:
                result_bits = max(a, b)
            if result_bits > MAX_INT_BITS:
                raise ExpressionError(f"integer result of {what} too large (limit {MAX_INT_BITS} bits)")
        self.charge((a // 64 + 1) * (b // 64 + 1), what)
        try:
            return fn(left, right)
        except ZeroDivisionError:
            raise ExpressionError("division by zero") from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise ExpressionError(f"cannot apply {what}: {exc_text(exc)}") from None

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
            value = self.eval(value_node)
            self.charge_sizes("dict key", key)
            try:
                result[key] = value
            except TypeError as exc:
                raise ExpressionError(f"invalid dict key {describe(key)}: {exc_text(exc)}") from None
        return result

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            what = "method calls" if isinstance(node.func, ast.Attribute) else "calls of computed functions"
            raise ExpressionError(f"{what} are not allowed")
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"call to '{name}' is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})"
            )
        if node.keywords:
            raise ExpressionError(f"keyword arguments to '{name}' are not allowed")
        args = [self.eval(a) for a in node.args]
        implementation: Callable[[list[Any]], Any] = getattr(self, f"call_{name}")
        try:
            return implementation(args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"{name}() failed: {exc_text(exc)}") from None

def _parse(text: str) -> ast.Expression:
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression syntax: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError("expression is too deeply nested or complex to parse") from None
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError for an over-long integer literal
        raise ExpressionError(f"invalid expression: {exc_text(exc)}") from None


def expression_names(expr: str) -> set[str]:
    """The names ``expr`` looks up in its context (not the functions it calls); empty for an
    expression that does not parse (its evaluation reports why)."""
    text = expr.strip() if isinstance(expr, str) else ""
    if not text or len(text) > MAX_EXPRESSION_LENGTH:
        return set()
    try:
        tree = _parse(text)
    except ExpressionError:
        return set()
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree)
            if isinstance(n, ast.Name) and id(n) not in called and not n.id.startswith("__")}


def evaluate_expression(expr: str, ctx: Mapping[str, Any], meter: WorkMeter | None = None) -> Any:
    """Evaluate ``expr`` against ``ctx`` and return the value (see :mod:`stabilize_redis.expressions`
    for the language and its cost bound). ``meter``, when given, is reset and then records the budget and the work
    units spent, also when the evaluation raises.

    Raises:
        ExpressionError: empty, too long, syntactically invalid, a forbidden construct, an
            unknown name or key, an evaluation failure (type error, division by zero ...), an
            exceeded size cap or work budget. Never any other exception.
    """
    meter = meter if meter is not None else WorkMeter()
    meter.budget, meter.used = 0, 0
    if not isinstance(expr, str):
        raise ExpressionError(f"expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression too long ({len(text)} chars; limit {MAX_EXPRESSION_LENGTH})")
    meter.budget = work_budget(len(text))
    tree = _parse(text)
    try:
        return Evaluator(ctx, meter).eval(tree.body)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError("expression or value is too deeply nested") from None
    except MemoryError:
        raise ExpressionError("evaluation ran out of memory") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a context object whose comparison raises
        raise ExpressionError(f"evaluation failed: {exc_text(exc)}") from None

