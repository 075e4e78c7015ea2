"""The durability guards a worker process runs beside its processor.

* **Lost-namespace check** (``durability.marker``): before the worker builds its backend (which
  would re-create a missing marker) and then every ``STABILIZE_MARKER_CHECK_INTERVAL`` seconds
  (default 5). A namespace that lost its Redis data makes the worker refuse to start, or stop
  processing, with exit code ``EXIT_NAMESPACE_LOST`` and a log line saying to run
  ``stabilize-redis restore``. Needs a DSN (``--dsn`` / STABILIZE_POSTGRES_DSN); off without.
* **Stalled-workflow sweep** (``durability.recovery.StallSweeper``): every
  ``STABILIZE_RECOVERY_INTERVAL`` seconds (default 30; 0 disables), one worker of the namespace
  at a time continues RUNNING workflows whose next message was lost.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.backend.connection import connect_redis, resolve
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST, MarkerState, MarkerWatch, NamespaceGuard
from stabilize_redis.durability.pg import pg_settings
from stabilize_redis.durability.recovery import StallSweeper

log = logging.getLogger("stabilize_redis.worker")

MARKER_INTERVAL_ENV = "STABILIZE_MARKER_CHECK_INTERVAL"


def _marker_interval() -> float:
    raw = os.environ.get(MARKER_INTERVAL_ENV)
    return float(raw) if raw not in (None, "") else 5.0


def namespace_guard(url: str | None, namespace: str | None, dsn: str | None = None,
                    schema: str | None = None) -> NamespaceGuard | None:
    """A guard for the namespace, or None when the check cannot apply (embedded Redis, no DSN,
    or psycopg not installed)."""
    target = resolve(url, namespace)
    pg = pg_settings(dsn, schema)
    if target.embedded or pg is None:
        return None
    try:
        from stabilize_redis.durability.snapshots import snapshot_store_for
    except ImportError:
        return None
    store = snapshot_store_for(pg.dsn, pg.schema, target.namespace)
    return NamespaceGuard(connect_redis(target), target.namespace, store)


def refuse_if_lost(guard: NamespaceGuard | None) -> int | None:
    """Check before start-up: the exit code to refuse with (logging why), or None to go on.
    A Redis error here is raised: the worker cannot run without Redis anyway."""
    if guard is None:
        return None
    state = guard.check()
    if state.lost:
        log.error("refusing to start: %s", state.reason)
        return EXIT_NAMESPACE_LOST
    if not state.verified:
        log.warning("%s", state.reason)
    return None


@dataclass
class RunningGuards:
    """The guard threads of a running worker; ``exit_code`` becomes EXIT_NAMESPACE_LOST when the
    namespace was found lost (the worker's ``stop`` event is then set)."""

    watch: MarkerWatch | None = None
    sweeper: StallSweeper | None = None
    exit_code: int = 0
    lost_reason: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.sweeper is not None:
            self.sweeper.stop()


def start_guards(backend: RedisBackend, guard: NamespaceGuard | None, stop: threading.Event,
                 **sweeper_args: Any) -> RunningGuards:
    """Start the periodic lost-namespace check (when ``guard``) and the stalled-workflow sweep."""
    guards = RunningGuards()

    def on_lost(state: MarkerState) -> None:
        log.error("stopping: %s", state.reason)
        with guards._lock:
            guards.exit_code = EXIT_NAMESPACE_LOST
            guards.lost_reason = state.reason
        stop.set()

    if guard is not None:
        guards.watch = MarkerWatch(guard, on_lost, interval=_marker_interval())
        guards.watch.start()
    guards.sweeper = StallSweeper(backend, **sweeper_args)
    guards.sweeper.start()
    return guards
