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

import redis

from stabilize_redis.backend.batch import is_cluster, pipeline
from stabilize_redis.backend.connection import Target, connect_redis
from stabilize_redis.backend.scripts import Scripts
from stabilize_redis.backend.view_reads import ancestors_named
from stabilize_redis.config import MemoryPolicy
from stabilize_redis.decisions.codec import StageRecord, decode_stage, ensure_plain, unpack
from stabilize_redis.decisions.snapshot import Region, Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import (
    CONSUMER_GROUP,
    CREATED_AT_FIELD,
    CURRENT_LAYOUT,
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_REASON_FIELD,
    DEFAULT_PARTITIONS,
    ENTRY_ID_BYTES,
    ENTRY_ID_FIELD,
    ENTRY_PAYLOAD_BYTES,
    ENTRY_PAYLOAD_FIELD,
    KEY_LAYOUTS,
    LAYOUT_FIELD,
    META_FIELD,
    PARTITIONS_FIELD,
    STAGE_IDS_FIELD,
    KeyLayoutError,
    NamespaceKeys,
    PartitionKeys,
    check_layout,
    counter_field,
    dead_counter,
    join_counter,
    layout_of,
    stage_field,
    threshold_field,
    version_field,
)
from stabilize_redis.models.stage import SplitType
from stabilize_redis.queue.messages import Message, RelayMessage, decode_message, new_message_id, payload_type
from stabilize_redis.support import check_message

log = logging.getLogger("stabilize_redis.backend")


class CommitOutcome:
    OK = "ok"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class MisroutedDeliveryError(RuntimeError):
    """A delivery was to be acked through a workflow that does not live in the partition the
    entry was read from; stream ids collide across streams, so the ack could delete an
    unrelated entry of the workflow's own partition. Nothing was written or acked."""


@dataclass(frozen=True)
class Delivery:
    """One delivered stream entry: where it came from and its raw payload.

    ``partition`` is the partition whose ready stream the entry was read from; every ack of the
    entry names that stream (entry ids are unique per stream only). ``message_id`` and
    ``payload`` are the entry's ``id`` and ``m`` fields, empty when the entry lacks them."""

    partition: int
    entry_id: str
    message_id: str
    payload: bytes
    delivered: int = 1  # times delivered, when known


def _int(value: bytes | None) -> int:
    return int(value) if value is not None else 0


