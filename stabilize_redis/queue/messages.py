"""Queue messages: the stabilize message types, as plain data.

A message is a dataclass. On the wire it is JSON: ``{"type": <class name>, ...fields}``; the
queue-assigned metadata (``message_id``, ``attempts``, ``max_attempts``, ``created_at``) travels
in the same object, so a redelivered or rescheduled message keeps its identity. Enums are
written by name. Unknown types and malformed payloads raise :class:`MessageDecodeError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ulid import ULID

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
        data = self.to_dict()
        data["attempts"] = attempts
        return message_from_dict(data)

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


@dataclass
class TaskLevel(StageLevel):
    task_id: str = ""


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
    pipeline_config_id: str = ""
    purge_queue: bool = False


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
        StartTask, RunTask, CompleteTask, PauseTask,
        InvalidWorkflowId, InvalidStageId, InvalidTaskId, InvalidTaskType,
    )
}

_ENUM_FIELDS: dict[str, Any] = {
    "status": WorkflowStatus,
    "original_status": WorkflowStatus,
    "phase": SyntheticStageOwner,
}


def get_message_type_name(message: Message) -> str:
    return type(message).__name__


def message_from_dict(data: dict[str, Any]) -> Message:
    """Build a message from its dict form; raises MessageDecodeError naming what is wrong."""
    if not isinstance(data, dict):
        raise MessageDecodeError(f"message must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageDecodeError(f"unknown message type {kind!r}")
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in names:
            raise MessageDecodeError(f"{kind}: unknown field {key!r}")
        enum = _ENUM_FIELDS.get(key)
        if enum is not None and value is not None:
            try:
                value = enum[value]
            except KeyError:
                raise MessageDecodeError(f"{kind}.{key}: unknown value {value!r}") from None
        kwargs[key] = value
    try:
        message = cls(**kwargs)
    except TypeError as e:
        raise MessageDecodeError(f"{kind}: {e}") from None
    if isinstance(message, WorkflowLevel) and not isinstance(message.execution_id, str):
        raise MessageDecodeError(f"{kind}.execution_id must be a string")
    return message


create_message_from_dict = message_from_dict


def decode_message(raw: bytes | str) -> Message:
    """Decode a wire payload; raises MessageDecodeError for anything that is not a message."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageDecodeError(f"payload is not JSON: {e}") from None
    return message_from_dict(data)
