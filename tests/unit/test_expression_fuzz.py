"""Fuzzing the expression evaluator: random expressions from the grammar (and mutated
garbage) either evaluate or raise ``ExpressionError``, and never spend more than their work
budget, never build a string/sequence beyond the cap and never let another exception out.

Runs a fixed seed and one seed from ``STABILIZE_EXPRESSION_FUZZ_SEED`` (a fresh random one when
unset); a failure names the seed and the expression so it can be replayed."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from stabilize_redis.expressions import (
    MAX_INT_BITS,
    MAX_SEQUENCE_RESULT,
    ExpressionError,
    WorkMeter,
    evaluate_expression,
)

FIXED_SEED = 6_2024
ENV_SEED = int(os.environ.get("STABILIZE_EXPRESSION_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CASES_PER_SEED = 3000


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


HUGE_INT = 2**5000
CTX: dict[str, Any] = {
    "n": 7,
    "neg": -3,
    "f": 2.5,
    "s": "hello",
    "quote": "it's \"q\" \\ \x00",
    "flag": True,
    "nothing": None,
    "rows": list(range(20_000)),
    "grid": [[i] * 200 for i in range(200)],
    "text": "ab" * 50_000,
    "rec": {"a": [1, 2, {"b": "c"}], "n": None, "s": "x"},
    "recs": [{"id": i, "name": f"n{i}"} for i in range(2000)],
    "deep": _deep(300),
    "blob": b"%d bytes",
    "huge": HUGE_INT,
}

NAMES = [*CTX, "true", "false", "null", "none", "unknown", "__class__", "__import__"]
FUNCTIONS = ["len", "str", "int", "float", "bool", "min", "max", "abs", "any", "all", "sorted", "open", "eval"]
BINARY = ["+", "-", "*", "/", "//", "%", "**", "<<", "|", "@"]
COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"]
TOKENS = [*BINARY, *COMPARE, "(", ")", "[", "]", "{", "}", ",", ":", "'", '"', ".", "*", "not", "and",
          "or", "if", "else", "lambda", "for", "0", "1e999", "100000", "\\", "\n", "#", ";", "=", ":="]


class _Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def literal(self) -> str:
        r = self.rng
        kind = r.choices(range(7), weights=[1, 1, 1, 1, 1, 0.3, 4])[0]
        if kind == 0:
            return str(r.choice([0, 1, 2, 3, -1, 7, 10, 255]))
        if kind == 1:
            return str(r.choice([100000, 99999, 50001, 10**6, 99999999999, 2**63, 2**4000]))
        if kind == 2:
            return repr(r.choice([0.0, 0.5, -1.5, 1e308, 1e-308, float("inf")]))
        if kind == 3:
            return repr("".join(r.choice("ab%d'\"\\ \t\x00é") for _ in range(r.randrange(6))))
        if kind == 4:
            return r.choice(["'%s'", "'%0999999999d'", "'1' * 5000", "'1' * 100000", "'ff'"])
        if kind == 5:
            return r.choice(["True", "False", "None", "...", "b'x'", "1j"])
        return r.choice(NAMES)

    def expr(self, depth: int) -> str:
        r = self.rng
        if depth <= 0 or r.random() < 0.25:
            return self.literal()
        sub = depth - 1
        kind = r.choices(range(12), weights=[3, 3, 1, 1, 3, 1, 1, 1, 1, 4, 0.5, 1])[0]
        if kind == 0:
            return f"({self.expr(sub)} {r.choice(BINARY)} {self.expr(sub)})"
        if kind == 1:
            parts = [self.expr(sub) for _ in range(r.randint(2, 4))]
            ops = [r.choice(COMPARE) for _ in parts[1:]]
            return "(" + parts[0] + "".join(f" {op} {p}" for op, p in zip(ops, parts[1:], strict=True)) + ")"
        if kind == 2:
            joiner = r.choice([" and ", " or "])
            return "(" + joiner.join(self.expr(sub) for _ in range(r.randint(2, 4))) + ")"
        if kind == 3:
            return f"({r.choice(['not ', '-', '+', '~'])}{self.expr(sub)})"
        if kind == 4:
            args = ", ".join(self.expr(sub) for _ in range(r.choice([0, 1, 1, 1, 2, 3])))
            return f"{r.choice(FUNCTIONS)}({args})"
        if kind == 5:
            return f"{self.expr(sub)}[{self.expr(sub)}]"
        if kind == 6:
            items = ", ".join(self.expr(sub) for _ in range(r.randrange(4)))
            return r.choice(["[{}]", "({},)", "{{{}}}"]).format(items)
        if kind == 7:
            items = ", ".join(f"{self.expr(sub)}: {self.expr(sub)}" for _ in range(r.randrange(3)))
            return "{" + items + "}"
        if kind == 8:
            return f"({self.expr(sub)} if {self.expr(sub)} else {self.expr(sub)})"
        if kind == 9:
            times = ["100000", "50000", "3", "n", "rows[9]"]
            if r.random() < 0.5:
                return f"([[{self.expr(sub)}] * {r.choice(times)}] * {r.choice(times)})"
            return f"([{self.expr(sub)}] * {r.choice(times)})"
        if kind == 10:
            return r.choice([f"{self.expr(sub)}.upper()", f"[x for x in {self.expr(sub)}]",
                             f"{self.expr(sub)}[1:2]", f"(y := {self.expr(sub)})", f"lambda: {self.expr(sub)}"])
        return f"({self.expr(sub)} * {self.expr(sub)})"

    def mutate(self, text: str) -> str:
        r = self.rng
        for _ in range(r.randint(1, 3)):
            at = r.randrange(len(text) + 1)
            kind = r.randrange(6)
            if kind == 0:
                text = text[:at] + r.choice(TOKENS) + text[at:]
            elif kind == 1:
                text = text[:at] + text[at + r.randint(1, 5):]
            elif kind == 2:
                text = text[:at] + text[at:at + r.randint(1, 20)] * r.randint(2, 30) + text[at:]
            elif kind == 3:
                text = text[:at]
            elif kind == 4:
                wrap = r.randint(50, 400)
                text = r.choice(["(", "[", "-", "not "]) * wrap + text + r.choice([")", "]", ""]) * wrap
            else:
                text = "".join(r.choice(TOKENS) for _ in range(r.randint(1, 40)))
        return text

    def case(self) -> str:
        text = self.expr(self.rng.randint(1, 5))
        return self.mutate(text) if self.rng.random() < 0.3 else text


def _within_caps(value: Any) -> bool:
    if isinstance(value, (str, bytes, list, tuple)):
        return len(value) <= MAX_SEQUENCE_RESULT
    if isinstance(value, int):
        return value is HUGE_INT or value.bit_length() <= MAX_INT_BITS
    return True


@pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("seed", [FIXED_SEED, ENV_SEED], ids=["fixed-seed", "environment-seed"])
def test_random_expressions_evaluate_or_raise_expression_error_within_budget(seed: int) -> None:
    gen = _Generator(random.Random(seed))
    outcomes = {"value": 0, "error": 0}
    for case in range(CASES_PER_SEED):
        expr = gen.case()
        meter = WorkMeter()
        where = f"seed={seed} case={case} expr={expr[:300]!r}"
        try:
            value = evaluate_expression(expr, CTX, meter)
        except ExpressionError:
            outcomes["error"] += 1
        except BaseException as exc:  # noqa: BLE001 - the point is that nothing else escapes
            pytest.fail(f"{type(exc).__name__} escaped: {where}")
        else:
            outcomes["value"] += 1
            assert _within_caps(value), where
        assert meter.used <= meter.budget, where
    assert min(outcomes.values()) > CASES_PER_SEED // 10, outcomes
