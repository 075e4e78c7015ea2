"""The durability guards a worker process runs beside its processor.

* **Lost-namespace check** (``durability.marker``): before the worker builds its backend (which
  would re-create a missing marker) - on every start-up attempt while the worker waits for
  Redis - and then every ``STABILIZE_MARKER_CHECK_INTERVAL`` seconds
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
from stabilize_redis.outage import Backoff, OutageLog, redis_unavailable
from stabilize_redis.queue.redis_queue import RedisQueue

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
    Redis errors propagate: a starting worker waits for Redis and checks again
    (``workers.process.open_namespace``), so a namespace found lost once Redis answers is still
    refused."""
    if guard is None:
        return None
    state = guard.check()
    if state.lost:
        log.error("refusing to start: %s", state.reason)
        return EXIT_NAMESPACE_LOST
    if not state.verified:
        log.warning("%s", state.reason)
    return None


def open_namespace(url: str | None, namespace: str | None, guard: NamespaceGuard | None,
                   stop: threading.Event, backoff: Backoff | None = None) -> RedisQueue | int | None:
    """Wait until Redis serves, check the namespace (``refuse_if_lost``) and build its queue.

    Returns the queue; or the exit code to refuse with (the namespace lost its data); or None
    when ``stop`` was set while waiting. While Redis is unreachable, loading, or refuses the
    start-up writes (``maxmemory``, a new namespace), it tries again with capped exponential
    backoff (``backoff``; default 0.2 s doubling to 10 s), logging one line when it starts
    waiting, one "still down" line at most every 15 s and one when Redis answers. Other errors
    (a refused command, a bad URL) propagate."""
    backoff = backoff or Backoff()
    outage = OutageLog(log, f"worker start-up, waiting for Redis ({resolve(url, namespace).describe()})")
    while not stop.is_set():
        try:
            refused = refuse_if_lost(guard)
            if refused is not None:
                return refused
            queue = RedisQueue(url, namespace)
        except Exception as e:
            if not redis_unavailable(e):
                raise
            outage.failed(e)
            stop.wait(backoff.next())
            continue
        outage.ok()
        return queue
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
