"""``RedisQueue``: stabilize's Queue API over a namespace's partitioned streams.

Messages are pushed to the ready stream of their workflow's partition (or its delayed set).
Besides ``push`` for clients, the queue offers what stabilize's tests and operators use to
take messages by hand:

* ``poll_one`` hands out one due message (promoting due delayed ones first), round robin over
  the partitions, and keeps its delivery (the partition and stream entry it came from) so that
  ``ack``, ``reschedule`` and ``extend_lock`` act on that entry in *that* stream, and so that
  ``store.transaction(queue)`` can ack it in its commit. The entry stays pending (locked) for
  other consumers; one left unacknowledged for ``lock_duration`` is handed out again by a later
  ``poll_one`` of any queue (its poller died). An entry that cannot be decoded goes to the
  dead-letter stream (``undecodable``) and is skipped.
* ``ensure`` enqueues a message only if no equal one is queued. Equal means the same type and
  the same fields apart from the queue's metadata (id, attempts, timestamps, last error). The
  check reads the ready stream (in-flight entries included) and the delayed messages of the
  message's own partition, decoding only entries whose payload names its workflow: O(messages
  queued in that partition), one partition of the backlog, never the other partitions. It is
  not atomic with the push: two concurrent ``ensure`` calls may both push, which every
  handler's status guard makes harmless.
* ``clear`` deletes this namespace's queue keys only (ready streams, delayed sets, outboxes;
  dead letters are kept, see ``clear_dlq``) and recreates the consumer groups.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.config import EngineConfig
from stabilize_redis.keys import CONSUMER_GROUP, ENTRY_ID_BYTES, ENTRY_PAYLOAD_BYTES, PartitionKeys
from stabilize_redis.persistence.transaction import seconds
from stabilize_redis.queue.consumer import consumer_name
from stabilize_redis.queue.messages import Message, MessageDecodeError, decode_message

log = logging.getLogger("stabilize_redis.queue")

_PAGE = 500


def _identity(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in Message.METADATA}


@dataclass
class _Handouts:
    consumer: str
    inflight: dict[str, Delivery] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RedisQueue:
    """Messages of one namespace. ``url=None`` is the embedded in-process default; the same URL
    and namespace as a ``RedisWorkflowStore`` means the same keyspace. ``lock_duration``: how
    long a message handed out by ``poll_one`` stays invisible before it may be handed out again
    (stabilize's default, 60 s); ``max_attempts``: how many times ``reschedule`` hands a message
    back before dead-lettering it (default ``EngineConfig.message_max_attempts``)."""

    lock_duration: float = 60.0
    _next_partition = 0
    _max_attempts: int | None = None

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 partitions: int | None = None, lock_duration: timedelta | float = timedelta(seconds=60),
                 max_attempts: int | None = None) -> None:
        self.backend: RedisBackend = backend_for(url, namespace, partitions)
        self.lock_duration = seconds(lock_duration)
        self._max_attempts = max_attempts

    @property
    def max_attempts(self) -> int:
        if self._max_attempts is None:
            self._max_attempts = EngineConfig.from_env().message_max_attempts
        return self._max_attempts

    @property
    def _handouts(self) -> _Handouts:
        """This queue's consumer name and the deliveries it handed out (made on first use, so a
        queue built around an existing backend without ``__init__`` works too)."""
        handouts: _Handouts | None = self.__dict__.get("_handouts_state")
        if handouts is None:
            handouts = self.__dict__.setdefault("_handouts_state", _Handouts(consumer_name()))
        return handouts

    # -- pushing -----------------------------------------------------------------------------

    def push(self, message: Message, delay: timedelta | float | None = None, connection: Any = None) -> None:
        """Enqueue ``message`` (after ``delay``); ValueError naming the field for a message no
        worker could take."""
        self.backend.push(message, seconds(delay))

    def ensure(self, message: Message, delay: timedelta | float | None = None) -> bool:
        """Enqueue ``message`` unless an equal message is queued (module doc); True if pushed."""
        if self._queued(self.backend.part(message.workflow_id), _identity(message.to_dict())):
            return False
        self.push(message, delay)
        return True

    def _payloads(self, part: PartitionKeys) -> Iterator[bytes]:
        client = self.backend.client
        start = "-"
        while True:
            entries = client.xrange(part.ready, start, "+", count=_PAGE)
            for _, fields in entries:
                yield fields.get(ENTRY_PAYLOAD_BYTES) or b""
            if len(entries) < _PAGE:
                break
            start = "(" + entries[-1][0].decode()
        for _, payload in client.hscan_iter(part.delayed_payloads, count=_PAGE):
            yield payload

    def _containing(self, part: PartitionKeys, needle: bytes) -> Iterator[dict[str, Any]]:
        """The queued payloads of ``part`` that contain ``needle``, decoded (others are not
        decoded; undecodable ones are skipped)."""
        for payload in self._payloads(part):
            if needle not in payload:
                continue
            try:
                data = json.loads(payload)
            except (ValueError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(data, dict):
                yield data

    def _queued(self, part: PartitionKeys, identity: dict[str, Any]) -> bool:
        needle = json.dumps(identity.get("execution_id", "")).encode()
        return any(_identity(data) == identity for data in self._containing(part, needle))

    # -- taking messages by hand -------------------------------------------------------------

    def poll_one(self) -> Message | None:
        """One due message, or None; its delivery is kept for ``ack``/``reschedule``."""
        self.backend.promote()
        partitions = self.backend.keys.partitions
        for step in range(partitions):
            index = (self._next_partition + step) % partitions
            while deliveries := self.backend.fetch(self._handouts.consumer, 1, None, partitions=[index]):
                message = self._take(deliveries[0])
                if message is not None:
                    self._next_partition = (index + 1) % partitions
                    return message
        return self._reclaim_one()

    def _reclaim_one(self) -> Message | None:
        """An entry left unacknowledged for ``lock_duration`` (its poller died), or None."""
        client = self.backend.client
        idle_ms = max(1, int(self.lock_duration * 1000))
        for part in self.backend.keys.all_partitions():
            reply = client.xautoclaim(part.ready, CONSUMER_GROUP, self._handouts.consumer, idle_ms, "0-0", count=1)
            for entry_id, fields in reply[1]:
                if fields is None:
                    continue
                delivery = Delivery(part.index, entry_id.decode(), (fields.get(ENTRY_ID_BYTES) or b"").decode(),
                                    fields.get(ENTRY_PAYLOAD_BYTES) or b"", 2)
                message = self._take(delivery)
                if message is not None:
                    return message
        return None

    def _take(self, delivery: Delivery) -> Message | None:
        try:
            if not delivery.message_id or not delivery.payload:
                raise MessageDecodeError("entry lacks its 'id' or 'm' field")
            message = decode_message(delivery.payload)
        except MessageDecodeError as e:
            log.error("dead-lettering undecodable entry %s (partition %d): %s",
                      delivery.entry_id, delivery.partition, e)
            self.backend.dead_letter(delivery, "undecodable", str(e))
            return None
        message.message_id = delivery.message_id
        handouts = self._handouts
        with handouts.lock:
            handouts.inflight[delivery.message_id] = delivery
        return message

    def poll(self, callback: Callable[[Message], Any]) -> bool:
        """``poll_one``, then ``callback(message)``, then ``ack``; False when nothing was due.
        An exception from the callback propagates and the message stays locked (it is handed
        out again after ``lock_duration``)."""
        message = self.poll_one()
        if message is None:
            return False
        callback(message)
        self.ack(message)
        return True

    def delivery_of(self, message_id: str) -> Delivery | None:
        """The delivery of a message this queue handed out and has not acked yet."""
        handouts = self._handouts
        with handouts.lock:
            return handouts.inflight.get(message_id)

    def forget_delivery(self, message_id: str) -> None:
        """Drop the delivery of a message acked elsewhere (by a store transaction's commit)."""
        handouts = self._handouts
        with handouts.lock:
            handouts.inflight.pop(message_id, None)

    def _delivery(self, message: Message) -> Delivery | None:
        handouts = self._handouts
        with handouts.lock:
            return handouts.inflight.pop(message.message_id or "", None)

    def ack(self, message: Message) -> None:
        """Remove a message this queue handed out from the stream it was read from (XACK +
        XDEL there). A message not handed out by this queue (or acked already) is ignored."""
        delivery = self._delivery(message)
        if delivery is None:
            return
        ready = self.backend.keys.partition(delivery.partition).ready
        pipe = self.backend.client.pipeline(transaction=True)
        pipe.xack(ready, CONSUMER_GROUP, delivery.entry_id)
        pipe.xdel(ready, delivery.entry_id)
        pipe.execute()

    def reschedule(self, message: Message, delay: timedelta | float | None = None) -> None:
        """Hand a message this queue handed out back, due after ``delay``, atomically with the
        ack of its entry; its attempts go up by one and a message that has used the queue's
        ``max_attempts`` goes to the dead-letter stream (``max_attempts``) instead. ValueError
        for a message this queue did not hand out."""
        delivery = self._delivery(message)
        if delivery is None:
            raise ValueError(f"message {message.message_id} was not handed out by this queue (poll_one)")
        self.backend.reschedule(delivery, message, seconds(delay), message.last_error or "", self.max_attempts)

    def extend_lock(self, message: Message, duration: timedelta | float | None = None) -> bool:
        """Keep a handed-out message locked for another ``lock_duration`` (a heartbeat); False
        when this queue did not hand it out."""
        delivery = self.delivery_of(message.message_id or "")
        if delivery is None:
            return False
        self.backend.heartbeat(self._handouts.consumer, [delivery])
        return True

    # -- inspection and maintenance ------------------------------------------------------------

    def size(self) -> int:
        """Messages not yet processed: ready, in flight and delayed."""
        return self.backend.size()

    def counts(self) -> dict[str, int]:
        return self.backend.queue_counts()

    def has_pending_message_for_task(self, task_id: str) -> bool:
        """Whether a queued message (ready, in flight or delayed) names ``task_id``. Reads every
        partition's queue (O(queued messages)); for recovery tools, not the hot path."""
        needle = json.dumps(task_id).encode()
        return any(data.get("task_id") == task_id
                   for part in self.backend.keys.all_partitions() for data in self._containing(part, needle))

    def clear(self) -> int:
        """Delete every queued message of this namespace (ready, in flight, delayed, awaiting
        relay); dead letters stay. Returns how many were queued."""
        before = self.size()
        pipe = pipeline(self.backend.client)
        for part in self.backend.keys.all_partitions():
            pipe.delete(part.ready, part.delayed, part.delayed_payloads, part.outbox)
        pipe.execute()
        self.backend.ensure_groups()
        handouts = self._handouts
        with handouts.lock:
            handouts.inflight.clear()
        return before

    def list_dlq(self, limit: int = 100, message_type: str | None = None) -> list[dict[str, Any]]:
        """Dead letters (see ``RedisBackend.dead_letters`` for the row fields)."""
        rows = self.backend.dead_letters(limit if message_type is None else 100_000)
        if message_type is not None:
            rows = [r for r in rows if r["type"] == message_type][:limit]
        return rows

    def dlq_size(self) -> int:
        return self.backend.queue_counts()["dead"]

    def replay_dlq(self, dlq_id: str | int, partition: int | None = None) -> bool:
        """Move a dead letter back to its ready stream with its attempts reset; ``dlq_id`` is the
        ``id`` of a ``list_dlq`` row ('PARTITION/ENTRY'). False when there is no such dead
        letter (an id of another form included: stabilize's integer row ids name none here)."""
        entry = str(dlq_id)
        if partition is None:
            part, sep, entry = entry.partition("/")
            if not sep or not part.isdigit():
                return False
            partition = int(part)
        if not 0 <= partition < self.backend.keys.partitions or _STREAM_ID.fullmatch(entry) is None:
            return False
        return self.backend.replay_dead(partition, entry)

    def clear_dlq(self) -> int:
        return self.backend.purge_dead()

    def close(self) -> None:
        """Nothing to release: connections are pooled per process."""


_STREAM_ID = re.compile(r"\d+-\d+")
"""A stream entry id, as the second part of a ``list_dlq`` row id."""

__all__ = ["RedisQueue"]
