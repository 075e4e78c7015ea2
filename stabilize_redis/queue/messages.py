"""Queue messages: the stabilize message types, as plain data.

A message is a dataclass. On the wire it is JSON: ``{"type": <class name>, ...fields}``; the
queue-assigned metadata (``message_id``, ``attempts``, ``max_attempts``, ``created_at``) travels
in the same object, so a redelivered or rescheduled message keeps its identity. Enums are
written by name.

Decoding trusts nothing: ``decode_message`` raises :class:`MessageDecodeError` - and nothing
else - for a payload over ``MAX_PAYLOAD_BYTES``, nested deeper than ``MAX_NESTING`` (checked
before parsing, in time linear in the size), not UTF-8 JSON, holding NaN/Infinity, not an
object, of an unknown type, with an unknown field, with a field whose value does not match the
dataclass's declared type (``bool`` is not an ``int``, integers are non-negative counts, enums
are member names), or without the non-empty ids of its target (``execution_id``, ``stage_id``,
``task_id``, as far as its level has them).
"""

from __future__ import annotations

import json
import math
import re
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from itertools import accumulate
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from ulid import ULID

from stabilize_redis.keys import limit_routing_id
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.models.status import WorkflowStatus


class MessageDecodeError(ValueError):
    """A queue entry that is not a valid message; its text says what is wrong."""


def new_message_id() -> str:
    return str(ULID())


@dataclass
class Message:
    """Base of every message. ``message_id`` is stable across redelivery and retries."""

    message_id: str | None = field(default=None, kw_only=True)
    created_at: float = field(default_factory=time.time, kw_only=True)
    attempts: int = field(default=0, kw_only=True)
    max_attempts: int = field(default=10, kw_only=True)
    last_error: str | None = field(default=None, kw_only=True)
    last_error_type: str | None = field(default=None, kw_only=True)

    METADATA: ClassVar[frozenset[str]] = frozenset(
        {"message_id", "created_at", "attempts", "max_attempts", "last_error", "last_error_type"}
    )

    def set_error_context(self, error: BaseException) -> None:
        self.last_error = str(error)[:2000]
        self.last_error_type = type(error).__name__

    def copy_with_attempts(self, attempts: int) -> Message:
        return replace(self, attempts=attempts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, WorkflowStatus | SyntheticStageOwner):
                value = value.name
            out[f.name] = value
        return out

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @property
    def workflow_id(self) -> str:
        return getattr(self, "execution_id", "")


@dataclass
class WorkflowLevel(Message):
    execution_type: str = "PIPELINE"
    execution_id: str = ""


@dataclass
class StageLevel(WorkflowLevel):
    stage_id: str = ""
    retry_count: int = 0


# ``attempt_token`` (task messages, JumpToStage): the run of the stage the message belongs to
# (``StageRecord.attempt``, raised by every reset of the stage: a jump or a restart). The engine
# sets it on the messages it sends; a handler discards one whose token is not the stage's current
# run (a stale attempt from before the reset). None - a message pushed by hand - is not checked.


@dataclass
class TaskLevel(StageLevel):
    task_id: str = ""
    attempt_token: int | None = field(default=None, kw_only=True)


@dataclass
class StartWorkflow(WorkflowLevel):
    pass


@dataclass
class CompleteWorkflow(WorkflowLevel):
    retry_count: int = 0


@dataclass
class CancelWorkflow(WorkflowLevel):
    user: str = ""
    reason: str = ""


@dataclass
class StartWaitingWorkflows(Message):
    """Start waiting (BUFFERED) workflows of ``pipeline_config_id`` while its limit has free
    slots; with ``purge_queue`` the ones left waiting are canceled. Routed to the limit's
    partition."""

    pipeline_config_id: str = ""
    purge_queue: bool = False

    @property
    def workflow_id(self) -> str:
        return limit_routing_id(self.pipeline_config_id)


@dataclass
class GlobalMutexAcquire(WorkflowLevel):
    """Run ``run`` of stage ``requester_stage_id`` of workflow ``requester_id`` asks for the global
    mutex ``mutex_key`` (``execution_id``: its routing id). ``fence_floor``: the fence a holder
    re-registering after a restore held (the record's fences continue above it)."""

    mutex_key: str = ""
    requester_id: str = ""
    requester_stage_id: str = ""
    run: int = 0
    fence_floor: int | None = None


@dataclass
class GlobalMutexRelease(WorkflowLevel):
    """The requester gives the global mutex back (held under ``fence``), or leaves its waiters
    (``fence`` None)."""

    mutex_key: str = ""
    requester_id: str = ""
    requester_stage_id: str = ""
    run: int = 0
    fence: int | None = None


