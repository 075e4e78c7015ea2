"""``QueueProcessor``: stabilize's processor API — run messages synchronously in the calling
thread (``process_one``/``process_all``) or in the background (``start``/``stop``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from stabilize_redis.config import EngineConfig
from stabilize_redis.handlers import HandlerContext, default_handlers
from stabilize_redis.handlers.base import Handler
from stabilize_redis.queue.cancel_listener import CancelListener
from stabilize_redis.queue.consumer import Consumer, consumer_name
from stabilize_redis.queue.dispatch import Dispatcher
from stabilize_redis.queue.redis_queue import RedisQueue
from stabilize_redis.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize_redis.processor")


class QueueProcessor:
    """Dispatches a namespace's messages to the built-in handlers.

    ``concurrency`` is the number of handler threads in background mode; ``visibility_timeout``
    how long an entry may sit unacknowledged without a heartbeat before another worker takes it;
    ``recover_on_start`` continues stalled RUNNING workflows when ``start()`` is called.
    """

    def __init__(
        self,
        queue: RedisQueue,
        config: Any = None,
        store: Any = None,
        handler_config: Any = None,
        task_registry: TaskRegistry | None = None,
        *,
        engine_config: EngineConfig | None = None,
        concurrency: int = 4,
        visibility_timeout: float = 30.0,
        recover_on_start: bool = False,
    ) -> None:
        self.queue = queue
        self.backend = queue.backend
        self.task_registry = task_registry or TaskRegistry()
        self.engine_config = engine_config or EngineConfig.from_env()
        self.context = HandlerContext(self.backend, self.task_registry, self.engine_config)
        self._handlers: dict[type, Handler] = default_handlers(self.context)
        self.dispatcher = Dispatcher(self.backend, self._handlers, self.engine_config)
        self.concurrency = concurrency
        self.visibility_timeout = visibility_timeout
        self._consumer: Consumer | None = None
        self._cancel_listener = CancelListener(self.backend, self.context.tokens)
        self._name = consumer_name()
        self._in_process_all = False
        self._next_partition = 0
        self.recover_on_start = recover_on_start

    # -- handlers ----------------------------------------------------------------------------

    def register_handler(self, handler: Handler) -> None:
        if handler.message_type in self._handlers:
            raise ValueError(f"a handler for {handler.message_type.__name__} is already registered")
        self._handlers[handler.message_type] = handler

    def replace_handler(self, handler: Handler) -> None:
        self._handlers[handler.message_type] = handler

    # -- synchronous mode --------------------------------------------------------------------

    def process_one(self) -> bool:
        """Deliver and handle at most one due message on this thread; True if one was handled."""
        self.backend.promote()
        partitions = self.backend.keys.partitions
        # XREADGROUP's COUNT is per stream: read one partition at a time, round robin, so no
        # entry is taken that this call will not handle.
        for step in range(partitions):
            index = (self._next_partition + step) % partitions
            deliveries = self.backend.fetch(self._name, 1, None, partitions=[index])
            if deliveries:
                self._next_partition = (index + 1) % partitions
                self.dispatcher.dispatch(deliveries[0])
                return True
        return False

    def process_all(self, timeout: float = 60.0) -> int:
        """Handle messages until none is left (ready, delayed or in flight) or ``timeout``
        seconds pass; returns how many were handled. Waits for delayed messages' due times."""
        if self._in_process_all:
            raise RuntimeError("process_all is not reentrant")
        self._in_process_all = True
        handled = 0
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                next_due = self.backend.promote()
                deliveries = self.backend.fetch(self._name, 32, None)
                for delivery in deliveries:
                    self.dispatcher.dispatch(delivery)
                    handled += 1
                if deliveries:
                    continue
                if self.backend.size() == 0:
                    break
                wait = 0.005 if next_due is None else max(0.001, min(0.05, next_due - time.time()))
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                for delivery in self.backend.reclaim(self._name, int(self.visibility_timeout * 1000)):
                    self.dispatcher.dispatch(delivery)
                    handled += 1
        finally:
            self._in_process_all = False
        return handled

    # -- background mode ---------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming in the background. With ``recover_on_start``, first continue every
        RUNNING workflow that has no message anywhere (``durability.recovery.find_stalled``)."""
        if self._consumer is not None and self._consumer.running:
            return
        if self.recover_on_start:
            from stabilize_redis.durability.recovery import find_stalled

            find_stalled(self.backend, older_than_s=0.0)
        self._consumer = Consumer(self.backend, self.dispatcher, concurrency=self.concurrency,
                                  visibility_timeout=self.visibility_timeout)
        self._cancel_listener.start()
        self._consumer.start()

    def stop(self, wait: bool = True, timeout: float = 30.0) -> None:
        if self._consumer is not None:
            self._consumer.stop(timeout if wait else 0.0)
            self._consumer = None
            self._cancel_listener.stop()

    request_stop = stop

    @property
    def is_running(self) -> bool:
        return self._consumer is not None and self._consumer.running

    @property
    def active_count(self) -> int:
        return self._consumer.inflight_count() if self._consumer else 0
