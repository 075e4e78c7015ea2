"""The write plan of one state transition, built by a handler's decision and applied by the
commit script (``lua/commit.lua``) in one atomic step. Plain data; no I/O.

Counters (version 2): every counter's threshold is stored beside it in the workflow hash
(``keys.threshold_field``, laid out at submit), so ``count`` carries no threshold - the script
compares the new value with the stored one and releases the counter's message exactly when it
is reached. ``reset_counter`` and ``unsettle`` are the reset/recount step (a jump, a restart, an
added stage): absolute counter values and thresholds, and stages taken off the settled count,
in the same commit as the state they belong to. ``settle`` counts a top-level stage toward the
workflow's completion (once per stage, whatever the path); the commit that settles the last one
releases ``completion`` (CompleteWorkflow), and ``request_completion`` asks for it early (a
halt that ends the workflow at once). Either way the workflow's CompleteWorkflow is released
once (the completion flag ``keys.COMPLETION_FIELD``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ulid import ULID

from stabilize_redis.decisions.codec import StageRecord, encode_stage, meta_to_dict, pack
from stabilize_redis.decisions.views import publication
from stabilize_redis.keys import (
    COMPLETION_FIELD,
    HALTED_COUNTER,
    META_FIELD,
    SETTLED_COUNTER,
    STATUS_FIELD,
    counter_field,
    dead_counter,
    downstreams_field,
    settled_flag_field,
    stage_field,
    threshold_field,
)
from stabilize_redis.models.status import CONTINUABLE_STATUSES, WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import CompleteWorkflow, Message, new_message_id


@dataclass
class CounterOp:
    """Add ``incr`` to counter field ``field``; ``release`` is enqueued when the new value equals
    the integer stored in ``threshold``."""

    field: str
    threshold: str
    incr: int
    release: Message | None


@dataclass
class Transition:
    """What one handler decided: writes guarded by the versions it read, counters, messages to
    enqueue (with delays in seconds) and audit events. An empty transition only acks."""

    workflow_id: str
    checks: dict[str, int] = field(default_factory=dict)
    counter_checks: dict[str, int] = field(default_factory=dict)
    writes: dict[str, bytes | StageRecord] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    resets: dict[str, int] = field(default_factory=dict)
    unsettled: list[str] = field(default_factory=list)
    counters: list[CounterOp] = field(default_factory=list)
    settles: dict[str, bool] = field(default_factory=dict)
    completion: CompleteWorkflow | None = None
    completion_requested: bool = False
    messages: list[tuple[Message, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    published: list[tuple[str, str, str | None]] = field(default_factory=list)
    """Output entries the stages written publish (``decisions.views.publication``), filled as
    they are encoded."""
    record_key: str | None = None
    """The hash the transition applies to when it is not a workflow's (a concurrency limit's,
    ``keys.PartitionKeys.limit``); such a record is never marked for a checkpoint."""

    def check(self, field_name: str, version: int) -> None:
        self.checks[field_name] = version

    def check_meta(self, version: int) -> None:
        """The decision depended on the workflow meta as read at ``version``."""
        self.checks[META_FIELD] = version

    def write_stage(self, rec: StageRecord) -> None:
        """Write a stage guarded by the version it was read at. The stage is encoded when the
        transition is committed, so changes made to it after this call are written too."""
        name = stage_field(rec.id)
        self.checks[name] = rec.version
        self.writes[name] = rec

    def encode_stages(self) -> None:
        """Encode the stage records written so far (the commit does; a handler may earlier, to
        fail on a value that cannot be stored), with the outputs each publishes: a stage that
        ended continuably (``decisions.views``)."""
        for name, value in self.writes.items():
            if isinstance(value, StageRecord):
                if value.stage.status in CONTINUABLE_STATUSES:
                    self.published += publication(value)
                self.writes[name] = encode_stage(value)

    def write_meta(self, wf: Workflow, extras: dict[str, Any], version: int) -> None:
        """Write the workflow meta guarded by the version it was read at; ``extras`` are the
        graph facts of the meta as read (see ``codec.meta_to_dict``)."""
        self.checks[META_FIELD] = version
        self.writes[META_FIELD] = pack(meta_to_dict(wf, extras))
        self.writes[STATUS_FIELD] = wf.status.name.encode()

    def expect_counter(self, name: str, value: int) -> None:
        """Commit only if counter ``name`` still holds ``value`` (it was part of the decision)."""
        self.counter_checks[counter_field(name)] = value

    def count(self, name: str, release: Message | None = None, incr: int = 1,
              threshold: int | None = None) -> None:
        """Add ``incr`` to counter ``name``; enqueue ``release`` when the new value equals the
        counter's stored threshold (never, when it has none). ``threshold``: store this
        threshold first, in the same commit (the graph changed: a stage added or removed)."""
        if release is not None and release.message_id is None:
            release.message_id = new_message_id()
        if threshold is not None:
            self.set_threshold(name, threshold)
        self.counters.append(CounterOp(counter_field(name), threshold_field(name), incr, release))

    def reset_counter(self, name: str, value: int, threshold: int | None = None) -> None:
        """Set counter ``name`` to ``value`` (and its stored threshold, when given) in this
        commit, before its counter operations: the recount of a reset region."""
        self.resets[counter_field(name)] = value
        if threshold is not None:
            self.set_threshold(name, threshold)

    def set_threshold(self, name: str, threshold: int) -> None:
        """Store ``threshold`` as counter ``name``'s threshold in this commit (before its
        counter operations)."""
        self.resets[threshold_field(name)] = threshold

    def complete_when_settled(self, completion: CompleteWorkflow) -> None:
        """Release ``completion`` if, after this commit's resets, unsettles and settles, every
        top-level stage is settled and the completion was not released before (a reset that
        lowered the number of top-level stages, a removed stage)."""
        if self.completion is None:
            self.completion = completion

    def unsettle(self, stage_id: str) -> None:
        """Take a top-level stage off the settled count (if it is on it): it will run again
        and settle again. The workflow's completion can then be released again."""
        if stage_id not in self.unsettled:
            self.unsettled.append(stage_id)

    def settle(self, stage_id: str, halted: bool, completion: CompleteWorkflow | None) -> None:
        """Count top-level stage ``stage_id`` as settled (once, whichever commit comes first).
        ``halted``: it halted (TERMINAL, STOPPED, CANCELED) - its downstreams that can no longer
        start settle with it. ``completion`` is released if this brings the settled count to its
        threshold; None when this decision completes the workflow itself."""
        self.settles[stage_id] = halted
        if completion is not None and self.completion is None:
            self.completion = completion

    def request_completion(self, completion: CompleteWorkflow) -> None:
        """Release ``completion`` in this commit unless the workflow's completion was already
        released (a halt that ends the workflow before every stage settled)."""
        self.completion_requested = True
        if self.completion is None:
            self.completion = completion

    def push(self, message: Message, delay_seconds: float = 0.0) -> None:
        if message.message_id is None:
            message.message_id = new_message_id()
        self.messages.append((message, delay_seconds))

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` (a user hook: ``Task.on_cleanup``) after this transition commits, and
        only then: a decision itself calls no user code, and a CONFLICT's re-decision builds a
        new transition, so the hook runs once per committed ending (at most once: a crash right
        after the commit skips it). Not part of the plan the script sees."""
        self.after_commit.append(action)

    def publish(self, channel: str, text: str) -> None:
        """PUBLISH ``text`` on ``channel`` if (and only if) the transition commits."""
        self.notices.append((channel, text))

    def event(self, event_type: str, entity_type: str, entity_id: str, data: dict[str, Any]) -> None:
        """Append an event to the workflow's stream if the transition commits. Events stay
        small: they name what changed (ids, status, a short reason); the records hold the
        state. The workflow id and the time are the stream's (the key, the entry id's
        milliseconds: the commit's server time) and are not stored in each entry; readers add
        them (``RedisBackend.events``, the archive)."""
        self.events.append(
            {
                "event_id": str(ULID()),
                "event_type": event_type,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "data": data,
            }
        )

    def to_script_args(self, message_id: str, entry_id: str, group: str, *, windowed: bool = False,
                       event_cap: int = 0, finished_ttl_ms: int = 0) -> list[Any]:
        """ARGV for ``lua/commit.lua``: the JSON plan followed by the blobs it references.
        ``windowed``: record the message in the partition's windowed dedup record (plan ``mw``);
        ``event_cap``: approximate cap of the event stream (``el``); ``finished_ttl_ms`` > 0: when
        this transition writes the workflow status, a complete one makes the workflow's keys
        expire after that long and any other one removes their expiry (``ft``)."""
        blobs: list[Any] = []

        def ref(blob: Any) -> int:
            blobs.append(blob)
            return len(blobs) + 1  # ARGV[1] is the plan

        self.encode_stages()
        published = [[f, r, ref(line) if line is not None else 0] for f, r, line in self.published]
        released: list[list[Any]] = []
        counters: list[list[Any]] = []
        for op in self.counters:
            index = 0
            if op.release is not None:
                released.append([op.release.message_id, ref(op.release.encode()), 0])
                index = len(released)
            counters.append([op.field, op.threshold, op.incr, index])
        plan: dict[str, Any] = {
            "m": message_id,
            "e": entry_id,
            "g": group,
            "wf": self.workflow_id,
            "c": [[f, v] for f, v in self.checks.items()],
            "cv": [[f, v] for f, v in self.counter_checks.items()],
            "w": [[f, ref(b)] for f, b in self.writes.items()],
            "x": list(self.deletes),
            "n": counters,
            "q": [[m.message_id, ref(m.encode()), int(d * 1000)] for m, d in self.messages],
            "r": released,
            "ev": [ref(json.dumps(e, separators=(",", ":"), default=str)) for e in self.events],
            "p": [[c, m] for c, m in self.notices],
        }
        if published:
            plan["o"] = published
        if self.record_key is not None:  # not a workflow's hash: no checkpoint, ids in the window
            plan["nd"] = 1
            windowed = True
        if windowed:
            plan["mw"] = 1
        if event_cap > 0 and self.events:
            plan["el"] = event_cap
        status = self.writes.get(STATUS_FIELD)
        if finished_ttl_ms > 0 and isinstance(status, bytes | str):
            name = status.decode() if isinstance(status, bytes) else status
            plan["ft"] = finished_ttl_ms if WorkflowStatus[name].is_complete else -1
        if self.resets:
            plan["z"] = [[f, v] for f, v in self.resets.items()]
        if self.settles or self.unsettled or self.completion_requested or self.resets or self.completion:
            plan["k"] = _SETTLE_FIELDS
            plan["s"] = [[sid, 1 if halted else 0] for sid, halted in self.settles.items()]
            plan["u"] = list(self.unsettled)
            plan["cw"] = 1 if self.completion_requested else 0
            plan["sr"] = 0
            if self.completion is not None:
                mid = self.completion.message_id or new_message_id()
                self.completion.message_id = mid
                released.append([mid, ref(completion_payload(self.completion)), 0])
                plan["sr"] = len(released)
        # cjson decodes an empty JSON array as an empty table either way; keep lists as lists.
        return [json.dumps(plan, separators=(",", ":")), *blobs]


_SETTLE_FIELDS = {
    "settled": counter_field(SETTLED_COUNTER),
    "settled_t": threshold_field(SETTLED_COUNTER),
    "halted": counter_field(HALTED_COUNTER),
    "flag": settled_flag_field(""),
    "dead": counter_field(dead_counter("")),
    "dead_t": threshold_field(dead_counter("")),
    "down": downstreams_field(""),
    "done": COMPLETION_FIELD,
}


@cache
def _completion_template(execution_type: str) -> tuple[tuple[str, Any], ...]:
    return tuple(CompleteWorkflow(execution_type=execution_type).to_dict().items())


def completion_payload(message: CompleteWorkflow) -> str:
    """``message.encode()`` for the common CompleteWorkflow (no retry count, attempts or error),
    without the dataclass walk: every finishing top-level stage carries one."""
    if (message.retry_count or message.attempts or message.last_error is not None
            or message.last_error_type is not None or message.max_attempts != 10):
        return message.encode()
    data = dict(_completion_template(message.execution_type))
    data["execution_id"] = message.execution_id
    data["message_id"] = message.message_id
    data["created_at"] = message.created_at
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
