"""One worker process: a QueueProcessor in background mode until SIGTERM/SIGINT.

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

from stabilize_redis.queue.processor import QueueProcessor
from stabilize_redis.queue.redis_queue import RedisQueue
from workers.app import load_registry
from workers.guards import namespace_guard, refuse_if_lost, start_guards

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
    """The worker's checkpointer thread, or None (no DSN, or ``checkpoint`` off)."""
    if not settings.checkpoint:
        log.info("checkpointer disabled for this worker")
        return None
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
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings.log_level)
    registry = load_registry(settings.app)
    # Durability guards (workers/guards.py): refuse to start on a namespace that lost its data,
    # checked before the backend is built (building it would re-create the marker).
    guard = namespace_guard(settings.url, settings.namespace, settings.dsn, settings.schema)
    refused = refuse_if_lost(guard)
    if refused is not None:
        return refused
    queue = RedisQueue(settings.url, settings.namespace)
    processor = QueueProcessor(queue, task_registry=registry, concurrency=settings.concurrency,
                               visibility_timeout=settings.visibility_timeout)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
