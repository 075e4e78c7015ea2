"""RelayMessage: the relay - forward an outbox entry to its target partition, then ack it.

A commit that sends a message to a workflow of another partition writes it, wrapped in a
RelayMessage, into its own partition's ready stream (the outbox: same script, same slot,
``RedisBackend.commit``). Every worker reading that partition is its relay: the consumer
group hands each entry to one worker at a time, a crashed worker's entries are reclaimed by
another after the visibility timeout - the lease is the pending entry itself, and no loop
polls an outbox. Forwarding is one script on the target's slot (``lua/relay_deliver.lua``:
enqueued once per message id), acking is the entry's own commit on the source slot: a crash
between the two forwards again, and the target enqueues nothing the second time.

An entry whose ``message`` is not a valid message is dead-lettered (``bad_relay``) in the
source partition with the reason; nothing is forwarded.
"""

from __future__ import annotations

import logging

from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.queue.messages import Message, MessageDecodeError, RelayMessage, message_from_dict

log = logging.getLogger("stabilize_redis.handlers")

BAD_RELAY = "bad_relay"
"""Dead-letter reason of an outbox entry whose wrapped message cannot be decoded."""


class RelayHandler(Handler):
    message_type = RelayMessage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, RelayMessage)
        try:
            inner = message_from_dict(message.message)
            if not inner.message_id:
                raise MessageDecodeError("a relayed message needs its message_id")
        except MessageDecodeError as e:
            log.warning("outbox entry %s of %s dead-lettered: %s", message.message_id, message.execution_id, e)
            if delivery is None:
                raise
            if not self.backend.dead_letter(delivery, BAD_RELAY, f"RelayMessage: {e}", unless_processed=True):
                return CommitOutcome.DUPLICATE
            return "dead"
        if not self.backend.deliver_relayed(inner):
            log.info("relayed %s %s was delivered before", type(inner).__name__, inner.message_id)
        return self.backend.commit(Transition(message.execution_id), message, delivery)
