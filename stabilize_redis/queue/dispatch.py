"""Turning one delivered stream entry into one handler call, and what happens when it fails.

* undecodable or invalid payload -> dead-letter stream with the reason; the worker goes on;
* delivered more than ``message_max_attempts`` times -> dead-letter stream;
* no handler for the type -> dead-letter stream (never silently dropped);
* handler raised -> rescheduled with backoff, dead-lettered when its attempts are used up.
"""

from __future__ import annotations

import logging
import time

from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.config import EngineConfig
from stabilize_redis.handlers.base import Handler
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


class Dispatcher:
    """Routes deliveries to the handler of their message type."""

    def __init__(self, backend: RedisBackend, handlers: dict[type, Handler], config: EngineConfig) -> None:
        self.backend = backend
        self.handlers = handlers
        self.config = config

    def dispatch(self, delivery: Delivery) -> str:
        """Handle one delivery; returns what happened ('ok', 'duplicate', 'dead', 'retry', ...)."""
        try:
            message = decode_message(delivery.payload)
        except MessageDecodeError as e:
            log.error("dead-lettering undecodable entry %s (partition %d): %s",
                      delivery.entry_id, delivery.partition, e)
            self.backend.dead_letter(delivery, "undecodable", str(e))
            return "dead"
        message.message_id = delivery.message_id or message.message_id
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
        started = time.perf_counter()
        try:
            outcome = handler.handle(message, delivery)
        except Exception as e:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
            return self._failed(delivery, message, e)
        log.debug("%s %s wf=%s -> %s in %.1f ms", type(message).__name__, message.message_id,
                  message.workflow_id, outcome, (time.perf_counter() - started) * 1000)
        return outcome

    def _failed(self, delivery: Delivery, message: Message, error: Exception) -> str:
        message.set_error_context(error)
        delay = min(self.config.handler_retry_delay_s * (2 ** message.attempts),
                    self.config.handler_retry_max_delay_s)
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
