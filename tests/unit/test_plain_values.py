"""The plain-data check: what every store (msgpack in Redis, JSON events, PostgreSQL) accepts
passes unchanged; anything else is refused with the key path and the reason, for input of any
depth; and the task-side checks of results, ``retry_after`` and failure messages."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import msgpack
import pytest

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowValidationError
from stabilize_redis.decisions.codec import (
    MAX_DEPTH,
    StageRecord,
    StateEncodingError,
    decode_stage,
    encode_stage,
    ensure_plain,
    storable_text,
)
from stabilize_redis.handlers.task_execution import (
    MAX_RETRY_AFTER_S,
    Outcome,
    exception_details,
    retry_delay,
    vet_outcome,
)
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.tasks.result import TaskResult
from stabilize_redis.validation import validate_storable


def nested(depth: int, leaf: Any = 1, as_list: bool = False) -> Any:
    """``depth`` containers nested one in another, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def stage(**fields: Any) -> StageExecution:
    return StageExecution(ref_id="build", type="build", name="Build", tasks=[
        TaskExecution.create(name="compile", implementing_class="compile")], **fields)


def rejection(value: Any, path: str = "ctx") -> str:
    with pytest.raises(StateEncodingError) as info:
        ensure_plain(value, path)
    return str(info.value)


def test_plain_values_at_every_limit_pass_and_one_beyond_is_refused() -> None:
    edge = {"max": 2**63 - 1, "min": -(2**63), "big_float": 1.7e308, "tiny": 5e-324, "neg_zero": -0.0,
            "text": "naïve — 日本 🚀", "raw": b"\x00\xff", "flags": (True, False, None), "empty": {}}
    ensure_plain(edge, "ctx")
    msgpack.packb(edge, use_bin_type=True)
    ensure_plain(nested(MAX_DEPTH - 2, edge), "ctx")  # edge nests two containers itself
    ensure_plain(nested(MAX_DEPTH), "ctx")
    ensure_plain(nested(MAX_DEPTH, as_list=True), "ctx")

    assert "nested deeper than 64" in rejection(nested(MAX_DEPTH + 1))
    assert "64-bit" in rejection({"n": 2**63})
    assert "64-bit" in rejection({"n": -(2**63) - 1})


def test_a_value_at_the_depth_limit_survives_every_stored_form() -> None:
    deep = nested(MAX_DEPTH - 1)
    rec = StageRecord(stage(context={"tree": deep}, outputs={"tree": deep}))
    rec.anc = {"tree": [[0, deep]]}  # ancestors' outputs, as lineage stores them
    ensure_plain(rec.stage.context, "ctx")

    assert decode_stage(encode_stage(rec)).stage.outputs == {"tree": deep}
    event = {"event_type": "stage.completed", "data": {"outputs": rec.stage.outputs}}
    assert json.loads(json.dumps(event, allow_nan=False)) == event


