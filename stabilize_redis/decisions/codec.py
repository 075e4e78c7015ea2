"""Models <-> msgpack blobs, and the check that state is plain data.

A workflow is stored as one hash: ``meta`` (the workflow without its stages), ``stages`` (the
stage ids in insertion order) and one ``s:<stage_id>`` blob per stage holding the stage, its
tasks and its place in the graph (``StageRecord``). Context and outputs must be msgpack/JSON
representable: anything else is rejected with an error naming the key path — except the values
stabilize's stores write with ``json.dumps(..., default=str)`` whose ``str`` is their value
(``TEXT_TYPES``: dates and times, Decimal, UUID, paths, enums), which context and outputs store
as that string, as stabilize does.
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any

import msgpack

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution, SyntheticStageOwner
from stabilize_redis.models.stage.stage import OUTPUT_REDUCERS_KEY
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import PausedDetails, Trigger, Workflow, WorkflowType


class StateEncodingError(ValueError):
    """A value that cannot be stored: not plain data, or plain data that msgpack, JSON or
    PostgreSQL refuse. The message names the key path."""


MAX_DEPTH = 64
"""Containers a stored value may nest, counting the top-level dict. The stored forms wrap a
value in a few more levels (stage record, ancestors' lineage, event envelope, all under 10),
so 64 keeps every encoding far from msgpack's limit of 512 and from the JSON decoders of
Python, Lua cjson and PostgreSQL, and well inside the defaults of common JSON readers in
other languages (100-128); no realistic state is deeper."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integers must fit in a signed 64-bit integer (msgpack, PostgreSQL bigint, JSON readers)."""

TEXT_TYPES: tuple[type, ...] = (datetime.date, datetime.time, datetime.timedelta, Decimal, uuid.UUID, PurePath, Enum)
"""Values that context and outputs (workflow, stage, task results) store as ``str(value)``, as
stabilize's ``json.dumps(..., default=str)`` does: a ``datetime`` becomes
``'2030-01-01 00:00:00'``. Other objects, whose ``str`` is usually a repr with an address, and
sets are refused. Enums that are ints or strings are stored as such (as JSON does)."""

_isfinite = math.isfinite

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class _Problem(Exception):
    """Raised inside the walk; collects the path on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str] = []


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _key_part(key: str) -> str:
    return f".{key}" if _SIMPLE_KEY.fullmatch(key) else f"[{_short(repr(key))}]"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a NUL character, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\x00), which PostgreSQL cannot store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (a lone surrogate), so it cannot be UTF-8 encoded"
    return None


def storable_text(value: str) -> str:
    """``value`` with what ``text_problem`` refuses escaped (for messages built from user text,
    such as an exception's ``str``)."""
    if text_problem(value) is None:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _walk(value: Any, room: int, text: list[Any] | None = None) -> None:
    """Raise _Problem unless ``value`` is storable plain data nesting at most ``room`` containers.
    Recursion is bounded by ``room``, so input of any depth is safe. Exact built-in types take
    the fast branches; subclasses are judged by what they are an instance of. With ``text`` (a
    list), TEXT_TYPES values are accepted and appended to it."""
    kind = type(value)
    if kind is str:
        if "\x00" in value or not value.isascii():
            _check_text(value)
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Problem(f"{_describe(value)} is outside the signed 64-bit integer range")
    elif kind is float:
        if not _isfinite(value):
            raise _Problem(f"{value!r} is not a finite number (NaN and Infinity cannot be stored)")
    elif value is None or kind is bool or kind is bytes:
        return
    elif kind is dict or kind is list or kind is tuple:
        _walk_container(value, room, text)
    else:
        _walk_other(value, room, text)


def _check_text(value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise _Problem(f"string {_short(repr(value))} {problem}")


def _walk_container(value: dict[Any, Any] | list[Any] | tuple[Any, ...], room: int,
                    text: list[Any] | None) -> None:
    if room <= 0:
        raise _Problem(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise _Problem(f"key {_describe(key)} is a {type(key).__name__}; keys must be strings")
            if "\x00" in key or not key.isascii():
                problem = text_problem(key)
                if problem is not None:
                    raise _Problem(f"key {_short(repr(key))} {problem}")
            try:
                _walk(item, room - 1, text)
            except _Problem as p:
                p.parts.append(_key_part(key))
                raise
        return
    for i, item in enumerate(value):
        try:
            _walk(item, room - 1, text)
        except _Problem as p:
            p.parts.append(f"[{i}]")
            raise


def _walk_other(value: Any, room: int, text: list[Any] | None) -> None:
    """Subclasses of the plain types (an IntEnum, a str or dict subclass), TEXT_TYPES values and
    everything else."""
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, bool | bytes):
        return
    elif isinstance(value, int):
        _walk(int(value), room)
    elif isinstance(value, float):
        _walk(float(value), room)
    elif isinstance(value, dict | list | tuple):
        _walk_container(value, room, text)
    elif text is not None and isinstance(value, TEXT_TYPES):
        text.append(value)
    else:
        raise _Problem(f"value of type {type(value).__name__} is not msgpack/JSON-representable")


def ensure_plain(value: Any, path: str, *, as_text: bool = False) -> None:
    """Raise StateEncodingError unless ``value`` is plain data every store accepts: dicts with
    string keys, lists, tuples, str, bytes, bool, None, ints within the signed 64-bit range,
    finite floats; no string or key holding NUL or a lone surrogate; at most ``MAX_DEPTH``
    nested containers. With ``as_text`` (context and outputs), TEXT_TYPES values are accepted
    too: ``pack`` stores them as their ``str``. The message is ``"<path><key path>: <reason>"``,
    e.g. ``stage 'build': context.a.b[3]: nan is not a finite number ...``; it holds no NUL."""
    _checked(value, path, [] if as_text else None)


def _checked(value: Any, path: str, text: list[Any] | None) -> None:
    try:
        _walk(value, MAX_DEPTH, text)
    except _Problem as p:
        raise StateEncodingError(f"{path}{''.join(reversed(p.parts))}: {p.reason}") from None


def stored_form(value: Any, path: str) -> Any:
    """``value`` as context and outputs store it: checked as ``ensure_plain(..., as_text=True)``
    (StateEncodingError naming the key path), then ``value`` itself when it holds no TEXT_TYPES
    value, else a copy with each one replaced by its ``str`` (tuples become lists, as they
    decode)."""
    text: list[Any] = []
    _checked(value, path, text)
    return _as_text(value) if text else value


def _as_text(value: Any) -> Any:
    """A copy of checked ``value`` with TEXT_TYPES leaves as ``str`` (depth bounded by the check)."""
    if isinstance(value, str | bytes | bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_text(item) for item in value]
    return str(value)


def _pack_default(value: Any) -> str:
    """msgpack's hook for a type it cannot pack: the TEXT_TYPES values a check let through
    (context and outputs) become their ``str``; anything else raises what msgpack raises
    without a hook (it calls the hook for an integer beyond 64 bits too)."""
    if isinstance(value, TEXT_TYPES):
        return str(value)
    if isinstance(value, int):
        raise OverflowError("Integer value out of range")
    raise TypeError(f"can not serialize {type(value).__name__!r} object")


def ensure_text(value: Any, path: str, optional: bool = False) -> None:
    """Raise StateEncodingError unless ``value`` is a string (or None when ``optional``) that
    PostgreSQL and JSON can store."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise StateEncodingError(f"{path}: must be a string, not {type(value).__name__}")
    problem = text_problem(value)
    if problem is not None:
        raise StateEncodingError(f"{path}: {_short(repr(value))} {problem}")


def _describe(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return _short(repr(value))


def pack(value: Any) -> bytes:
    """msgpack of ``value``; TEXT_TYPES values are packed as their ``str`` (see ``ensure_plain``)."""
    return msgpack.packb(value, use_bin_type=True, default=_pack_default)


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


# -- tasks -------------------------------------------------------------------------------------


def task_to_dict(task: TaskExecution) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.name,
        "impl": task.implementing_class,
        "status": task.status.name,
        "start": task.start_time,
        "end": task.end_time,
        "ss": task.stage_start,
        "se": task.stage_end,
        "ls": task.loop_start,
        "le": task.loop_end,
        "exc": task.task_exception_details,
        "v": task.version,
    }


def task_from_dict(d: dict[str, Any]) -> TaskExecution:
    task = TaskExecution(
        id=d["id"],
        name=d["name"],
        implementing_class=d["impl"],
        status=WorkflowStatus[d["status"]],
        start_time=d["start"],
        end_time=d["end"],
        stage_start=d["ss"],
        stage_end=d["se"],
        loop_start=d["ls"],
        loop_end=d["le"],
        task_exception_details=d["exc"],
    )
    task.version = d["v"]
    return task


# -- stages ------------------------------------------------------------------------------------


@dataclass
class StageRecord:
    """A stage as stored: the model plus its place in the graph and its stored version.

    ``up``/``down`` are the stage ids of direct upstream/downstream stages (by requisite ref ids
    among siblings), ``children`` the ids of its synthetic stages, ``rank`` its position in a
    topological order of the whole workflow. ``tries`` counts, per task id, the
    executions of a task that ended in a transient error (bounded by ``task_max_attempts``);
    unlike a message's delivery ``attempts`` it survives the retry messages. ``attempt`` is the
    stage's run: raised by every reset (jump, restart), carried by the messages of that run as
    ``attempt_token``, so a message of an earlier run is recognised and discarded.

    Ancestors' outputs by reference (``decisions.views``): ``seg`` the segment it publishes into
    ("" - its own), ``src`` the sources of the segment it heads (None - derived from ``up`` or the
    parent), ``pub``/``pubd`` the keys it published and a digest of the outputs published, ``cat``
    its own context's list-valued keys at its start, which a task sees concatenated after the
    ancestors' lists (stabilize's merge). ``np``: no OR split is among its ancestors, so its
    upstreams are never pruned (set at layout; False - unknown - for stages added later).
    A record started before views holds its ancestors' outputs copied: ``anc`` in rank-tagged
    form (``dag.lineage``) and ``shadowed`` the own context values they were merged over, so a
    reset can take them back out (``decisions.reset``); a new record leaves both empty.
    ``act``: the downstream ids an OR split with conditions activated when it last ended (its
    conditions may have read its ancestors' outputs; a recount reuses the decision).
    """

    stage: StageExecution
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    rank: float = 0
    anc: dict[str, list[list[Any]]] = field(default_factory=dict)
    version: int = 0
    tries: dict[str, int] = field(default_factory=dict)
    attempt: int = 0
    shadowed: dict[str, Any] = field(default_factory=dict)
    seg: str = ""
    src: list[list[Any]] | None = None
    pub: list[str] = field(default_factory=list)
    pubd: str = ""
    cat: list[str] = field(default_factory=list)
    np: bool = False
    act: list[str] | None = None

    @property
    def id(self) -> str:
        return self.stage.id


def _with_reducers(s: StageExecution) -> dict[str, Any]:
    """The context to store: ``output_reducers`` set after construction (which mirrors them into
    the context only once) is stored too, so it is never silently dropped. Only the stage's own
    context is stored: a view over its ancestors (``context.ancestor_context``) is not."""
    own = s.context if type(s.context) is dict else dict(dict.items(s.context))
    if s.output_reducers and s.context.get(OUTPUT_REDUCERS_KEY) != s.output_reducers:
        return {**own, OUTPUT_REDUCERS_KEY: dict(s.output_reducers)}
    return own


def stage_to_dict(rec: StageRecord) -> dict[str, Any]:
    s = rec.stage
    return {
        "id": s.id,
        "ref_id": s.ref_id,
        "type": s.type,
        "name": s.name,
        "status": s.status.name,
        "context": _with_reducers(s),
        "outputs": s.outputs,
        "tasks": [task_to_dict(t) for t in s.tasks],
        "req": sorted(s.requisite_stage_ref_ids),
        "parent": s.parent_stage_id,
        "owner": s.synthetic_stage_owner.name if s.synthetic_stage_owner else None,
        "start": s.start_time,
        "end": s.end_time,
        "expiry": s.start_time_expiry,
        "scheduled": s.scheduled_time,
        "cleanup": s.cleanup_on_failure,
        "finalizers": list(s.finalizer_names),
        "join": s.join_type.name,
        "join_n": s.join_threshold,
        "split": s.split_type.name,
        "split_cond": s.split_conditions,
        "mi": s.mi_config.to_dict() if s.mi_config else None,
        "choice": s.deferred_choice_group,
        "milestone": s.milestone_ref_id,
        "milestone_status": s.milestone_status,
        "mutex": s.mutex_key,
        **({"mscope": s.mutex_scope} if s.mutex_scope != "workflow" else {}),
        "region": s.cancel_region,
        "up": rec.up,
        "down": rec.down,
        "children": rec.children,
        "rank": rec.rank,
        **({"anc": rec.anc} if rec.anc else {}),
        "tries": rec.tries,
        "att": rec.attempt,
        **({"shadow": rec.shadowed} if rec.shadowed else {}),
        **({"seg": rec.seg} if rec.seg else {}),
        **({"src": rec.src} if rec.src is not None else {}),
        **({"pub": rec.pub, "pubd": rec.pubd} if rec.pubd else {}),
        **({"cat": rec.cat} if rec.cat else {}),
        **({"np": 1} if rec.np else {}),
        **({"act": rec.act} if rec.act is not None else {}),
    }


def stage_from_dict(d: dict[str, Any], version: int = 0) -> StageRecord:
    stage = StageExecution(
        id=d["id"],
        ref_id=d["ref_id"],
        type=d["type"],
        name=d["name"],
        status=WorkflowStatus[d["status"]],
        context=d["context"],
        outputs=d["outputs"],
        tasks=[task_from_dict(t) for t in d["tasks"]],
        requisite_stage_ref_ids=set(d["req"]),
        parent_stage_id=d["parent"],
        synthetic_stage_owner=SyntheticStageOwner[d["owner"]] if d["owner"] else None,
        start_time=d["start"],
        end_time=d["end"],
        start_time_expiry=d["expiry"],
        scheduled_time=d["scheduled"],
        cleanup_on_failure=d["cleanup"],
        finalizer_names=d["finalizers"],
        join_type=JoinType[d["join"]],
        join_threshold=d["join_n"],
        split_type=SplitType[d["split"]],
        split_conditions=d["split_cond"],
        mi_config=MultiInstanceConfig.from_dict(d["mi"]) if d["mi"] else None,
        deferred_choice_group=d["choice"],
        milestone_ref_id=d["milestone"],
        milestone_status=d["milestone_status"],
        mutex_key=d["mutex"],
        mutex_scope=d.get("mscope", "workflow"),
        cancel_region=d["region"],
    )
    stage.version = version
    for task in stage.tasks:
        task.set_stage_strong(stage)
    # Blobs written before ``gates`` was dropped still hold it; it is ignored.
    return StageRecord(stage, d["up"], d["down"], d["children"], d["rank"], d.get("anc") or {}, version,
                       d.get("tries") or {}, d.get("att") or 0, d.get("shadow") or {}, d.get("seg") or "",
                       d.get("src"), d.get("pub") or [], d.get("pubd") or "", d.get("cat") or [],
                       bool(d.get("np")), d.get("act"))


def encode_stage(rec: StageRecord) -> bytes:
    return pack(stage_to_dict(rec))


def decode_stage(blob: bytes, version: int = 0) -> StageRecord:
    return stage_from_dict(unpack(blob), version)


# -- workflow meta -------------------------------------------------------------------------------


META_EXTRAS = ("top", "initial")


def meta_to_dict(wf: Workflow, extras: dict[str, Any]) -> dict[str, Any]:
    """The meta dict of a workflow; ``extras`` carries the graph facts kept beside it
    (``top``: number of top-level stages, ``initial``: ids of the initial stages)."""
    paused = wf.paused
    return {**{k: extras[k] for k in META_EXTRAS},
        "id": wf.id,
        "type": wf.type.name,
        "application": wf.application,
        "name": wf.name,
        "status": wf.status.name,
        "context": wf.context,
        "trigger": wf.trigger.to_dict() if wf.trigger else None,
        "start": wf.start_time,
        "end": wf.end_time,
        "expiry": wf.start_time_expiry,
        "canceled": wf.is_canceled,
        "canceled_by": wf.canceled_by,
        "cancel_reason": wf.cancellation_reason,
        "paused": (
            {
                "paused_by": paused.paused_by,
                "pause_time": paused.pause_time,
                "resume_time": paused.resume_time,
                "paused_ms": paused.paused_ms,
            }
            if paused
            else None
        ),
        "pipeline_config_id": wf.pipeline_config_id,
        "limit_concurrent": wf.is_limit_concurrent,
        "max_concurrent": wf.max_concurrent_executions,
        "keep_waiting": wf.keep_waiting_pipelines,
        "origin": wf.origin,
    }


def meta_from_dict(d: dict[str, Any]) -> Workflow:
    """A Workflow with no stages, from its meta dict (the extras are not Workflow fields)."""
    wf = Workflow(
        id=d["id"],
        type=WorkflowType[d["type"]],
        application=d["application"],
        name=d["name"],
        status=WorkflowStatus[d["status"]],
        stages=[],
        context=d["context"],
        trigger=Trigger.from_dict(d["trigger"]) if d["trigger"] else Trigger(),
        start_time=d["start"],
        end_time=d["end"],
        start_time_expiry=d["expiry"],
        is_canceled=d["canceled"],
        canceled_by=d["canceled_by"],
        cancellation_reason=d["cancel_reason"],
        paused=PausedDetails(**d["paused"]) if d["paused"] else None,
        pipeline_config_id=d["pipeline_config_id"],
        is_limit_concurrent=d["limit_concurrent"],
        max_concurrent_executions=d["max_concurrent"],
        keep_waiting_pipelines=d["keep_waiting"],
        origin=d["origin"],
    )
    return wf
