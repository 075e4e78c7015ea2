"""The write plan of one state transition, built by a handler's decision and applied by the
commit script in one atomic step. Plain data; no I/O."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

from stabilize_redis.backend.codec import StageRecord, encode_stage, meta_to_dict, pack
from stabilize_redis.keys import META_FIELD, STATUS_FIELD, counter_field, stage_field
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import Message, new_message_id


@dataclass
class CounterOp:
    field: str
    incr: int
    threshold: int
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
    counters: list[CounterOp] = field(default_factory=list)
    messages: list[tuple[Message, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)

    def check(self, field_name: str, version: int) -> None:
        self.checks[field_name] = version

    def write_stage(self, rec: StageRecord) -> None:
        """Write a stage guarded by the version it was read at. The stage is encoded when the
        transition is committed, so changes made to it after this call are written too."""
        name = stage_field(rec.id)
        self.checks[name] = rec.version
        self.writes[name] = rec

    def write_meta(self, wf: Workflow, extras: dict[str, Any], version: int) -> None:
        """Write the workflow meta guarded by the version it was read at; ``extras`` are the
        graph facts of the meta as read (see ``codec.meta_to_dict``)."""
        self.checks[META_FIELD] = version
        self.writes[META_FIELD] = pack(meta_to_dict(wf, extras))
        self.writes[STATUS_FIELD] = wf.status.name.encode()

    def expect_counter(self, name: str, value: int) -> None:
        """Commit only if counter ``name`` still holds ``value`` (it was part of the decision)."""
        self.counter_checks[counter_field(name)] = value

    def count(self, name: str, threshold: int, release: Message | None, incr: int = 1) -> None:
        """Add ``incr`` to counter ``name``; enqueue ``release`` when it reaches ``threshold``."""
        if release is not None and release.message_id is None:
            release.message_id = new_message_id()
        self.counters.append(CounterOp(counter_field(name), incr, threshold, release))

    def push(self, message: Message, delay_seconds: float = 0.0) -> None:
        if message.message_id is None:
            message.message_id = new_message_id()
        self.messages.append((message, delay_seconds))

    def publish(self, channel: str, text: str) -> None:
        """PUBLISH ``text`` on ``channel`` if (and only if) the transition commits."""
        self.notices.append((channel, text))

    def event(self, event_type: str, entity_type: str, entity_id: str, data: dict[str, Any]) -> None:
        self.events.append(
            {
                "event_id": str(ULID()),
                "event_type": event_type,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "workflow_id": self.workflow_id,
                "timestamp": int(time.time() * 1000),
                "data": data,
            }
        )

    def to_script_args(self, message_id: str, entry_id: str, group: str) -> list[Any]:
        """ARGV for ``lua/commit.lua``: the JSON plan followed by the blobs it references."""
        blobs: list[Any] = []

        def ref(blob: Any) -> int:
            blobs.append(blob)
            return len(blobs) + 1  # ARGV[1] is the plan

        released: list[list[Any]] = []
        counters: list[list[Any]] = []
        for op in self.counters:
            index = 0
            if op.release is not None:
                released.append([op.release.message_id, ref(op.release.encode()), 0])
                index = len(released)
            counters.append([op.field, op.incr, op.threshold, index])
        plan = {
            "m": message_id,
            "e": entry_id,
            "g": group,
            "wf": self.workflow_id,
            "c": [[f, v] for f, v in self.checks.items()],
            "cv": [[f, v] for f, v in self.counter_checks.items()],
            "w": [[f, ref(encode_stage(b) if isinstance(b, StageRecord) else b)] for f, b in self.writes.items()],
            "x": list(self.deletes),
            "n": counters,
            "q": [[m.message_id, ref(m.encode()), int(d * 1000)] for m, d in self.messages],
            "r": released,
            "ev": [ref(json.dumps(e, separators=(",", ":"), default=str)) for e in self.events],
            "p": [[c, m] for c, m in self.notices],
        }
        # cjson decodes an empty JSON array as an empty table either way; keep lists as lists.
        return [json.dumps(plan, separators=(",", ":")), *blobs]