REFUSED: dict[str, tuple[Any, list[str]]] = {
    "nan": ({"a": {"b": [0, 1, 2, float("nan")]}}, ["ctx.a.b[3]: ", "nan", "finite"]),
    "infinity": ({"limit": float("inf")}, ["ctx.limit: ", "inf"]),
    "minus-infinity": ({"rows": [{"low": float("-inf")}]}, ["ctx.rows[0].low: ", "-inf"]),
    "nul-in-string": ({"cmd": "make\x00all"}, ["ctx.cmd: ", "NUL"]),
    "nul-in-key": ({"env": {"PATH\x00": "/bin"}}, ["ctx.env: ", "key", "NUL"]),
    "lone-surrogate": ({"name": "bad\udc80"}, ["ctx.name: ", "surrogate"]),
    "int-beyond-64-bits": ({"seed": 2**70}, ["ctx.seed: ", "1180591620717411303424", "64-bit"]),
    "huge-int": ({"seed": 10**5000}, ["ctx.seed: ", "bits", "64-bit"]),
    "odd-key-shown-quoted": ({"my key": {"x": float("nan")}}, ["ctx['my key'].x: ", "nan"]),
    "too-deep": ({"tree": nested(600)}, ["ctx.tree.a.a.a", "nested deeper than 64"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unstorable_value_is_refused_naming_its_key_path(case: str) -> None:
    value, expected = REFUSED[case]
    message = rejection(value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert storable_text(message) == message  # the error can itself be stored and printed


@pytest.mark.parametrize("as_list", [False, True], ids=["dicts", "lists"])
def test_ten_thousand_deep_input_is_refused_without_recursion_error(as_list: bool) -> None:
    message = rejection(nested(10_000, as_list=as_list))
    assert "nested deeper than 64" in message
    assert len(message) < 1000


def test_a_value_that_contains_itself_is_refused_as_too_deep() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert "nested deeper" in rejection(loop)


@pytest.mark.parametrize("change, expected", [
    (lambda wf: setattr(wf, "name", None), "workflow name: must be a string"),
    (lambda wf: setattr(wf, "application", "app\x00"), "workflow application: "),
    (lambda wf: setattr(wf, "pipeline_config_id", "p\x00"), "workflow pipeline_config_id: "),
    (lambda wf: setattr(wf.trigger, "user", "ops\x00"), "workflow trigger.user: "),
    (lambda wf: wf.stages[0].requisite_stage_ref_ids.add("up\x00"), "stage 'build': requisite_stage_ref_ids[0]: "),
    (lambda wf: setattr(wf.stages[0].tasks[0], "implementing_class", "c\x00"),
     "stage 'build': tasks[0].implementing_class: "),
    (lambda wf: setattr(wf.stages[0], "split_conditions", {"next": "x\x00"}), "stage 'build': split_conditions.next: "),
], ids=["name-not-a-string", "application", "pipeline-config-id", "trigger-user", "requisite", "implementing-class",
        "split-condition"])
def test_workflow_text_fields_that_postgres_cannot_store_are_refused(change: Any, expected: str) -> None:
    wf = Workflow(application="itest", name="wf", stages=[stage()])
    validate_storable(wf)
    change(wf)

    with pytest.raises(WorkflowValidationError) as info:
        validate_storable(wf)

    assert str(info.value).startswith(expected), str(info.value)


# -- task side ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [(None, None), (0, 0.0), (2.5, 2.5), (timedelta(minutes=2), 120.0),
                                            (MAX_RETRY_AFTER_S, MAX_RETRY_AFTER_S)])
def test_retry_after_within_limits_is_seconds(value: Any, seconds: float | None) -> None:
    assert retry_delay(value, "retry_after") == seconds


@pytest.mark.parametrize("value, expected", [
    (float("nan"), "nan is not a finite number"), (math.inf, "inf is not a finite number"),
    (-1, "-1 is negative"), (timedelta(seconds=-1), "is negative"),
    (MAX_RETRY_AFTER_S + 1, "exceeds the limit of 86400 seconds"), (2**2000, "not a finite number"),
    ("soon", "'soon' is not a number of seconds"), (True, "True is not a number"),
])
def test_retry_after_that_cannot_be_scheduled_is_refused(value: Any, expected: str) -> None:
    with pytest.raises(StateEncodingError) as info:
        retry_delay(value, "stage 'a': task 't' retry_after")
    assert str(info.value).startswith("stage 'a': task 't' retry_after: ") and expected in str(info.value)


def test_vet_outcome_keeps_a_storable_result_and_fails_an_unstorable_one() -> None:
    good = Outcome(result=TaskResult.success(outputs={"n": 2**63 - 1}))
    assert vet_outcome(good, "stage 'a': task 't'") is good

    for result, part in [(TaskResult.success(outputs={"big": 2**64}), "result outputs.big"),
                         (TaskResult.running(context={"r": float("nan")}), "result context.r"),
                         (TaskResult(WorkflowStatus.SUCCEEDED, outputs=None), "result outputs: must be a dict"),  # type: ignore[arg-type]
                         (TaskResult.jump_to("x\x00"), "result target_stage_ref_id")]:
        vetted = vet_outcome(Outcome(result=result), "stage 'a': task 't'")
        assert vetted.result is None and not vetted.transient
        assert isinstance(vetted.error, StateEncodingError)
        assert str(vetted.error).startswith(f"stage 'a': task 't' {part}"), str(vetted.error)


def test_vet_outcome_converts_a_transient_retry_after_or_fails_the_task() -> None:
    retried = vet_outcome(Outcome(error=RuntimeError("busy"), transient=True,
                                  requested_retry_after=timedelta(seconds=3)), "w")
    assert retried.transient and retried.retry_after == 3.0

    bad = vet_outcome(Outcome(error=RuntimeError("busy"), transient=True, requested_retry_after=float("nan")), "w")
    assert not bad.transient and "w retry_after: nan" in str(bad.error)

    bad_update = vet_outcome(Outcome(error=RuntimeError("busy"), transient=True,
                                     context_update={"x": {"y": b"ok", "z": float("inf")}}), "w")
    assert not bad_update.transient and "w context_update.x.z: inf" in str(bad_update.error)


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_failure_details_are_storable_whatever_the_exception_text() -> None:
    details = exception_details(ValueError("bad\x00input \udc80"), False)["details"]
    assert details["error"] == "bad\\x00input \\udc80"
    ensure_plain(details, "details")
    assert exception_details(BrokenStr(), False)["details"]["error"] == "BrokenStr (str() failed)"
