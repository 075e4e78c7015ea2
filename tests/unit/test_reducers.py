"""The reducers of ``stabilize_redis.reducers`` (pure functions of the branch values) and
``apply_output_reducers``, stabilize's API."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from stabilize_redis.reducers import (
    BUILTIN_REDUCERS,
    apply_output_reducers,
    get_reducer,
    register_reducer,
    unregister_reducer,
)


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        unregister_reducer(name)


@pytest.mark.parametrize(("name", "values", "expected"), [
    ("collect", ["a", ["b", "c"], None, 1], ["a", "b", "c", None, 1]),
    ("append", ["a", ["b"]], ["a", "b"]),
    ("extend", [["a"], None, "b", ["c", "d"]], ["a", "b", "c", "d"]),
    ("sum", [1, None, 2.5, 3], 6.5),
    ("sum", [None], 0),
    ("max", [3, None, 7, 1], 7),
    ("min", [3, None, 7, 1], 1),
    ("max", [None, None], None),
    ("merge", [{"a": 1, "b": 1}, "not a dict", {"b": 2}], {"a": 1, "b": 2}),
    ("first", ["x", "y", "z"], "x"),
    ("last", ["x", "y", "z"], "z"),
])
def test_builtin_reducers_combine_branch_values(name: str, values: list[Any], expected: Any) -> None:
    reducer = get_reducer(name)
    assert reducer is not None
    assert reducer(values) == expected


@pytest.mark.parametrize("name", sorted(BUILTIN_REDUCERS))
def test_builtin_reducers_do_not_change_their_input(name: str) -> None:
    values: list[Any] = [[1, 2], [3], [4]] if name not in ("sum", "max", "min", "merge") else [1, 2, 3]
    if name == "merge":
        values = [{"a": [1]}, {"b": [2]}]
    before = copy.deepcopy(values)
    result = BUILTIN_REDUCERS[name](values)
    assert values == before
    if name not in ("first", "last") and isinstance(result, list | dict):
        assert all(result is not v for v in values), "a new container, never a branch's own"


def test_apply_output_reducers_reduces_only_the_named_keys_some_branch_produced() -> None:
    branches: list[dict[str, Any]] = [{"candidate": "a", "score": 3, "other": 1}, {"candidate": "b", "score": 5}, {"score": 2}]
    result = apply_output_reducers({"candidate": "collect", "score": "sum", "missing": "collect"}, branches)
    assert result == {"candidate": ["a", "b"], "score": 10}


def test_an_unknown_reducer_name_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'nope'.*'k'"):
        apply_output_reducers({"k": "nope"}, [{"k": 1}])
    assert get_reducer("nope") is None


def test_a_registered_reducer_is_used_and_takes_precedence_over_a_builtin(registered: list[str]) -> None:
    register_reducer("joined", lambda values: ",".join(str(v) for v in values))
    register_reducer("sum", lambda values: "overridden")
    registered += ["joined", "sum"]
    assert apply_output_reducers({"tag": "joined", "n": "sum"}, [{"tag": "x", "n": 1}, {"tag": "y", "n": 2}]) == {
        "tag": "x,y", "n": "overridden"}
    unregister_reducer("sum")
    assert apply_output_reducers({"n": "sum"}, [{"n": 1}, {"n": 2}]) == {"n": 3}


def test_register_reducer_refuses_what_is_not_a_named_callable() -> None:
    with pytest.raises(ValueError):
        register_reducer("", lambda values: values)
    with pytest.raises(TypeError):
        register_reducer("x", "not callable")  # type: ignore[arg-type]