@dataclass
class GlobalMutexGranted(WorkflowLevel):
    """The global mutex ``mutex_key`` is run ``run`` of stage ``stage_id``'s, under ``fence``."""

    stage_id: str = ""
    mutex_key: str = ""
    run: int = 0
    fence: int = 0


@dataclass
class LimitAcquire(WorkflowLevel):
    """``requester_id`` (a limited workflow starting) asks the limit of ``pipeline_config_id``
    (``execution_id``: its routing id) for a slot of ``maximum``."""

    requester_id: str = ""
    pipeline_config_id: str = ""
    maximum: int = 0
    keep_waiting: bool = False


@dataclass
class LimitRelease(WorkflowLevel):
    """``requester_id`` gives its slot (or its place among the waiters) back."""

    requester_id: str = ""
    pipeline_config_id: str = ""


@dataclass
class LimitDecision(WorkflowLevel):
    """The limit's answer to workflow ``execution_id``: ``granted``, ``buffered`` or ``refused``."""

    decision: str = ""
    pipeline_config_id: str = ""
    maximum: int = 0


@dataclass
class StartStage(StageLevel):
    pass


@dataclass
class CompleteStage(StageLevel):
    pass


@dataclass
class SkipStage(StageLevel):
    pass


@dataclass
class CancelStage(StageLevel):
    pass


@dataclass
class RestartStage(StageLevel):
    pass


@dataclass
class ResumeStage(StageLevel):
    pass


@dataclass
class ContinueParentStage(StageLevel):
    phase: SyntheticStageOwner = SyntheticStageOwner.STAGE_AFTER


@dataclass
class JumpToStage(StageLevel):
    target_stage_ref_id: str = ""
    jump_context: dict[str, Any] = field(default_factory=dict)
    jump_outputs: dict[str, Any] = field(default_factory=dict)
    attempt_token: int | None = field(default=None, kw_only=True)


@dataclass
class SignalStage(StageLevel):
    signal_name: str = ""
    signal_data: dict[str, Any] = field(default_factory=dict)
    persistent: bool = False


@dataclass
class CancelRegion(WorkflowLevel):
    region: str = ""


@dataclass
class AddMultiInstance(StageLevel):
    instance_context: dict[str, Any] = field(default_factory=dict)


@dataclass
class StartSubWorkflow(WorkflowLevel):
    """Create and start the child workflow ``execution_id`` from ``definition`` (``name``,
    ``application``, ``context``, ``stages`` as data) unless it exists; sent by the commit that
    suspends the parent stage (``decisions.sub_workflow``)."""

    parent_execution_id: str = ""
    parent_stage_id: str = ""
    definition: dict[str, Any] = field(default_factory=dict)


@dataclass
class RelayMessage(WorkflowLevel):
    """An outbox entry: ``message`` (a message as data) for a workflow of another partition,
    written by the commit of ``execution_id`` into that workflow's own partition; the relay
    forwards it to its target partition (``handlers.relay``)."""

    message: dict[str, Any] = field(default_factory=dict)


@dataclass
class StartTask(TaskLevel):
    pass


@dataclass
class RunTask(TaskLevel):
    task_type: str = ""


@dataclass
class CompleteTask(TaskLevel):
    status: WorkflowStatus = WorkflowStatus.SUCCEEDED
    original_status: WorkflowStatus | None = None


@dataclass
class PauseTask(TaskLevel):
    pass


@dataclass
class InvalidWorkflowId(WorkflowLevel):
    pass


@dataclass
class InvalidStageId(StageLevel):
    pass


@dataclass
class InvalidTaskId(TaskLevel):
    pass


@dataclass
class InvalidTaskType(TaskLevel):
    task_type_name: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        StartWorkflow, CompleteWorkflow, CancelWorkflow, StartWaitingWorkflows,
        StartStage, CompleteStage, SkipStage, CancelStage, RestartStage, ResumeStage,
        ContinueParentStage, JumpToStage, SignalStage, CancelRegion, AddMultiInstance,
        StartSubWorkflow, RelayMessage, LimitAcquire, LimitRelease, LimitDecision,
        GlobalMutexAcquire, GlobalMutexRelease, GlobalMutexGranted,
        StartTask, RunTask, CompleteTask, PauseTask,
        InvalidWorkflowId, InvalidStageId, InvalidTaskId, InvalidTaskType,
    )
}

MAX_PAYLOAD_BYTES = 1 << 20
"""Largest payload ``decode_message`` parses (the engine's own messages are a few hundred bytes)."""

