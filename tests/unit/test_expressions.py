"""The safe expression evaluator and stageEnabled semantics."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_redis.expressions import (
    MAX_EXPRESSION_LENGTH,
    ExpressionError,
    evaluate_expression,
    evaluate_stage_enabled,
    stage_expression_context,
)
from stabilize_redis.models import StageExecution, Workflow

CTX: dict[str, Any] = {
    "env": "prod",
    "count": 7,
    "build": {"status": "ok", "artifacts": ["a.whl", "b.whl"]},
    "flags": [True, False],
    "missing": None,
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("env == 'prod'", True),
        ("count > 5 and env != 'dev'", True),
        ("not (count < 5)", True),
        ("build['status'] == 'ok'", True),
        ("build['artifacts'][1]", "b.whl"),
        ("'a.whl' in build['artifacts']", True),
        ("'c.whl' not in build['artifacts']", True),
        ("missing is None", True),
        ("env is not None", True),
        ("1 < count <= 7", True),
        ("count * 2 + 1 - 3", 12),
        ("count / 2", 3.5),
        ("count // 2", 3),
        ("count % 4", 3),
        ("-count", -7),
        ("'big' if count > 5 else 'small'", "big"),
        ("[count, env]", [7, "prod"]),
        ("(1, 2)", (1, 2)),
        ("{'k': count}", {"k": 7}),
        ("len(build['artifacts']) == 2", True),
        ("max(count, 10) + min(1, 2) + abs(-3)", 14),
        ("int('4') + float('0.5')", 4.5),
        ("str(count) == '7' and bool(1)", True),
        ("any(flags) and not all(flags)", True),
        ("true and not false", True),
        ("null is None", True),
        ("count > 100 or env", "prod"),
        ("'ab' * 2 + 'c'", "ababc"),
        ("2 * [0] + [1]", [0, 0, 1]),
        ("(1,) + (2,)", (1, 2)),
        ("int('ff', 16) + int(2.9)", 257),
        ("min('bca') + max(['x', 'y'])", "ay"),
        ("str([1, 'a', None]) + str(None)", "[1, 'a', None]None"),
        ("abs(-2.5) + -(-3)", 5.5),
        ("len({'a': 1, 'b': 2}) == 2 and 'a' in {'a': 1}", True),
    ],
)
def test_supported_expressions_evaluate_like_python(expr: str, expected: Any) -> None:
    assert evaluate_expression(expr, CTX) == expected


def test_short_circuit_lets_a_guard_protect_a_lookup() -> None:
    assert evaluate_expression("missing is not None and missing['x'] == 1", CTX) is False


@pytest.mark.parametrize(
    ("expr", "named"),
    [
        ("env.upper()", "method calls"),
        ("build.status", "attribute access"),
        ("(1).__class__", "attribute access"),
        ("lambda: 1", "lambda"),
        ("[x for x in flags]", "comprehension"),
        ("{x: 1 for x in flags}", "comprehension"),
        ("any(x for x in flags)", "generator"),
        ("__import__('os')", "'__import__'"),
        ("__builtins__", "dunder"),
        ("open('/etc/passwd')", "'open'"),
        ("eval('1')", "'eval'"),
        ("count ** 2", "exponentiation"),
        ("build['artifacts'][0:1]", "slicing"),
        ("f'{env}'", "f-strings"),
        ("(y := 1)", ":="),
        ("{1, 2}", "set literals"),
        ("max(*flags)", "starred"),
        ("sorted(flags)", "'sorted'"),
        ("count << 2", "LShift"),
        ("'%s' % env", "formatting"),
    ],
)
def test_forbidden_constructs_raise_naming_the_construct(expr: str, named: str) -> None:
    with pytest.raises(ExpressionError, match=named.replace("(", r"\(").replace("*", r"\*")):
        evaluate_expression(expr, CTX)


def test_unknown_names_and_keys_are_errors() -> None:
    with pytest.raises(ExpressionError, match="unknown name 'nope'"):
        evaluate_expression("nope == 1", CTX)
    with pytest.raises(ExpressionError, match="key 'nope' not found"):
        evaluate_expression("build['nope']", CTX)
    with pytest.raises(ExpressionError, match="out of range"):
        evaluate_expression("flags[5]", CTX)


def test_syntax_errors_empty_and_overlong_expressions_are_rejected() -> None:
    for bad in ("", "   ", "count ==", "x = 1", "import os"):
        with pytest.raises(ExpressionError):
            evaluate_expression(bad, CTX)
    with pytest.raises(ExpressionError, match="too long"):
        evaluate_expression("1 + " * MAX_EXPRESSION_LENGTH + "1", CTX)


def test_evaluation_failures_become_expression_errors() -> None:
    for bad in ("count / 0", "env < 3", "int('x')", "'a' * 1000000", "max()", "-env", "{} + {}",
                "env - 'p'", "[1] * 1.5", "min(count)", "build + 1", "int(1e400)"):
        with pytest.raises(ExpressionError):
            evaluate_expression(bad, CTX)


def test_deeply_nested_input_does_not_crash_the_interpreter() -> None:
    with pytest.raises(ExpressionError):
        evaluate_expression("(" * 500 + "1" + ")" * 500, CTX)


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        (None, True),
        (True, True),
        (False, False),
        ({"type": "expression", "expression": "env == 'prod'"}, True),
        ({"type": "expression", "expression": "count > 100"}, False),
        ({"type": "expression"}, True),
        ("count > 100", False),
        ("env == 'prod'", True),
        ({"type": "something-else"}, True),
        ({"type": "expression", "expression": "undefined_name"}, True),
    ],
)
def test_stage_enabled_semantics(value: Any, enabled: bool) -> None:
    assert evaluate_stage_enabled(value, CTX) is enabled


def test_stage_expression_context_exposes_other_stages_outputs_by_ref_id() -> None:
    build = StageExecution.create("t", "build", "build")
    build.outputs = {"ok": True}
    deploy = StageExecution.create(
        "t", "deploy", "deploy", context={"region": "eu"}, requisite_stage_ref_ids={"build"}
    )
    workflow = Workflow.create("app", "wf", [build, deploy])
    ctx = stage_expression_context(deploy)
    assert ctx == {"region": "eu", "build": {"ok": True}}
    assert evaluate_stage_enabled({"type": "expression", "expression": "build['ok'] and region == 'eu'"}, ctx)
    assert workflow.stages


def test_the_names_an_expression_reads_are_its_context_names_not_its_functions() -> None:
    from stabilize_redis.expressions import expression_names

    assert expression_names("len(items) > limit and env == 'prod'") == {"items", "limit", "env"}
    assert expression_names("config['region'] in allowed") == {"config", "allowed"}
    assert expression_names("not (") == set()  # does not parse: its evaluation says why
