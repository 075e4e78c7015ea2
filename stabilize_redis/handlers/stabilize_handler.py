"""``StabilizeHandler``: stabilize's base class for handlers users write themselves.

A subclass names its ``message_type`` and implements ``handle(message)``, reading and writing
through ``self.repository`` (a RedisWorkflowStore) and ``self.queue`` - for atomic steps
``repository.transaction(queue)``. ``QueueProcessor.register_handler`` runs it like a built-in
handler: a message whose id is already processed is only acked; otherwise ``handle`` is called
and, when it returns, the message is marked processed and its entry acked in one commit (a
handler that marked it in its own transaction makes that commit a no-op ack). An exception is
retried with backoff and dead-lettered after its attempts, as for every handler.

The engine's own handlers are ``handlers.base.Handler`` (read -> decide -> commit).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from stabilize_redis.errors import ConcurrencyError
from stabilize_redis.queue.messages import Message
from stabilize_redis.resilience.config import HandlerConfig, get_handler_config

T = TypeVar("T")


class StabilizeHandler(ABC):
    """stabilize's handler base: ``StabilizeHandler(queue, repository, retry_delay=None,
    handler_config=None, event_recorder=None)``."""

    def __init__(self, queue: Any, repository: Any, retry_delay: timedelta | float | None = None,
                 handler_config: HandlerConfig | None = None, event_recorder: Any = None) -> None:
        self.queue = queue
        self.repository = repository
        self.handler_config = handler_config or get_handler_config()
        if retry_delay is None:
            retry_delay = timedelta(seconds=self.handler_config.handler_retry_delay_seconds)
        self.retry_delay = retry_delay if isinstance(retry_delay, timedelta) else timedelta(seconds=retry_delay)
        self.event_recorder = event_recorder

    @property
    @abstractmethod
    def message_type(self) -> type[Message]:
        """The message class this handler handles."""

    @abstractmethod
    def handle(self, message: Any) -> None:
        """Handle one message."""

    def retry_on_concurrency_error(self, func: Callable[[], T], description: str = "operation") -> T:
        """``func()``, called again after a backoff each time it raises ConcurrencyError, at most
        ``handler_config.concurrency_max_retries`` more times (0: no retry); the last error
        propagates."""
        backoff = self.handler_config.get_backoff_config()
        retries = max(0, self.handler_config.concurrency_max_retries)
        for attempt in range(retries + 1):
            try:
                return func()
            except ConcurrencyError:
                if attempt >= retries:
                    raise
                time.sleep(backoff.delay_s(attempt))
        raise AssertionError(f"unreachable: {description}")


__all__ = ["StabilizeHandler"]
