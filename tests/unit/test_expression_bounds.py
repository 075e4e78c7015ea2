"""The expression evaluator is cost-bounded: every evaluation either returns or raises
``ExpressionError`` within its work budget, however large the values the expression builds
or the context holds, so one hostile condition cannot pin a worker's CPU (issue #6, item 1).

Bounds are asserted on work units reported by ``WorkMeter``, never on wall time."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_redis.expressions import (
    MAX_INT_BITS,
    MAX_NESTING_DEPTH,
    MAX_SEQUENCE_RESULT,
    MAX_VALUE_DEPTH,
    WORK_BUDGET_FLOOR,
    WORK_PER_CHARACTER,
    ExpressionError,
    WorkMeter,
    evaluate_expression,
    evaluate_stage_enabled,
    work_budget,
)


def _nested(depth: int, leaf: Any, wrap: type) -> Any:
    value = leaf
    for _ in range(depth):
        value = wrap((value,)) if wrap is tuple else [value]
    return value


ROWS = list(range(100_000))
CTX: dict[str, Any] = {
    "env": "prod",
    "rows": ROWS,
    "rows2": list(ROWS),
    "grid": [[i % 7 for i in range(1000)] for _ in range(1000)],
    "grid2": [[i % 7 for i in range(1000)] for _ in range(1000)],
    "log": "x" * 3_000_000,
    "fmt": b"%0999999999d",
    "deep": _nested(100_000, 0, list),
    "deep2": _nested(100_000, 0, list),
    "deep_tuple": _nested(1_000_000, 0, tuple),
    "n": 7,
}


def refused_within_budget(expr: str, ctx: dict[str, Any] = CTX) -> tuple[str, WorkMeter]:
    meter = WorkMeter()
    with pytest.raises(ExpressionError) as caught:
        evaluate_expression(expr, ctx, meter)
    assert meter.budget == work_budget(len(expr.strip()))
    assert meter.used <= meter.budget
    return str(caught.value), meter


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("[['a'*100000]*100000]*100000 == [['a'*100000]*100000]*100000", id="issue-compare"),
        pytest.param("len(str([[1]*100000]*100000))", id="issue-len-str-memoryerror"),
        pytest.param("len(str([str([0]*100000)]*100000))", id="str-of-str-repeated"),
        pytest.param("[0]*99999+[1] in [[0]*100000]*100000", id="in-huge-sequence"),
        pytest.param("[[0]*100000]*100000 == [[0]*100000]*100000 == [[0]*100000]*100000", id="chained"),
        pytest.param("[[[0]*100000]*100000]*100000 < [[[0]*100000]*100000]*100000", id="nested-mult"),
        pytest.param("min([[0]*100000]*100000)", id="min-repeated"),
        pytest.param("max([rows]*100000)", id="max-of-context-repeated"),
        pytest.param("[rows]*100000 == [rows2]*100000", id="context-repeated-compare"),
        pytest.param("str([[0]*100000]*100000) == ''", id="str-compare"),
        pytest.param("fmt % 1", id="bytes-percent-format-from-context"),
    ],
)
def test_hostile_expressions_are_refused_within_the_work_budget(expr: str) -> None:
    refused_within_budget(expr)


def test_percent_formatting_is_refused_before_it_builds_anything() -> None:
    message, meter = refused_within_budget("'%0999999999d' % 1")
    assert "formatting" in message
    assert meter.used < 10


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("grid == grid2", id="nested-context"),
        pytest.param(" and ".join(["grid == grid2"] * 60), id="repeated-context-compare"),
        pytest.param("log == log", id="huge-string"),
        pytest.param("'needle' in log", id="in-huge-string"),
        pytest.param("min(grid)", id="min-huge-context"),
    ],
)
def test_context_values_are_charged_by_their_size(expr: str) -> None:
    message, meter = refused_within_budget(expr)
    assert "work budget" in message
    assert meter.used == meter.budget


def test_work_charged_grows_with_the_size_of_compared_context_values() -> None:
    small, large = WorkMeter(), WorkMeter()
    ctx = {"a": list(range(1000)), "b": list(range(1000)), "c": ROWS, "d": list(ROWS)}
    assert evaluate_expression("a == b", ctx, small) is True
    assert evaluate_expression("c == d", ctx, large) is True
    assert 2_000 <= small.used < 3_000
    assert 200_000 <= large.used < 300_000
    assert large.used >= 90 * small.used


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("deep == deep2", id="compare"),
        pytest.param("len(str(deep))", id="str"),
        pytest.param("{deep_tuple: 1}", id="dict-key-hash"),
        pytest.param("deep_tuple in {'a': 1}", id="in-dict-hash"),
        pytest.param("{'k': 1}[deep_tuple]", id="subscript-hash"),
    ],
)
def test_deeply_nested_context_values_raise_expression_error_not_crash(expr: str) -> None:
    message, _ = refused_within_budget(expr)
    assert f"nested too deeply (limit {MAX_VALUE_DEPTH}" in message


@pytest.mark.parametrize(
    "expr",
    [
        "-" * 1999 + "1",
        "not " * 400 + "1",
        "[" * 150 + "]" * 150,
        "(" * 500 + "1" + ")" * 500,
    ],
)
def test_deeply_nested_expressions_raise_expression_error(expr: str) -> None:
    refused_within_budget(expr)


def test_expression_nesting_limit_is_reported() -> None:
    message, _ = refused_within_budget("-" * (MAX_NESTING_DEPTH + 5) + "1")
    assert f"nested too deeply (limit {MAX_NESTING_DEPTH}" in message


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("9" * 1999, id="decimal-literal"),
        pytest.param("0x" + "f" * 1998, id="hex-literal"),
        pytest.param("int('1' * 100000, 2) > 0", id="int-of-long-text"),
        pytest.param("int('1' * 4500, 2) > 0", id="int-result-too-wide"),
        pytest.param("0x" + "f" * 600 + " * 0x" + "f" * 600 + " * 0x" + "f" * 600, id="product-too-wide"),
    ],
)
def test_integers_are_capped_by_bit_length(expr: str) -> None:
    message, _ = refused_within_budget(expr)
    assert "too large" in message or "too long" in message


def test_integers_up_to_the_cap_still_work() -> None:
    width = MAX_INT_BITS // 2 - 1
    value = evaluate_expression(f"int('1' * {width}, 2) * int('1' * {width}, 2) > 0", {})
    assert value is True


def test_str_of_a_container_is_refused_before_building_a_large_string() -> None:
    message, meter = refused_within_budget("len(str(rows)) > 0")
    assert "too large" in message
    assert meter.used < 2 * len(ROWS) + 100
    assert evaluate_expression("str([1, 'a', None, (2,), {'k': 1.5}])", {}) == "[1, 'a', None, (2,), {'k': 1.5}]"


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("'a' * 100001", id="mult"),
        pytest.param("'a' * 60000 + 'a' * 60000", id="add"),
        pytest.param("[0] * 50001 * 2", id="mult-chain"),
        pytest.param("log + ''", id="add-to-context-value"),
    ],
)
def test_sequences_are_capped_before_they_are_built(expr: str) -> None:
    message, meter = refused_within_budget(expr)
    assert f"limit {MAX_SEQUENCE_RESULT}" in message
    assert meter.used < 2 * MAX_SEQUENCE_RESULT


class _Hostile:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __eq__(self, other: object) -> bool:
        raise self.error

    __hash__ = object.__hash__


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), MemoryError(), RecursionError("deep"), KeyError("x" * 10_000)]
)
def test_any_python_exception_during_evaluation_surfaces_as_expression_error(error: BaseException) -> None:
    message, _ = refused_within_budget("thing == 1", {"thing": _Hostile(error)})
    assert len(message) < 300


def test_ordinary_conditions_stay_far_below_the_budget() -> None:
    ctx = {"env": "prod", "count": 7, "build": {"status": "ok", "artifacts": [f"a{i}.whl" for i in range(1000)]}}
    condition = "build['status'] == 'ok' and 'a999.whl' in build['artifacts'] and count > 5"
    meter = WorkMeter()
    assert evaluate_expression(condition, ctx, meter) is True
    assert meter.used < WORK_BUDGET_FLOOR // 20
    longest = " and ".join([condition] * 25)
    assert evaluate_expression(longest, ctx, meter) is True
    assert meter.used < meter.budget // 2


def test_budget_is_linear_in_expression_length_above_a_floor() -> None:
    assert work_budget(1) == WORK_BUDGET_FLOOR
    assert work_budget(2000) == max(WORK_BUDGET_FLOOR, 2000 * WORK_PER_CHARACTER)
    assert work_budget(2000) <= 2000 * WORK_PER_CHARACTER + WORK_BUDGET_FLOOR


def test_stage_enabled_with_a_hostile_expression_runs_the_stage() -> None:
    hostile = {"type": "expression", "expression": "[['a'*100000]*100000]*100000 == [['a'*100000]*100000]*100000"}
    assert evaluate_stage_enabled(hostile, CTX) is True
