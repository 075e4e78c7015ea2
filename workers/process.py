"""One worker process: a QueueProcessor in background mode until SIGTERM/SIGINT.

On the signal it stops reading, lets in-flight messages finish (up to the grace period) and
exits; anything still unfinished stays pending and another worker reclaims it after the
visibility timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

from stabilize_redis.queue.processor import QueueProcessor
from stabilize_redis.queue.redis_queue import RedisQueue
from workers.app import load_registry

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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s",
    )


def run_worker(settings: WorkerSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings.log_level)
    registry = load_registry(settings.app)
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
    stop.wait()
    processor.stop(wait=True, timeout=settings.grace_period)
    log.info("worker pid %d exited cleanly", os.getpid())
    return 0
