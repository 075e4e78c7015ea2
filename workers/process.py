"""One worker process: a QueueProcessor in background mode until SIGTERM/SIGINT.

Started while Redis is unreachable or refuses writes (``maxmemory``), it waits with capped
exponential backoff and starts serving when Redis answers; once running, each of its loops
rides out a Redis outage on its own (``stabilize_redis.queue.consumer``).

On the signal it stops reading, lets in-flight messages finish (up to the grace period) and
exits; anything still unfinished stays pending and another worker reclaims it after the
visibility timeout.

With a PostgreSQL DSN (``--dsn`` / STABILIZE_POSTGRES_DSN) the process also runs a checkpointer
thread (``stabilize_redis.durability``); without one it says so once and runs without snapshots.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from stabilize_redis.config import MemoryPolicy
from stabilize_redis.durability.pg import resolve_dsn
from stabilize_redis.queue.processor import QueueProcessor
from stabilize_redis.queue.redis_queue import RedisQueue
from workers.app import load_registry
from workers.guards import namespace_guard, open_namespace, start_guards

log = logging.getLogger("stabilize_redis.worker")


@dataclass(frozen=True)
class WorkerSettings:
    app: str
    url: str | None
    namespace: str | None
    concurrency: int = 4
    visibility_timeout: float = 30.0
    grace_period: float = 30.0
    log_level: str = "INFO"
    dsn: str | None = None  # None: STABILIZE_POSTGRES_DSN
    schema: str | None = None  # None: STABILIZE_POSTGRES_SCHEMA or stabilize_redis
    checkpoint: bool = True  # run the checkpointer thread when a DSN is configured
    checkpoint_interval: float | None = None  # None: STABILIZE_CHECKPOINT_INTERVAL or 1 s
    fsync_lag: float | None = None  # None: STABILIZE_CHECKPOINT_FSYNC_LAG or 0
    retention: float | None = None  # None: STABILIZE_RETENTION or 3600 s


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s",
    )


def _start_checkpointer(queue: RedisQueue, settings: WorkerSettings) -> Any:
    """The worker's checkpointer thread; with ``checkpoint`` off (or no DSN) the dirty-set
    trimmer instead, which trims only while no checkpointer runs anywhere in the namespace;
    None when that is turned off too."""
    if not settings.checkpoint:
        from stabilize_redis.durability.dirty_cap import DirtyCap, DirtyCapSettings

        log.info("checkpointer disabled for this worker")
        cap = DirtyCap(queue.backend, DirtyCapSettings.from_env())
        if cap.settings.every <= 0:
            return None
        cap.start()
        return cap
    from stabilize_redis.durability.embedded import start_in_worker

    return start_in_worker(queue.backend, settings.dsn, settings.schema, checkpoint_settings(settings))


def checkpoint_settings(settings: WorkerSettings) -> Any:
    """CheckpointSettings from the worker's options and the environment (needs psycopg)."""
    try:
        from stabilize_redis.durability.checkpointer import CheckpointSettings
    except ImportError:
        return None
    return CheckpointSettings.from_env(settings.checkpoint_interval, settings.fsync_lag, settings.retention)


def run_worker(settings: WorkerSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code: 0 after a clean stop,
    ``EXIT_NAMESPACE_LOST`` when the namespace lost its Redis data. Raises ``AppLoadError`` for a
    bad ``--app``.

    A worker started while Redis is unreachable, loading or at ``maxmemory`` (refusing the
    writes that create a new namespace) waits with capped exponential backoff, one log line per
    state change, and starts serving once Redis answers (``guards.open_namespace``); a signal
    meanwhile stops it cleanly. The lost-namespace check runs before each attempt."""
    configure_logging(settings.log_level)
    registry = load_registry(settings.app)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Durability guards (workers/guards.py): refuse to start on a namespace that lost its data,
    # checked before the backend is built (building it would re-create the marker).
    guard = namespace_guard(settings.url, settings.namespace, settings.dsn, settings.schema)
    opened = open_namespace(settings.url, settings.namespace, guard, stop)
    if opened is None:
        log.info("worker pid %d stopped before Redis answered", os.getpid())
        return 0
    if isinstance(opened, int):
        return opened
    queue = opened
    if resolve_dsn(settings.dsn) is not None:
        # PostgreSQL keeps the history (this worker's checkpointer, or a standalone one): no
        # event caps or expiry of finished workflows, from the first commit on (``MemoryPolicy``).
        queue.backend.memory = MemoryPolicy.from_env(durable=True)
    processor = QueueProcessor(queue, task_registry=registry, concurrency=settings.concurrency,
                               visibility_timeout=settings.visibility_timeout)
    log.info("worker pid %d serving %s with tasks %s", os.getpid(), queue.backend.target.describe(),
             ", ".join(registry.list_tasks()) or "(none)")
    processor.start()
    checkpointer = _start_checkpointer(queue, settings)
    guards = start_guards(queue.backend, guard, stop)
    stop.wait()
    guards.stop()
    processor.stop(wait=True, timeout=settings.grace_period)
    if checkpointer is not None:
        checkpointer.stop()
    if guards.exit_code:
        log.error("worker pid %d stopped: namespace lost its Redis data; run `stabilize-redis restore`",
                  os.getpid())
        return guards.exit_code
    log.info("worker pid %d exited cleanly", os.getpid())
    return 0
