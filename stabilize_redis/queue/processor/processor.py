"""``QueueProcessor``: stabilize's processor API — run messages synchronously in the calling
thread (``process_one``/``process_all``) or in the background (``start``/``stop``).

Recovery (``run_recovery``, ``stabilize_redis.recovery``) runs once at ``start()`` with
``recover_on_start`` (or ``QueueProcessorConfig.recover_on_start``), and every
``QueueProcessorConfig.recovery_interval_seconds`` on a daemon thread (``_recovery_thread``)
when that is > 0. Handlers written for stabilize (``StabilizeHandler`` subclasses) are
registered with ``register_handler`` like the engine's own (``processor.custom``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from stabilize_redis.config import EngineConfig
from stabilize_redis.handlers import HandlerContext, default_handlers
from stabilize_redis.handlers.base import Handler
from stabilize_redis.handlers.stabilize_handler import StabilizeHandler
from stabilize_redis.periodic import PeriodicThread
from stabilize_redis.queue.cancel_listener import CancelListener
from stabilize_redis.queue.consumer import Consumer, consumer_name
from stabilize_redis.queue.dispatch import Dispatcher
from stabilize_redis.queue.processor.config import QueueProcessorConfig
from stabilize_redis.queue.processor.custom import adapt
from stabilize_redis.queue.redis_queue import RedisQueue
from stabilize_redis.resilience.config import HandlerConfig
from stabilize_redis.support import accept_message_type
from stabilize_redis.tasks.registry import TaskRegistry

if TYPE_CHECKING:
    from stabilize_redis.recovery import RecoveryResult

log = logging.getLogger("stabilize_redis.processor")


class _RecoveryThread(PeriodicThread):
    thread_name = "stz-recovery"

    def __init__(self, processor: QueueProcessor, interval: float) -> None:
        super().__init__(interval)
        self.processor = processor

    def tick(self) -> bool:
        self.processor.run_recovery()
        return False

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class QueueProcessor:
    """Dispatches a namespace's messages to the built-in handlers.

    ``config``: a QueueProcessorConfig (stabilize's settings; see ``processor.config`` for what
    each does here). ``handler_config``: a HandlerConfig whose timings become the engine's when
    ``engine_config`` is not given. ``concurrency`` is the number of handler threads in
    background mode (default: ``config.max_workers`` when a config is given, else 4);
    ``visibility_timeout`` how long an entry may sit unacknowledged without a heartbeat before
    another worker takes it; ``recover_on_start`` runs ``run_recovery()`` when ``start()`` is
    called.
    """

    def __init__(
        self,
        queue: RedisQueue,
        config: QueueProcessorConfig | None = None,
        store: Any = None,
        handler_config: HandlerConfig | None = None,
        task_registry: TaskRegistry | None = None,
        *,
        engine_config: EngineConfig | None = None,
        concurrency: int | None = None,
        visibility_timeout: float = 30.0,
        recover_on_start: bool = False,
    ) -> None:
        self.queue = queue
        self.store = store
        self.backend = queue.backend
        self.config = config if config is not None else QueueProcessorConfig()
        self.task_registry = task_registry or TaskRegistry()
        if engine_config is None:
            base = EngineConfig.from_env()
            engine_config = handler_config.to_engine_config(base) if handler_config is not None else base
        self.engine_config = engine_config
        self.context = HandlerContext(self.backend, self.task_registry, self.engine_config)
        self._handlers: dict[type, Handler] = default_handlers(self.context)
        self.dispatcher = Dispatcher(self.backend, self._handlers, self.engine_config)
        self.concurrency = concurrency if concurrency is not None else (
            self.config.max_workers if config is not None else 4)
        self.visibility_timeout = visibility_timeout
        self._consumer: Consumer | None = None
        self._cancel_listener = CancelListener(self.backend, self.context.tokens)
        self._name = consumer_name()
        self._in_process_all = False
        self._next_partition = 0
        self.recover_on_start = recover_on_start or self.config.recover_on_start
        self._recovery_thread: _RecoveryThread | None = None
        self._stopping = False

    # -- handlers ----------------------------------------------------------------------------

    def register_handler(self, handler: Handler | StabilizeHandler) -> None:
        """Add a handler for a message type without one (an engine Handler or a stabilize-style
        StabilizeHandler); pushes of that type are then accepted in this process
        (``support.accept_message_type``)."""
        if handler.message_type in self._handlers:
            raise ValueError(f"a handler for {handler.message_type.__name__} is already registered")
        self.replace_handler(handler)

    def replace_handler(self, handler: Handler | StabilizeHandler) -> None:
        engine = adapt(self.context, handler) if isinstance(handler, StabilizeHandler) else handler
        self._handlers[engine.message_type] = engine
        accept_message_type(engine.message_type)

    # -- recovery ------------------------------------------------------------------------------

    def run_recovery(self) -> list[RecoveryResult]:
        """One recovery pass over the namespace (``stabilize_redis.recovery``), filtered and
        windowed by ``config.recovery_application`` / ``recovery_max_age_hours``."""
        from stabilize_redis.recovery import WorkflowRecovery

        recovery = WorkflowRecovery(self.store, self.queue, max_recovery_age_hours=self.config.recovery_max_age_hours)
        return recovery.recover_pending_workflows(application=self.config.recovery_application)

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
        pending workflow that has no message anywhere (``run_recovery``; a failure of it is
        logged and does not keep the processor from starting); with
        ``config.recovery_interval_seconds`` > 0, repeat that periodically."""
        if self._consumer is not None and self._consumer.running:
            return
        self._stopping = False
        if self.recover_on_start:
            try:
                self.run_recovery()
            except Exception:  # noqa: BLE001 - the processor serves anyway; the sweep retries
                log.exception("recovery at start failed")
        self._consumer = Consumer(self.backend, self.dispatcher, concurrency=self.concurrency,
                                  visibility_timeout=self.visibility_timeout)
        self._cancel_listener.start()
        self._consumer.start()
        if self.config.recovery_interval_seconds > 0:
            self._recovery_thread = _RecoveryThread(self, self.config.recovery_interval_seconds)
            self._recovery_thread.start()

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop consuming; with ``wait``, for in-flight messages up to ``timeout`` seconds
        (default ``config.shutdown_timeout_seconds``, else 30)."""
        self._stopping = True
        bound = timeout if timeout is not None else (self.config.shutdown_timeout_seconds or 30.0)
        if self._recovery_thread is not None:
            self._recovery_thread.stop()
            self._recovery_thread = None
        if self._consumer is not None:
            self._consumer.stop(bound if wait else 0.0)
            self._consumer = None
            self._cancel_listener.stop()

    def request_stop(self) -> None:
        """Stop without waiting for in-flight messages."""
        self.stop(wait=False)

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    @property
    def is_running(self) -> bool:
        return self._consumer is not None and self._consumer.running

    @property
    def active_count(self) -> int:
        return self._consumer.inflight_count() if self._consumer else 0