class RedisBackend:
    """State and queue operations of one namespace on one Redis (or the embedded default)."""

    def __init__(self, target: Target, partitions: int | None = None, memory: MemoryPolicy | None = None,
                 key_layout: int | None = None) -> None:
        """Connect and make sure the namespace exists (marker, consumer groups). Redis errors
        propagate (a worker starting before Redis is up retries: ``workers/process.py``); on an
        existing namespace nothing is written. ``memory`` (default: ``MemoryPolicy.from_env()``)
        bounds the dedup window, event streams and finished workflows' lifetime; it may be
        replaced on the instance (a process with a snapshot store sets the durable policy).
        Keys follow the namespace's recorded layout (``keys.LAYOUT_FIELD``; a new namespace gets
        ``key_layout`` or ``CURRENT_LAYOUT``); KeyLayoutError when ``key_layout`` is given and the
        namespace has another one."""
        self.target = target
        self.memory = memory if memory is not None else MemoryPolicy.from_env()
        # redis-py types replies as unions over every decode mode; this client always returns
        # bytes (decode_responses=False), so replies are handled as such.
        self.client: Any = connect_redis(target)
        self.cluster = is_cluster(self.client)
        self.scripts = Scripts(self.client)
        count, layout = self._ensure_namespace(partitions, key_layout)
        self.keys = NamespaceKeys(target.namespace, count, layout)
        self.ensure_groups()

    # -- namespace ---------------------------------------------------------------------------

    def _ensure_namespace(self, partitions: int | None, key_layout: int | None) -> tuple[int, int]:
        """The namespace's partition count and key layout, creating its meta hash (the marker)
        when missing. Reads first and writes only what is missing, so that building a backend
        on an existing namespace needs no write (it works while Redis refuses writes at
        ``maxmemory``). The layout is written only with the partition count, by the commit
        that creates the namespace: a namespace whose partitions exist without a layout is
        layout 1 and stays so."""
        namespace = self.target.namespace
        meta = NamespaceKeys(namespace, 0).meta
        wanted = partitions or DEFAULT_PARTITIONS
        if key_layout is not None and key_layout not in KEY_LAYOUTS:
            raise KeyLayoutError(f"key_layout {key_layout} is not one of {KEY_LAYOUTS}")
        raw, created, layout = self.client.hmget(meta, [PARTITIONS_FIELD, CREATED_AT_FIELD, LAYOUT_FIELD])
        if raw is None or created is None:
            pipe = pipeline(self.client, transaction=True)
            if raw is None:
                pipe.hsetnx(meta, LAYOUT_FIELD, key_layout or CURRENT_LAYOUT)
            pipe.hsetnx(meta, PARTITIONS_FIELD, wanted)
            pipe.hsetnx(meta, CREATED_AT_FIELD, int(time.time() * 1000))
            pipe.hmget(meta, [PARTITIONS_FIELD, LAYOUT_FIELD])
            raw, layout = pipe.execute()[-1]
        stored = int(raw or wanted)
        if partitions is not None and stored != partitions:
            log.warning("namespace %s has %d partitions (fixed at creation); ignoring %d",
                        namespace, stored, partitions)
        return stored, check_layout(namespace, layout_of(namespace, layout), key_layout)

    def ensure_groups(self) -> None:
        """Create the consumer group (and stream) of every partition that lacks one. Looks
        first (XPENDING answers NOGROUP for a missing stream or group) and creates only what
        is missing: no write on an existing namespace (``maxmemory``), and the consumer calls
        it again when a read finds a group gone (Redis came back empty)."""
        parts = self.keys.all_partitions()
        pipe = pipeline(self.client)
        for part in parts:
            pipe.xpending(part.ready, CONSUMER_GROUP)
        missing = [part for part, result in zip(parts, pipe.execute(raise_on_error=False), strict=True)
                   if isinstance(result, Exception)]
        if not missing:
            return
        pipe = pipeline(self.client)
        for part in missing:
            pipe.xgroup_create(part.ready, CONSUMER_GROUP, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    _ensure_groups = ensure_groups  # the name callers used before it was public

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
        (``processed_id`` -> ``Snapshot.processed``) are wanted too, ``lua/read_workflow.lua``.
        With downstreams, an OR split with conditions among ``stage_ids`` is read with the
        ancestors' outputs its conditions name and it lacks (``Snapshot.ancestors``: one more
        round trip per such name, for it only)."""
        part = self.part(workflow_id)
        if with_upstreams or with_downstreams or processed_id:
            return self._read_scripted(workflow_id, part, stage_ids, counters, with_upstreams,
                                       with_downstreams, processed_id or "")
        fields: list[str] = [META_FIELD, version_field(META_FIELD)]
        for sid in stage_ids:
            fields += [stage_field(sid), version_field(stage_field(sid))]
        fields += [counter_field(c) for c in counters]
        fields += [threshold_field(c) for c in counters]
        values = self.client.hmget(part.workflow(workflow_id), fields)
        meta = unpack(values[0]) if values[0] is not None else None
        stages: dict[str, StageRecord] = {}
        for i, sid in enumerate(stage_ids):
            blob = values[2 + 2 * i]
            if blob is not None:
                stages[sid] = decode_stage(blob, _int(values[3 + 2 * i]))
        base = 2 + 2 * len(stage_ids)
        counts = {c: _int(values[base + i]) for i, c in enumerate(counters)}
        base += len(counters)
        limits = {c: int(values[base + i]) for i, c in enumerate(counters) if values[base + i] is not None}
        return Snapshot(workflow_id, meta, _int(values[1]), stages, counts, thresholds=limits)

    def _read_scripted(self, workflow_id: str, part: PartitionKeys, stage_ids: Sequence[str],
                       counters: Sequence[str], ups: bool, downs: bool, processed_id: str) -> Snapshot:
        mode = "both" if ups and downs else "up" if ups else "down" if downs else ""
        # Join counters (with thresholds) only for reads with downstreams: the fused path of
        # ``decisions.flow.release_after_completion`` is their one reader.
        joins = f"{counter_field(join_counter(''))} {threshold_field(join_counter(''))}" if downs else ""
        reply = self.scripts.read_workflow(
            keys=[part.workflow(workflow_id), part.done, part.processed(workflow_id)],
            args=[processed_id, mode, " ".join(stage_ids), joins, *[counter_field(c) for c in counters],
                  *[threshold_field(c) for c in counters]])
        meta = unpack(reply[1]) if reply[1] else None
        n_other = int(reply[3])
        n = len(counters)
        counts = {c: _int(reply[4 + i] or None) for i, c in enumerate(counters)}
        limits = {c: int(reply[4 + n + i]) for i, c in enumerate(counters) if reply[4 + n + i]}
        stages: dict[str, StageRecord] = {}
        rest = reply[4 + n_other:]
        step = 5 if joins else 3
        for i in range(0, len(rest), step):
            sid = rest[i].decode()
            if rest[i + 1]:
                stages[sid] = decode_stage(rest[i + 1], _int(rest[i + 2] or None))
            if joins:
                name = join_counter(sid)
                counts[name] = _int(rest[i + 3] or None)
                if rest[i + 4]:
                    limits[name] = int(rest[i + 4])
        snap = Snapshot(workflow_id, meta, _int(reply[2] or None), stages, counts, bool(reply[0]), limits)
        if downs:
            splits = [stages[s] for s in stage_ids if s in stages]
            self._read_split_downstreams(workflow_id, part, splits, stages)
            for rec in splits:  # what an OR split's conditions name from its ancestors (decisions.flow)
                if rec.stage.split_type == SplitType.OR and rec.stage.split_conditions:
                    snap.ancestors[rec.id] = ancestors_named(self, workflow_id, rec, rec.stage.split_conditions.values(),
                                                             {**rec.stage.context, **rec.stage.outputs})
        return snap

    def _read_split_downstreams(self, workflow_id: str, part: PartitionKeys, recs: Sequence[StageRecord],
                                stages: dict[str, StageRecord]) -> None:
        """Add to ``stages`` the downstream records ``read_workflow.lua`` left out (joins of
        several upstreams) that an OR split among ``recs`` names by ref id in its conditions:
        one HMGET, only for such a split."""
        wanted = [d for rec in recs if rec.stage.split_type == SplitType.OR and rec.stage.split_conditions
                  for d in rec.down if d not in stages]
        if not wanted:
            return
        fields: list[str] = []
        for sid in wanted:
            fields += [stage_field(sid), version_field(stage_field(sid))]
        values = self.client.hmget(part.workflow(workflow_id), fields)
        for i, sid in enumerate(wanted):
            if values[2 * i] is not None:
                stages[sid] = decode_stage(values[2 * i], _int(values[2 * i + 1]))

    def read_record(self, key: str, name: str) -> tuple[bytes | None, int]:
        """Versioned field ``name`` of hash ``key`` (a record that is not a workflow's, such as a
        concurrency limit) and its version; ``(None, 0)`` when missing. One HMGET."""
        raw, version = self.client.hmget(key, [name, version_field(name)])
        return raw, int(version or 0)

    def read_fields(self, workflow_id: str, names: Sequence[str]) -> dict[str, tuple[bytes | None, int]]:
        """One HMGET: each versioned hash field of ``names`` with its version (``(None, 0)`` when
        missing). For decisions over a field outside the Snapshot (a stage's signal buffer):
        the commit checks the version read (``t.check``), so a separate read stays exact."""
        fields: list[str] = []
        for name in names:
            fields += [name, version_field(name)]
        values = self.client.hmget(self.part(workflow_id).workflow(workflow_id), fields) if fields else []
        return {name: (values[2 * i], _int(values[2 * i + 1])) for i, name in enumerate(names)}

    def read_region(self, workflow_id: str, source_id: str, target: str, *, by_ref: bool,
                    counters: Sequence[str] = ()) -> Region:
        """One round trip (``lua/read_region.lua``): the region a reset of ``target`` (a ref id
        when ``by_ref``: a jump from ``source_id``; else a stage id: a restart) changes, with
        its border and counters, plus the named ``counters`` (and thresholds)."""
        part = self.part(workflow_id)
        reply = self.scripts.read_region(
            keys=[part.workflow(workflow_id)],
            args=[source_id, target, "jump" if by_ref else "restart",
                  *[counter_field(c) for c in counters], *[threshold_field(c) for c in counters]])
        meta = unpack(reply[0]) if reply[0] else None
        region = Region(workflow_id, meta, _int(reply[1] or None), {}, {})
        region.target_id = reply[2].decode() if reply[2] else None
        region.backward = int(reply[3]) == 1
        region.scope = reply[4].decode().split()
        region.skips = reply[5].decode().split()
        counted = int(reply[6])
        n = len(counters)
        region.counters.update({c: _int(reply[8 + i] or None) for i, c in enumerate(counters)})
        region.thresholds.update({c: int(reply[8 + n + i]) for i, c in enumerate(counters) if reply[8 + n + i]})
        rest = reply[8 + int(reply[7]):]
        for i in range(0, len(rest), 8):
            sid = rest[i].decode()
            if i // 8 < counted:
                region.counted.append(sid)
            blob, version, jc, jt, dc, dt, flag = rest[i + 1:i + 8]
            if not blob:
                continue
            region.stages[sid] = decode_stage(blob, _int(version or None))
            for name, value, limit in ((join_counter(sid), jc, jt), (dead_counter(sid), dc, dt)):
                region.counters[name] = _int(value or None)
                if limit:
                    region.thresholds[name] = int(limit)
            if flag:
                region.flags[sid] = flag.decode()
        return region

    def commit(self, transition: Transition, message: Message | None, delivery: Delivery | None, *,
               windowed: bool = False) -> str:
        """Apply a transition atomically with the dedup record and ack of ``delivery``. The
        message id is recorded with the workflow (``PartitionKeys.processed``), or in the
        partition's windowed record when no workflow hash exists, ``windowed`` is set (a mark
        of the store API) or there is no delivery (a handler called directly): both are found by
        ``is_message_processed`` without a workflow id.

        Raises MisroutedDeliveryError (writing and acking nothing) when ``delivery`` was read
        from a partition other than the workflow's: the ack must name the stream it came from."""
        part = self.part(transition.workflow_id)
        if delivery is not None and delivery.partition != part.index:
            raise MisroutedDeliveryError(
                f"entry {delivery.entry_id} was read from partition {delivery.partition}, but workflow "
                f"{transition.workflow_id!r} lives in partition {part.index}; refusing to commit it")
        transition.messages = [(self._outbound(m, transition.workflow_id, part.index), d)
                               for m, d in transition.messages]
        args = transition.to_script_args(
            message.message_id or "" if message is not None else "",
            delivery.entry_id if delivery is not None else "",
            CONSUMER_GROUP,
            # a message handled outside the queue (a handler called directly, stabilize's way) is
            # found by ``is_message_processed`` without its workflow id, as stabilize's API finds it
            windowed=windowed or delivery is None,
            event_cap=self.memory.event_stream_maxlen,
            finished_ttl_ms=int(self.memory.finished_ttl_s * 1000),
        )
        wid = transition.workflow_id
        keys = [
            transition.record_key or part.workflow(wid), part.ready, part.delayed, part.delayed_payloads,
            part.done, part.dirty, part.events(wid), part.processed(wid), part.expiring,
        ]
        result = self.scripts.commit(keys=keys, args=args)
        code = int(result[0])
        if code == 1:
            return CommitOutcome.OK
        if code == 0:
            return CommitOutcome.DUPLICATE
        return CommitOutcome.CONFLICT

    def _outbound(self, message: Message, source_id: str, source_partition: int) -> Message:
        """``message`` as the commit of ``source_id`` enqueues it: as it is for a workflow of the
        same partition, else wrapped in a RelayMessage - the outbox entry, in the source's own
        partition, that the relay forwards (``handlers.relay``)."""
        target = message.workflow_id
        if not target or target == source_id or self.part(target).index == source_partition:
            return message
        return RelayMessage(execution_id=source_id, execution_type=getattr(message, "execution_type", "PIPELINE"),
                            message=message.to_dict(), message_id=new_message_id())

    def deliver_relayed(self, message: Message) -> bool:
        """Enqueue ``message`` (relayed from another partition's outbox) in its workflow's
        partition unless a message with its id was relayed there already or processed there;
        True when it was enqueued (``lua/relay_deliver.lua``)."""
        assert message.message_id, "a relayed message keeps the id it was given by its commit"
        part = self.part(message.workflow_id)
        return int(self.scripts.relay_deliver(
            keys=[part.ready, part.delayed, part.delayed_payloads, part.done, part.inbox,
                  part.processed(message.workflow_id)],
            args=[message.message_id, message.encode(), int(self.memory.dedup_window_s * 1000)])) == 1

    def submit(self, workflow_id: str, fields: dict[str, bytes], start: Message | None,
               mode: str, event: str = "") -> int:
        """Store a workflow's hash (and enqueue ``start``); see ``lua/submit.lua`` for modes
        and codes."""
        return self.submit_many(workflow_id, fields, [start] if start else [], mode, [event] if event else [])

    def submit_many(self, workflow_id: str, fields: dict[str, bytes], messages: Sequence[Message],
                    mode: str, events: Sequence[str]) -> int:
        """``submit`` with several start messages and events (``lua/submit.lua``)."""
        keys, args = self._submit_call(workflow_id, fields, messages, mode, events)
        return int(self.scripts.submit(keys=keys, args=args)[0])

    def submit_replicated(self, workflow_id: str, fields: dict[str, bytes], messages: Sequence[Message],
                          mode: str, events: Sequence[str], replicas: int, timeout_ms: int) -> tuple[int, int]:
        """``submit_many``, then ``WAIT replicas timeout_ms`` on the same connection (WAIT
        covers the writes of the connection that issues it). Returns (submit code, number of
        replicas that acknowledged every write of this connection so far). On a cluster both go
        to the master of the workflow's slot, on one of its connections (WAIT counts that
        master's replicas)."""
        keys, args = self._submit_call(workflow_id, fields, messages, mode, events)
        client = self.client.get_node_from_key(keys[0]).redis_connection if self.cluster else self.client
        pipe = client.pipeline(transaction=False)
        self.scripts.submit(keys=keys, args=args, client=pipe)
        pipe.wait(replicas, timeout_ms)
        code, acked = pipe.execute()
        return int(code[0]), int(acked)

    def _submit_call(self, workflow_id: str, fields: dict[str, bytes], messages: Sequence[Message],
                     mode: str, events: Sequence[str]) -> tuple[list[str], list[Any]]:
        part = self.part(workflow_id)
        keys = [part.workflow(workflow_id), part.ready, part.delayed, part.delayed_payloads,
                part.workflows, part.dirty, part.events(workflow_id)]
        for m in messages:
            m.message_id = m.message_id or new_message_id()
        args: list[Any] = [workflow_id, mode, json.dumps([[m.message_id, m.encode()] for m in messages]),
                           json.dumps(list(events))]
        for name, value in fields.items():
            args += [name, value]
        return keys, args

    def load_hash(self, workflow_id: str) -> dict[bytes, bytes]:
        """Every field of a workflow's hash (not for the hot path)."""
        return self.client.hgetall(self.part(workflow_id).workflow(workflow_id))

    def stage_ids(self, workflow_id: str) -> list[str]:
        raw = self.client.hget(self.part(workflow_id).workflow(workflow_id), STAGE_IDS_FIELD)
        return list(unpack(raw)) if raw else []

    def events(self, workflow_id: str) -> list[dict[str, Any]]:
        """The workflow's event log as Redis holds it, oldest first (with a checkpointer, the
        archived entries before the newest one are in PostgreSQL only: ``RedisWorkflowStore.events``
        reads both). Each event gets its ``workflow_id`` and ``timestamp`` (the entry id's
        milliseconds) when the entry does not store them."""
        entries = self.client.xrange(self.part(workflow_id).events(workflow_id))
        out: list[dict[str, Any]] = []
        for entry_id, fields in entries:
            event = json.loads(fields[b"e"])
            event.setdefault("workflow_id", workflow_id)
            event.setdefault("timestamp", int(entry_id.split(b"-")[0]))
            out.append(event)
        return out

    def workflow_ids(self) -> list[str]:
        pipe = pipeline(self.client)
        for part in self.keys.all_partitions():
            pipe.zrange(part.workflows, 0, -1)
        return [wid.decode() for ids in pipe.execute() for wid in ids]

    # -- queue -------------------------------------------------------------------------------

    def push(self, message: Message, delay_seconds: float = 0.0) -> None:
        """Enqueue a message outside any transition (clients, operators, Orchestrator).

        A message no worker could take is refused here, with a ValueError naming the field,
        instead of being dead-lettered later: values the stores refuse (``ensure_plain``), or
        a payload ``decode_message`` would reject (too large, too deep, a field of the wrong
        type), or a type or field value the engine does not execute (``support.check_message``;
        a type is accepted once a handler for it is registered in this process)."""
        if message.message_id is None:
            message.message_id = new_message_id()
        ensure_plain(message.to_dict(), type(message).__name__)
        part = self.part(message.workflow_id)
        payload = message.encode()
        decode_message(payload)
        check_message(message)
        if delay_seconds <= 0:
            self.client.xadd(part.ready, {ENTRY_ID_FIELD: message.message_id, ENTRY_PAYLOAD_FIELD: payload})
            return
        due = int((time.time() + delay_seconds) * 1000)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(part.delayed_payloads, message.message_id, payload)
        pipe.zadd(part.delayed, {message.message_id: due})
        pipe.execute()

    def fetch(self, consumer: str, count: int, block_ms: int | None,
              partitions: Iterable[int] | None = None) -> list[Delivery]:
        """New entries for ``consumer`` from the partitions' ready streams (XREADGROUP).

        On a cluster one XREADGROUP may not span slots, and every partition has its own slot:
        a read of several partitions there is one XREADGROUP per partition in turn, so it may
        not block (ValueError); a blocking read names one partition (``queue.consumer`` runs
        one reader per partition on a cluster)."""
        parts = [self.keys.partition(i) for i in partitions] if partitions is not None \
            else self.keys.all_partitions()
        if self.cluster and len(parts) > 1:
            if block_ms is not None:
                raise ValueError("a blocking read on a Redis Cluster names one partition")
            return [d for p in parts for d in self.fetch(consumer, count, None, [p.index])]
        streams = {p.ready: ">" for p in parts}
        reply = self.client.xreadgroup(CONSUMER_GROUP, consumer, streams, count=count, block=block_ms)
        index = {p.ready.encode(): p.index for p in parts}
        out: list[Delivery] = []
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(Delivery(index[stream], entry_id.decode(), (fields.get(ENTRY_ID_BYTES) or b"").decode(),
                                    fields.get(ENTRY_PAYLOAD_BYTES) or b""))
        return out

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Give delivered entries back to their streams at once (``lua/hand_back.lua``): the
        surplus of a read that returned more entries than the reader can run now. One round
        trip; an entry no longer there is skipped."""
        if not deliveries:
            return
        pipe = pipeline(self.client)
        for d in deliveries:
            self.scripts.hand_back(keys=[self.keys.partition(d.partition).ready], args=[CONSUMER_GROUP, d.entry_id],
                                   client=pipe)
        pipe.execute()

    def promote(self, limit: int = 500, partitions: Iterable[int] | None = None,
                failures: dict[int, Exception] | None = None) -> float | None:
        """Move due delayed messages of the partitions (default: all) to ready; the earliest
        remaining due time (epoch seconds) of those that answered, or None when none has a
        delayed message. One round trip; each partition's script runs on its own, so one that
        fails (Redis at ``maxmemory`` refuses the XADD, a damaged key) does not stop the others.
        Its error is stored in ``failures`` by partition index when given, else the first one is
        raised once every partition was tried. A connection error raises in any case (on a
        cluster it is the failure of the partitions of the node it concerns only)."""
        parts = [self.keys.partition(i) for i in partitions] if partitions is not None \
            else self.keys.all_partitions()
        if not parts:
            return None
        pipe = pipeline(self.client)
        for part in parts:
            self.scripts.promote_delayed(
                keys=[part.delayed, part.delayed_payloads, part.ready, part.done, part.expiring,
                      part.workflows, part.dirty],
                args=[limit, int(self.memory.dedup_window_s * 1000)], client=pipe)
        dues: list[int] = []
        errors: dict[int, Exception] = {}
        for part, result in zip(parts, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(result, Exception):
                errors[part.index] = result
            elif int(result[1]) >= 0:
                dues.append(int(result[1]))
        if failures is not None:
            failures.update(errors)
        elif errors:
            raise next(iter(errors.values()))
        return min(dues) / 1000.0 if dues else None

    def reschedule(self, delivery: Delivery, message: Message, delay_seconds: float, error: str,
                   max_attempts: int = 10) -> bool:
        """Hand a failed message back after a delay, acking the entry in the stream it was read
        from; True if it was dead-lettered instead."""
        part = self.keys.partition(delivery.partition)
        nxt = message.copy_with_attempts(message.attempts + 1)
        nxt.message_id = message.message_id
        nxt.last_error, nxt.last_error_type = message.last_error, message.last_error_type
        code = self.scripts.reschedule(
            keys=[part.ready, part.delayed, part.delayed_payloads, part.dead],
            args=[delivery.entry_id, CONSUMER_GROUP, message.message_id or "", nxt.encode(),
                  int(delay_seconds * 1000), nxt.attempts, max_attempts, error])
        return int(code) == 2

    def dead_letter(self, delivery: Delivery, reason: str, error: str, *,
                    unless_processed: bool = False, workflow_id: str = "") -> bool:
        """Move ``delivery`` to the dead-letter stream of the partition it was read from,
        atomically with its ack there (``lua/dead_letter.lua``). With ``unless_processed``, a
        message whose id is in that partition's windowed dedup record, or in the record of
        ``workflow_id`` (when it lives in that partition), is only acked (a redelivered
        duplicate). True when dead-lettered."""
        part = self.keys.partition(delivery.partition)
        code = self.scripts.dead_letter(
            keys=[part.ready, part.dead, part.done, part.processed(workflow_id)],
            args=[delivery.entry_id, CONSUMER_GROUP, delivery.message_id, delivery.payload, reason,
                  delivery.delivered, error, "1" if unless_processed else "0"])
        return int(code) == 1

    def heartbeat(self, consumer: str, deliveries: Iterable[Delivery]) -> None:
        """Reset the idle time of in-flight entries so no other worker reclaims them (XCLAIM,
        which Redis allows at ``maxmemory``). Raises the first error after trying every partition."""
        by_part: dict[int, list[str]] = {}
        for d in deliveries:
            by_part.setdefault(d.partition, []).append(d.entry_id)
        if not by_part:
            return
        pipe = pipeline(self.client)
        for index, ids in by_part.items():
            pipe.xclaim(self.keys.partition(index).ready, CONSUMER_GROUP, consumer, 0, ids, justid=True)
        # Every partition is tried before an error is raised: one failing keeps no other
        # partition's entries from being heartbeated.
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception):
                raise result

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 100) -> list[Delivery]:
        """Take over entries idle past the visibility timeout (their worker died).

        Partitions are independent: one whose commands fail (a missing group, a damaged key)
        is skipped and the others are still reclaimed; after a connection error the rest are
        left for the next pass (on a cluster, where it concerns one node, the rest are tried).
        Claimed entries are always returned (they are pending under ``consumer`` now); the
        first error is raised only when nothing was claimed. At most ``count`` entries in all
        (the caller's free handler slots)."""
        out: list[Delivery] = []
        first_error: redis.RedisError | None = None
        for part in self.keys.all_partitions():
            if len(out) >= count:
                break
            try:
                out += self._reclaim_partition(part, consumer, min_idle_ms, count - len(out))
            except redis.RedisError as e:
                first_error = first_error or e
                if not isinstance(e, redis.ResponseError) and not self.cluster:
                    break  # one Redis is gone for every partition; on a cluster only one node is
        if first_error is not None and not out:
            raise first_error
        return out

    def _reclaim_partition(self, part: PartitionKeys, consumer: str, min_idle_ms: int,
                           count: int) -> list[Delivery]:
        reply = self.client.xautoclaim(part.ready, CONSUMER_GROUP, consumer, min_idle_ms, "0-0", count=count)
        entries = reply[1]
        if not entries:
            return []
        ids = [e[0] for e in entries if e[1] is not None]
        counts: dict[bytes, int] = {}
        if ids:
            for p in self.client.xpending_range(part.ready, CONSUMER_GROUP, min=ids[0], max=ids[-1],
                                                count=len(ids) + 10):
                counts[p["message_id"]] = int(p["times_delivered"])
        return [Delivery(part.index, entry_id.decode(), (fields.get(ENTRY_ID_BYTES) or b"").decode(),
                         fields.get(ENTRY_PAYLOAD_BYTES) or b"", counts.get(entry_id, 2))
                for entry_id, fields in entries if fields is not None]

    # -- inspection ----------------------------------------------------------------------------

    def queue_counts(self) -> dict[str, int]:
        """Totals over partitions: ready (incl. in flight), delayed, in_flight, dead."""
        pipe = pipeline(self.client)
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
        pipe = pipeline(self.client)
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
                kind = payload_type(fields.get(ENTRY_PAYLOAD_BYTES) or b"")
                out.append({
                    "id": f"{part.index}/{entry_id.decode()}", "partition": part.index,
                    "message_id": f.get(ENTRY_ID_FIELD, ""), "type": kind, "payload": f.get(ENTRY_PAYLOAD_FIELD, ""),
                    "reason": f.get(DEAD_REASON_FIELD, ""), "attempts": int(f.get(DEAD_ATTEMPTS_FIELD) or 0),
                    "error": f.get(DEAD_ERROR_FIELD, ""), "at": int(f.get(DEAD_AT_FIELD) or 0),
                })
        return out[:limit]

    def replay_dead(self, partition: int, dead_id: str) -> bool:
        """Move one dead letter back to the ready stream of its workflow's partition with
        attempts reset. A letter that sat in the wrong partition goes to the right one in two
        steps (enqueue there, then drop the letter): a crash between them leaves the letter
        for a second replay, and the message id dedups the copy that runs second."""
        part = self.keys.partition(partition)
        found = self.client.xrange(part.dead, dead_id, dead_id)
        if not found:
            return False
        fields = found[0][1]
        payload = fields.get(ENTRY_PAYLOAD_BYTES) or b""
        message_id = fields.get(ENTRY_ID_BYTES) or b""
        home = partition
        try:
            data = json.loads(payload)
            data["attempts"] = 0
            payload = json.dumps(data, separators=(",", ":")).encode()
            if isinstance(data.get("execution_id"), str) and data["execution_id"]:
                home = self.part(data["execution_id"]).index
        except (ValueError, TypeError, RecursionError, AttributeError):  # undecodable: replayed as it is
            pass
        if home != partition:
            self.client.xadd(self.keys.partition(home).ready, {ENTRY_ID_FIELD: message_id, ENTRY_PAYLOAD_FIELD: payload})
            return int(self.client.xdel(part.dead, dead_id)) == 1
        return int(self.scripts.replay_dead(keys=[part.dead, part.ready],
                                            args=[dead_id, payload, message_id])) == 1

    def purge_dead(self) -> int:
        pipe = pipeline(self.client)
        for part in self.keys.all_partitions():
            pipe.xlen(part.dead)
            pipe.delete(part.dead)
        res = pipe.execute()
        return sum(int(res[i]) for i in range(0, len(res), 2))
