"""Handlers over a record that is not a workflow's - a concurrency limit, a global mutex: one
versioned field of its own hash, in the partition of its routing id, changed only by messages.

``RecordHandler.over_record`` reads the field, lets ``decide`` change it and name the answers
(messages to workflows, through the outbox when they live elsewhere), and commits the new value
with them atomically with the message's ack and dedup mark, guarded by the version read - the
read-decide-commit loop of every handler (``Handler.transact``: a CONFLICT decides again). Such a record is never checkpointed, and the ids of the messages that
change it go to the partition's windowed dedup record (``Transition.record_key``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.queue.messages import Message

Decide = Callable[[bytes | None], tuple[str, Sequence[Message]]]
"""The record's stored value (None: never written) -> its new value and the answers to send."""


class RecordHandler(Handler):
    """Read-decide-commit over one record (module docstring)."""

    def over_record(self, message: Message, delivery: Delivery | None, routing_id: str, key: str, name: str,
                    decide: Decide) -> str:
        def transition(stored: tuple[bytes | None, int]) -> Transition:
            raw, version = stored
            value, answers = decide(raw)
            t = Transition(routing_id, record_key=key)
            t.check(name, version)
            if raw is None or value.encode() != raw:
                t.writes[name] = value.encode()
            for answer in answers:
                t.push(answer)
            return t

        return self.transact(message, delivery, lambda: self.backend.read_record(key, name), transition)


__all__ = ["Decide", "RecordHandler"]
