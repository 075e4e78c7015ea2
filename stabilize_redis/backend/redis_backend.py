"""The Redis backend: the one place that talks to Redis for workflow state and the queue.

Handlers reach it through ``read``/``commit``; the processor through ``fetch``, ``promote``,
``reschedule``, ``dead_letter``, ``heartbeat`` and ``reclaim``; the store, queue and client through
``submit``, ``load_workflow``, ``push`` and the inspection helpers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stabilize_redis.backend.codec import StageRecord, decode_stage, unpack
from stabilize_redis.backend.connection import Target, connect_redis
from stabilize_redis.backend.scripts import Scripts
from stabilize_redis.backend.transition import Transition
from stabilize_redis.keys import (
    CONSUMER_GROUP,
    DEFAULT_PARTITIONS,
    META_FIELD,
    STAGE_IDS_FIELD,
    NamespaceKeys,
    PartitionKeys,
    counter_field,
    stage_field,
    version_field,
)
from stabilize_redis.queue.messages import Message, new_message_id

log = logging.getLogger("stabilize_redis.backend")

DEDUP_RETENTION_MS = 24 * 3600 * 1000


class CommitOutcome:
    OK = "ok"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Delivery:
    """One delivered stream entry: where it came from and its raw payload."""

    partition: int
    entry_id: str
    message_id: str
    payload: bytes
    delivered: int = 1  # times delivered, when known


@dataclass
class Snapshot:
    """What a handler read: the workflow meta and some stages, each with its version."""

    workflow_id: str
    meta: dict[str, Any] | None
    meta_version: int
    stages: dict[str, StageRecord]
    counters: dict[str, int]
    processed: bool = False

    @property
    def exists(self) -> bool:
        return self.meta is not None


def _int(value: bytes | None) -> int:
    return int(value) if value is not None else 0


class RedisBackend:
    """State and queue operations of one namespace on one Redis (or the embedded default)."""

    def __init__(self, target: Target, partitions: int | None = None) -> None:
        self.target = target
        # redis-py types replies as unions over every decode mode; this client always returns
        # bytes (decode_responses=False), so replies are handled as such.
        self.client: Any = connect_redis(target)
        self.scripts = Scripts(self.client)
        self.keys = NamespaceKeys(target.namespace, self._ensure_namespace(partitions))
        self._ensure_groups()

    # -- namespace ---------------------------------------------------------------------------

    def _ensure_namespace(self, partitions: int | None) -> int:
        meta = NamespaceKeys(self.target.namespace, 0).meta
        wanted = partitions or DEFAULT_PARTITIONS
        self.client.hsetnx(meta, "partitions", wanted)
        self.client.hsetnx(meta, "created_at", int(time.time() * 1000))
        stored = int(self.client.hget(meta, "partitions") or wanted)
        if partitions is not None and stored != partitions:
            log.warning("namespace %s has %d partitions (fixed at creation); ignoring %d",
                        self.target.namespace, stored, partitions)
        return stored

    def _ensure_groups(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for part in self.keys.all_partitions():
            pipe.xgroup_create(part.ready, CONSUMER_GROUP, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    def part(self, workflow_id: str) -> PartitionKeys:
        return self.keys.for_workflow(workflow_id)

    # -- state -------------------------------------------------------------------------------

    def read(
        self,
        workflow_id: str,
        stage_ids: Sequence[str] = (),
        *,
        counters: Sequence[str] = (),
        with_upstreams: bool = False,
        with_downstreams: bool = False,
        processed_id: str | None = None,
    ) -> Snapshot:
        """One round trip: the meta, the given stages and counters - an HMGET, or, when
        neighbours (``with_upstreams``/``with_downstreams``) or the dedup record
        (``processed_id`` -> ``Snapshot.processed``) are wanted too, ``lua/read_workflow.lua``."""
        part = self.part(workflow_id)
        if with_upstreams or with_downstreams or processed_id:
            return self._read_scripted(workflow_id, part, stage_ids, counters, with_upstreams,
                                       with_downstreams, processed_id or "")
        fields: list[str] = [META_FIELD, version_field(META_FIELD)]
        for sid in stage_ids:
            fields += [stage_field(sid), version_field(stage_field(sid))]
        fields += [counter_field(c) for c in counters]
        values = self.client.hmget(part.workflow(workflow_id), fields)
        meta = unpack(values[0]) if values[0] is not None else None
        stages: dict[str, StageRecord] = {}
        for i, sid in enumerate(stage_ids):
            blob = values[2 + 2 * i]
            if blob is not None:
                stages[sid] = decode_stage(blob, _int(values[3 + 2 * i]))
        base = 2 + 2 * len(stage_ids)
        counts = {c: _int(values[base + i]) for i, c in enumerate(counters)}
        return Snapshot(workflow_id, meta, _int(values[1]), stages, counts)

    def _read_scripted(self, workflow_id: str, part: PartitionKeys, stage_ids: Sequence[str],
                       counters: Sequence[str], ups: bool, downs: bool, processed_id: str) -> Snapshot:
        mode = "both" if ups and downs else "up" if ups else "down" if downs else ""
        reply = self.scripts.read_workflow(
            keys=[part.workflow(workflow_id), part.done],
            args=[processed_id, mode, " ".join(stage_ids), *[counter_field(c) for c in counters]])
        meta = unpack(reply[1]) if reply[1] else None
        n_other = int(reply[3])
        counts = {c: _int(reply[4 + i] or None) for i, c in enumerate(counters)}
        stages: dict[str, StageRecord] = {}
        rest = reply[4 + n_other:]
        for i in range(0, len(rest), 3):
            if rest[i + 1]:
                sid = rest[i].decode()
                stages[sid] = decode_stage(rest[i + 1], _int(rest[i + 2] or None))
        return Snapshot(workflow_id, meta, _int(reply[2] or None), stages, counts, bool(reply[0]))

    def commit(self, transition: Transition, message: Message | None, delivery: Delivery | None) -> str:
        """Apply a transition atomically with the dedup record and ack of ``delivery``."""
        part = self.part(transition.workflow_id)
        args = transition.to_script_args(
            message.message_id or "" if message is not None else "",
            delivery.entry_id if delivery is not None else "",
            CONSUMER_GROUP,
        )
        keys = [
            part.workflow(transition.workflow_id), part.ready, part.delayed, part.delayed_payloads,
            part.done, part.dirty, part.events(transition.workflow_id),
        ]
        result = self.scripts.commit(keys=keys, args=args)
        code = int(result[0])
        if code == 1:
            return CommitOutcome.OK
        if code == 0:
            return CommitOutcome.DUPLICATE
        return CommitOutcome.CONFLICT

    def submit(self, workflow_id: str, fields: dict[str, bytes], start: Message | None,
               mode: str, event: str = "") -> int:
        """Store a workflow's hash (and enqueue ``start``); see ``lua/submit.lua`` for modes
        and codes."""
        return self.submit_many(workflow_id, fields, [start] if start else [], mode, [event] if event else [])

    def submit_many(self, workflow_id: str, fields: dict[str, bytes], messages: Sequence[Message],
                    mode: str, events: Sequence[str]) -> int:
        """``submit`` with several start messages and events (``lua/submit.lua``)."""
        part = self.part(workflow_id)
        keys = [part.workflow(workflow_id), part.ready, part.delayed, part.delayed_payloads,
                part.workflows, part.dirty, part.events(workflow_id)]
        for m in messages:
            m.message_id = m.message_id or new_message_id()
        args: list[Any] = [workflow_id, mode, json.dumps([[m.message_id, m.encode()] for m in messages]),
                           json.dumps(list(events))]
        for name, value in fields.items():
            args += [name, value]
        return int(self.scripts.submit(keys=keys, args=args)[0])

    def load_hash(self, workflow_id: str) -> dict[bytes, bytes]:
        """Every field of a workflow's hash (not for the hot path)."""
        return self.client.hgetall(self.part(workflow_id).workflow(workflow_id))

    def stage_ids(self, workflow_id: str) -> list[str]:
        raw = self.client.hget(self.part(workflow_id).workflow(workflow_id), STAGE_IDS_FIELD)
        return list(unpack(raw)) if raw else []

    def events(self, workflow_id: str) -> list[dict[str, Any]]:
        """The workflow's event log, oldest first."""
        entries = self.client.xrange(self.part(workflow_id).events(workflow_id))
        return [json.loads(fields[b"e"]) for _, fields in entries]

    def workflow_ids(self) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for part in self.keys.all_partitions():
            pipe.zrange(part.workflows, 0, -1)
        return [wid.decode() for ids in pipe.execute() for wid in ids]

    # -- queue -------------------------------------------------------------------------------

    def push(self, message: Message, delay_seconds: float = 0.0) -> None:
        """Enqueue a message outside any transition (clients, operators, Orchestrator)."""
        if message.message_id is None:
            message.message_id = new_message_id()
        part = self.part(message.workflow_id)
        payload = message.encode()
        if delay_seconds <= 0:
            self.client.xadd(part.ready, {"id": message.message_id, "m": payload})
            return
        due = int((time.time() + delay_seconds) * 1000)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(part.delayed_payloads, message.message_id, payload)
        pipe.zadd(part.delayed, {message.message_id: due})
        pipe.execute()

    def fetch(self, consumer: str, count: int, block_ms: int | None,
              partitions: Iterable[int] | None = None) -> list[Delivery]:
        """New entries for ``consumer`` from the partitions' ready streams (XREADGROUP)."""
        parts = [self.keys.partition(i) for i in partitions] if partitions is not None \
            else self.keys.all_partitions()
        streams = {p.ready: ">" for p in parts}
        reply = self.client.xreadgroup(CONSUMER_GROUP, consumer, streams, count=count, block=block_ms)
        index = {p.ready.encode(): p.index for p in parts}
        out: list[Delivery] = []
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(Delivery(index[stream], entry_id.decode(), (fields.get(b"id") or b"").decode(),
                                    fields.get(b"m") or b""))
        return out

    def promote(self, limit: int = 500) -> float | None:
        """Move due delayed messages of every partition to ready; the earliest remaining due
        time (epoch seconds), or None when nothing is delayed."""
        pipe = self.client.pipeline(transaction=False)
        for part in self.keys.all_partitions():
            self.scripts.promote_delayed(
                keys=[part.delayed, part.delayed_payloads, part.ready, part.done],
                args=[limit, DEDUP_RETENTION_MS], client=pipe)
        dues = [int(r[1]) for r in pipe.execute() if int(r[1]) >= 0]
        return min(dues) / 1000.0 if dues else None

    def reschedule(self, delivery: Delivery, message: Message, delay_seconds: float, error: str,
                   max_attempts: int = 10) -> bool:
        """Hand a failed message back after a delay; True if it was dead-lettered instead."""
        part = self.keys.partition(delivery.partition)
        nxt = message.copy_with_attempts(message.attempts + 1)
        nxt.message_id = message.message_id
        nxt.last_error, nxt.last_error_type = message.last_error, message.last_error_type
        code = self.scripts.reschedule(
            keys=[part.ready, part.delayed, part.delayed_payloads, part.dead],
            args=[delivery.entry_id, CONSUMER_GROUP, message.message_id or "", nxt.encode(),
                  int(delay_seconds * 1000), nxt.attempts, max_attempts, error])
        return int(code) == 2

    def dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        part = self.keys.partition(delivery.partition)
        self.scripts.dead_letter(
            keys=[part.ready, part.dead],
            args=[delivery.entry_id, CONSUMER_GROUP, delivery.message_id, delivery.payload, reason,
                  delivery.delivered, error])

    def heartbeat(self, consumer: str, deliveries: Iterable[Delivery]) -> None:
        """Reset the idle time of in-flight entries so no other worker reclaims them."""
        by_part: dict[int, list[str]] = {}
        for d in deliveries:
            by_part.setdefault(d.partition, []).append(d.entry_id)
        if not by_part:
            return
        pipe = self.client.pipeline(transaction=False)
        for index, ids in by_part.items():
            pipe.xclaim(self.keys.partition(index).ready, CONSUMER_GROUP, consumer, 0, ids, justid=True)
        pipe.execute()

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 100) -> list[Delivery]:
        """Take over entries idle past the visibility timeout (their worker died)."""
        out: list[Delivery] = []
        for part in self.keys.all_partitions():
            reply = self.client.xautoclaim(part.ready, CONSUMER_GROUP, consumer, min_idle_ms,
                                           "0-0", count=count)
            entries = reply[1]
            if not entries:
                continue
            ids = [e[0] for e in entries if e[1] is not None]
            counts: dict[bytes, int] = {}
            if ids:
                for p in self.client.xpending_range(part.ready, CONSUMER_GROUP, min=ids[0], max=ids[-1],
                                                    count=len(ids) + 10):
                    counts[p["message_id"]] = int(p["times_delivered"])
            for entry_id, fields in entries:
                if fields is None:
                    continue
                out.append(Delivery(part.index, entry_id.decode(), (fields.get(b"id") or b"").decode(),
                                    fields.get(b"m") or b"", counts.get(entry_id, 2)))
        return out

    # -- inspection ----------------------------------------------------------------------------

    def queue_counts(self) -> dict[str, int]:
        """Totals over partitions: ready (incl. in flight), delayed, in_flight, dead."""
        pipe = self.client.pipeline(transaction=False)
        parts = self.keys.all_partitions()
        for part in parts:
            pipe.xlen(part.ready)
            pipe.zcard(part.delayed)
            pipe.xpending(part.ready, CONSUMER_GROUP)
            pipe.xlen(part.dead)
        res = pipe.execute()
        totals = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
        for i in range(len(parts)):
            xlen, zc, pending, dead = res[4 * i: 4 * i + 4]
            totals["ready"] += int(xlen)
            totals["delayed"] += int(zc)
            totals["in_flight"] += int(pending["pending"] if isinstance(pending, dict) else pending[0])
            totals["dead"] += int(dead)
        return totals

    def size(self) -> int:
        """Messages not yet processed: ready (in flight included) plus delayed."""
        pipe = self.client.pipeline(transaction=False)
        for part in self.keys.all_partitions():
            pipe.xlen(part.ready)
            pipe.zcard(part.delayed)
        return sum(int(v) for v in pipe.execute())

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters, oldest first per partition. ``id`` ('PARTITION/ENTRY') is what
        ``replay_dead`` takes; ``message_id``, ``type``, ``payload``, ``reason``, ``attempts``,
        ``error`` and ``at`` (ms) describe the message and why it died."""
        out: list[dict[str, Any]] = []
        for part in self.keys.all_partitions():
            for entry_id, fields in self.client.xrange(part.dead, count=limit):
                f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
                try:
                    kind = json.loads(f.get("m", "")).get("type")
                except (ValueError, AttributeError):
                    kind = None
                out.append({
                    "id": f"{part.index}/{entry_id.decode()}", "partition": part.index,
                    "message_id": f.get("id", ""), "type": kind, "payload": f.get("m", ""),
                    "reason": f.get("reason", ""), "attempts": int(f.get("attempts") or 0),
                    "error": f.get("error", ""), "at": int(f.get("at") or 0),
                })
        return out[:limit]

    def replay_dead(self, partition: int, dead_id: str) -> bool:
        """Move one dead letter back to its partition's ready stream with attempts reset."""
        part = self.keys.partition(partition)
        found = self.client.xrange(part.dead, dead_id, dead_id)
        if not found:
            return False
        fields = found[0][1]
        payload = fields.get(b"m") or b""
        try:
            data = json.loads(payload)
            data["attempts"] = 0
            payload = json.dumps(data, separators=(",", ":")).encode()
        except ValueError:
            pass
        return int(self.scripts.replay_dead(keys=[part.dead, part.ready],
                                            args=[dead_id, payload, fields.get(b"id") or b""])) == 1

    def purge_dead(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for part in self.keys.all_partitions():
            pipe.xlen(part.dead)
            pipe.delete(part.dead)
        res = pipe.execute()
        return sum(int(res[i]) for i in range(0, len(res), 2))
