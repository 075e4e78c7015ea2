"""Turning one delivered stream entry into one handler call, and what happens when it fails.

Every outcome acks the entry in the stream it was read from (``Delivery.partition``):

* entry without its ``id``/``m`` field, or a payload that is not a valid message (any decode
  failure: see ``queue.messages``) -> dead-letter stream as ``undecodable`` with the reason;
* delivered more than ``message_max_attempts`` times -> dead-letter stream (``max_deliveries``);
* a diagnostic marker type -> ``diagnostic_marker``; no handler for the type -> ``no_handler``;
* a message whose workflow lives in another partition -> ``wrong_partition``, before any
  handler runs (stream ids collide across streams, so acking it through its workflow's
  partition would delete an unrelated entry there);
* a message naming a workflow, stage or task that does not exist -> ``unknown_target`` (by
  the handler, see ``handlers.base``);
* handler raised -> rescheduled with backoff, dead-lettered when its attempts are used up;
  except when Redis cannot serve (``outage.redis_unavailable``): that error is raised to the
  caller, uses no attempt, and the entry stays pending (the consumer tries it again).
"""

from __future__ import annotations

import logging
import time

from stabilize_redis.backend.redis_backend import Delivery, MisroutedDeliveryError, RedisBackend
from stabilize_redis.config import EngineConfig
from stabilize_redis.handlers.base import Handler
from stabilize_redis.keys import partition_of
from stabilize_redis.outage import redis_unavailable
from stabilize_redis.queue.messages import (
    InvalidStageId,
    InvalidTaskId,
    InvalidTaskType,
    InvalidWorkflowId,
    Message,
    MessageDecodeError,
    decode_message,
)

log = logging.getLogger("stabilize_redis.worker")

_MARKERS = (InvalidWorkflowId, InvalidStageId, InvalidTaskId, InvalidTaskType)
_MAX_BACKOFF_DOUBLINGS = 32


def decode_delivery(delivery: Delivery) -> Message:
    """The message of a delivered entry, its id taken from the entry; MessageDecodeError if
    the entry lacks its ``id`` or ``m`` field or the payload is not a valid message."""
    if not delivery.payload:
        raise MessageDecodeError("entry has no 'm' field (the encoded message), or it is empty")
    if not delivery.message_id:
        raise MessageDecodeError("entry has no 'id' field (the message id), or it is empty")
    message = decode_message(delivery.payload)
    message.message_id = delivery.message_id
    return message


class Dispatcher:
    """Routes deliveries to the handler of their message type."""

    def __init__(self, backend: RedisBackend, handlers: dict[type, Handler], config: EngineConfig) -> None:
        self.backend = backend
        self.handlers = handlers
        self.config = config

    def dispatch(self, delivery: Delivery) -> str:
        """Handle one delivery; returns what happened ('ok', 'duplicate', 'dead', 'retry', ...)."""
        try:
            message = decode_delivery(delivery)
        except MessageDecodeError as e:
            log.error("dead-lettering undecodable entry %s (partition %d): %s",
                      delivery.entry_id, delivery.partition, e)
            self.backend.dead_letter(delivery, "undecodable", str(e))
            return "dead"
        if delivery.delivered > self.config.message_max_attempts:
            log.error("dead-lettering %s %s: delivered %d times", type(message).__name__,
                      message.message_id, delivery.delivered)
            self.backend.dead_letter(delivery, "max_deliveries", message.last_error or "")
            return "dead"
        if isinstance(message, _MARKERS):
            log.warning("diagnostic marker %s for workflow %s", type(message).__name__, message.workflow_id)
            self.backend.dead_letter(delivery, "diagnostic_marker", type(message).__name__)
            return "dead"
        handler = self.handlers.get(type(message))
        if handler is None:
            self.backend.dead_letter(delivery, "no_handler", f"no handler for {type(message).__name__}")
            return "dead"
        home = partition_of(message.workflow_id, self.backend.keys.partitions)
        if home != delivery.partition:
            return self._misrouted(delivery, message, f"workflow {message.workflow_id} lives in partition "
                                                      f"{home}, not {delivery.partition}")
        started = time.perf_counter()
        try:
            outcome = handler.handle(message, delivery)
        except MisroutedDeliveryError as e:
            return self._misrouted(delivery, message, str(e))
        except Exception as e:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
            if redis_unavailable(e):
                raise  # not the message's fault: the consumer keeps the entry and tries it again
            return self._failed(delivery, message, e)
        log.debug("%s %s wf=%s -> %s in %.1f ms", type(message).__name__, message.message_id,
                  message.workflow_id, outcome, (time.perf_counter() - started) * 1000)
        return outcome

    def _misrouted(self, delivery: Delivery, message: Message, why: str) -> str:
        log.error("dead-lettering %s %s read from partition %d: %s", type(message).__name__,
                  message.message_id, delivery.partition, why)
        self.backend.dead_letter(delivery, "wrong_partition", f"{type(message).__name__}: {why}")
        return "dead"

    def _failed(self, delivery: Delivery, message: Message, error: Exception) -> str:
        message.set_error_context(error)
        doublings = min(message.attempts, _MAX_BACKOFF_DOUBLINGS)
        delay = min(self.config.handler_retry_delay_s * (2 ** doublings), self.config.handler_retry_max_delay_s)
        log.warning("%s %s for workflow %s failed (attempt %d): %s: %s", type(message).__name__,
                    message.message_id, message.workflow_id, message.attempts + 1,
                    type(error).__name__, error, exc_info=log.isEnabledFor(logging.DEBUG))
        dead = self.backend.reschedule(delivery, message, delay, f"{type(error).__name__}: {error}",
                                       self.config.message_max_attempts)
        if dead:
            log.error("dead-lettered %s %s after %d attempts", type(message).__name__,
                      message.message_id, message.attempts + 1)
            return "dead"
        return "retry"
