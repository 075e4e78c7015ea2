"""``decode_message`` turns any queue payload into a message or a ``MessageDecodeError`` —
never another exception — so every malformed entry can be dead-lettered as ``undecodable``
instead of escaping the worker and being redelivered forever."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any

import pytest

from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import (
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    MESSAGE_TYPES,
    CompleteTask,
    ContinueParentStage,
    JumpToStage,
    MessageDecodeError,
    RunTask,
    decode_message,
)


def run_task(**overrides: Any) -> str:
    data = RunTask(execution_id="wf1", stage_id="s1", task_id="t1", task_type="greet",
                   message_id="m1").to_dict()
    data.update(overrides)
    return json.dumps(data)


def complete_task(**overrides: Any) -> str:
    data = CompleteTask(execution_id="wf1", stage_id="s1", task_id="t1").to_dict()
    data.update(overrides)
    return json.dumps(data)


def rejected(payload: str | bytes) -> str:
    """The error text of a payload that must not decode (and must raise nothing else)."""
    with pytest.raises(MessageDecodeError) as info:
        decode_message(payload)
    return str(info.value)


def test_every_message_type_round_trips_through_its_wire_form() -> None:
    for name, cls in MESSAGE_TYPES.items():
        names = {f.name for f in fields(cls)}
        message = cls(**{n: "x1" for n in ("execution_id", "stage_id", "task_id") if n in names})
        message.message_id = f"id-{name}"
        decoded = decode_message(message.encode())
        assert decoded == message, name
        assert decode_message(message.encode().encode()) == message, name


def test_enum_fields_round_trip_by_name_and_none_where_optional() -> None:
    msg = CompleteTask(execution_id="w", stage_id="s", task_id="t", status=WorkflowStatus.TERMINAL,
                       original_status=None)
    assert decode_message(msg.encode()) == msg
    cont = ContinueParentStage(execution_id="w", stage_id="s", phase=SyntheticStageOwner.STAGE_BEFORE)
    assert decode_message(cont.encode()) == cont


@pytest.mark.parametrize("value", [["SUCCEEDED"], {"name": "SUCCEEDED"}, 3, True, "NOPE"],
                         ids=["list", "dict", "int", "bool", "unknown-name"])
def test_enum_field_of_the_wrong_kind_is_undecodable(value: Any) -> None:
    error = rejected(complete_task(status=value))
    assert "CompleteTask.status" in error
    assert "original_status" in rejected(complete_task(original_status=value))


def test_100000_levels_of_nesting_are_rejected_in_bounded_time() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    payloads = [deep, '{"type":"JumpToStage","execution_id":"w","stage_id":"s","jump_context":{"a":'
                + deep + "}}", "{" * 100_000]
    for payload in payloads:
        started = time.perf_counter()
        error = rejected(payload)
        assert time.perf_counter() - started < 0.5
        assert "nest" in error


def test_nesting_up_to_the_limit_decodes_and_one_more_level_does_not() -> None:
    def jump(levels: int) -> str:
        inner: Any = 1
        for _ in range(levels - 1):  # the message object itself is one level
            inner = [inner]
        return json.dumps({"type": "JumpToStage", "execution_id": "w", "stage_id": "s",
                           "jump_context": {"deep": inner}})

    ok = decode_message(jump(MAX_NESTING - 1))
    assert isinstance(ok, JumpToStage) and "deep" in ok.jump_context
    assert "nest" in rejected(jump(MAX_NESTING))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    reason = "[" * 10_000 + '\\"{' * 1000
    payload = json.dumps({"type": "CancelWorkflow", "execution_id": "w", "reason": reason})
    assert decode_message(payload).reason == reason  # type: ignore[attr-defined]


def test_payload_over_the_size_bound_is_rejected_before_parsing() -> None:
    big = json.dumps({"type": "CancelWorkflow", "execution_id": "w", "reason": "x" * MAX_PAYLOAD_BYTES})
    started = time.perf_counter()
    error = rejected(big.encode())
    assert time.perf_counter() - started < 0.5
    assert "bytes" in error


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"execution_id": ["wf1"]}, "execution_id"),
        ({"stage_id": {"id": "s1"}}, "stage_id"),
        ({"task_id": 7}, "task_id"),
        ({"task_type": None}, "task_type"),
        ({"attempts": "3"}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"retry_count": 1.5}, "retry_count"),
        ({"retry_count": -1}, "retry_count"),
        ({"max_attempts": False}, "max_attempts"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"created_at": 10 ** 400}, "created_at"),
        ({"last_error": 42}, "last_error"),
        ({"message_id": ["m1"]}, "message_id"),
    ],
    ids=lambda v: "-".join(f"{k}={json.dumps(x)[:12]}" for k, x in v.items()) if isinstance(v, dict) else v,
)
def test_field_of_the_wrong_type_is_undecodable(overrides: dict[str, Any], field_name: str) -> None:
    error = rejected(run_task(**overrides))
    assert f"RunTask.{field_name}" in error


def test_bool_and_dict_fields_are_checked_too() -> None:
    wait = {"type": "StartWaitingWorkflows", "pipeline_config_id": "p", "purge_queue": 1}
    assert "purge_queue" in rejected(json.dumps(wait))
    jump = {"type": "JumpToStage", "execution_id": "w", "stage_id": "s", "jump_context": ["a"]}
    assert "jump_context" in rejected(json.dumps(jump))


def test_a_number_too_large_for_a_float_is_undecodable() -> None:
    overflowing = run_task()[:-1] + ', "created_at": 1e400}'  # the later key wins in JSON
    assert "RunTask.created_at" in rejected(overflowing)


def test_an_integer_is_a_valid_timestamp() -> None:
    message = decode_message(run_task(created_at=1_700_000_000))
    assert message.created_at == 1_700_000_000.0 and isinstance(message.created_at, float)


@pytest.mark.parametrize("field_name", ["execution_id", "stage_id", "task_id"])
def test_a_message_without_its_target_ids_is_undecodable(field_name: str) -> None:
    data = json.loads(run_task())
    del data[field_name]
    assert f"RunTask.{field_name}" in rejected(json.dumps(data))
    assert f"RunTask.{field_name}" in rejected(run_task(**{field_name: ""}))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe not utf-8", "not json", "[1, 2", "null", "42", '"StartWorkflow"', "[]",
     '{"execution_id": "w"}', '{"type": ["RunTask"]}', '{"type": "RunTask", "created_at": NaN}',
     '{"type": "RunTask", "created_at": Infinity}', '{"type": "RunTask", "attempts": 1' + "0" * 5000 + "}"],
    ids=["empty", "not-utf8", "not-json", "truncated", "null", "number", "string", "array",
         "no-type", "type-not-a-string", "nan", "infinity", "huge-integer"],
)
def test_malformed_payloads_raise_only_message_decode_error(payload: str | bytes) -> None:
    assert rejected(payload)