MAX_NESTING = 64
"""Deepest nesting of JSON arrays and objects in a payload; the message object is level 1."""


def get_message_type_name(message: Message) -> str:
    return type(message).__name__


# -- decoding -------------------------------------------------------------------------------

_Convert = Callable[[Any], Any]


class _BadValue(Exception):
    """A field value that does not match the field's declared type."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "object"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected(what: str, value: Any) -> _BadValue:
    return _BadValue(f"expected {what}, got {_json_kind(value)}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _count(value: Any) -> int:
    """Every integer field of a message is a count (attempts, retries): bool is not one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("a non-negative integer", value)
    if value < 0:
        raise _BadValue(f"expected a non-negative integer, got {value}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected("a number", value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _BadValue("expected a finite number")
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _expected("an object", value)
    return value


def _enum(enum: type[Enum]) -> _Convert:
    def convert(value: Any) -> Enum:
        if not isinstance(value, str):
            raise _expected(f"a {enum.__name__} name", value)
        try:
            return enum[value]
        except KeyError:
            raise _BadValue(f"unknown {enum.__name__} {_brief(value)}") from None

    return convert


def _optional(inner: _Convert) -> _Convert:
    return lambda value: None if value is None else inner(value)


_SCALARS: dict[Any, _Convert] = {str: _string, int: _count, float: _number, bool: _boolean}


def _converter(hint: Any) -> _Convert:
    """The wire check of one declared field type. A field type without one fails at import,
    so a new message field cannot skip validation."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return _optional(_converter(next(a for a in args if a is not type(None))))
    if origin is dict and args[:1] == (str,):
        return _object
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"no wire check for message field type {hint!r}")


def _schema(cls: type[Message]) -> dict[str, _Convert]:
    hints = get_type_hints(cls)
    return {f.name: _converter(hints[f.name]) for f in fields(cls)}


def _target_ids(cls: type[Message]) -> tuple[str, ...]:
    levels = (("execution_id", WorkflowLevel), ("stage_id", StageLevel), ("task_id", TaskLevel))
    return tuple(name for name, level in levels if issubclass(cls, level))


_SCHEMAS = {name: _schema(cls) for name, cls in MESSAGE_TYPES.items()}
_TARGET_IDS = {name: _target_ids(cls) for name, cls in MESSAGE_TYPES.items()}


def message_from_dict(data: Any) -> Message:
    """Build a message from its dict form, checking every field against its declared type;
    raises MessageDecodeError (only) naming what is wrong."""
    if not isinstance(data, dict):
        raise MessageDecodeError(f"message must be a JSON object, got {_json_kind(data)}")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise MessageDecodeError(f"unknown message type {_brief(kind)}")
    schema = _SCHEMAS[kind]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type":
            continue
        convert = schema.get(key)
        if convert is None:
            raise MessageDecodeError(f"{kind}: unknown field {_brief(key)}")
        try:
            kwargs[key] = convert(value)
        except _BadValue as e:
            raise MessageDecodeError(f"{kind}.{key}: {e}") from None
    for name in _TARGET_IDS[kind]:
        if not kwargs.get(name):
            raise MessageDecodeError(f"{kind}.{name}: missing or empty")
    return MESSAGE_TYPES[kind](**kwargs)


create_message_from_dict = message_from_dict


# A JSON string (escapes included), and any run of characters that are not brackets.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nesting(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (linear time, no recursion)."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_payload(raw: bytes | str) -> Any:
    """The JSON value of a payload, within the size and nesting bounds; MessageDecodeError
    (only) otherwise. Safe on anything, e.g. a dead letter's payload."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MessageDecodeError(f"payload of {len(raw)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as e:
        raise MessageDecodeError(f"payload is not UTF-8: {e}") from None
    # Only a payload with more opening brackets than the limit can nest past it.
    if text.count("[") + text.count("{") > MAX_NESTING:
        depth = _nesting(text)
        if depth > MAX_NESTING:
            raise MessageDecodeError(f"payload nests {depth} levels deep (the limit is {MAX_NESTING})")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise MessageDecodeError(f"payload is not JSON: {e}") from None


def payload_type(raw: bytes | str) -> str | None:
    """The ``type`` a payload claims, or None when it is not a JSON object with a string type."""
    try:
        data = parse_payload(raw)
    except MessageDecodeError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def decode_message(raw: bytes | str) -> Message:
    """Decode a wire payload; raises MessageDecodeError, and nothing else, for anything that
    is not a well-formed message (see the module docstring for what is checked)."""
    return message_from_dict(parse_payload(raw))
