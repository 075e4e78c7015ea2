"""The checkpointer: keeps PostgreSQL up to date with a namespace's workflows.

It drains each partition's dirty set (``durability.drain``): finished, SUSPENDED and PAUSED
workflows are written at once, others once they have been dirty for ``interval`` seconds
(default 1). It also evicts finished workflows whose end is older than ``retention`` (default
1 h; ``durability.retention``).

It runs inside every worker process when a DSN is configured (``durability.embedded``), and
standalone as ``stabilize-redis checkpointer``. Many may run at once: each partition is drained
by the holder of its lease (``durability.leases``); the others stand by and take over within a
lease TTL when a holder dies.

Failure behaviour: Postgres being down never stops the engine. The checkpointer logs the outage
once, retries with a capped exponential backoff (``max_backoff``), keeps every unsaved workflow
dirty, and catches up when Postgres answers again; it logs the recovery once. Redis errors are
handled the same way.

``fsync_lag`` (seconds, default 0): with Redis AOF ``appendfsync everysec`` a Redis crash can
lose about the last second of commits. A batch is written to Postgres only ``fsync_lag``
seconds after it was read, so Postgres never records a state or an event Redis may still lose
(see ``durability.drain``). Set it above the fsync window, e.g. 1.5 s, when Redis runs with
``everysec``; the oldest dirty age then grows by the same amount.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
import redis
from psycopg_pool import PoolTimeout

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.config import env_float
from stabilize_redis.durability.drain import DrainPass, PassStats
from stabilize_redis.durability.leases import PartitionLeases, owner_token
from stabilize_redis.durability.retention import sweep
from stabilize_redis.durability.snapshots import SnapshotStore

log = logging.getLogger("stabilize_redis.checkpointer")

INTERVAL_ENV = "STABILIZE_CHECKPOINT_INTERVAL"
FSYNC_LAG_ENV = "STABILIZE_CHECKPOINT_FSYNC_LAG"
RETENTION_ENV = "STABILIZE_RETENTION"



@dataclass(frozen=True)
class CheckpointSettings:
    """How the checkpointer runs (seconds unless noted).

    ``interval``: a running workflow is written once dirty this long. ``fsync_lag``: batches are
    written this long after being read (see the module docstring). ``retention``: finished
    workflows leave Redis this long after their end (0 or less: never). ``batch_size``:
    workflows per read round trip / Postgres transaction. ``max_events``: events read per
    workflow per batch. ``poll``: pause between passes when the last one was not saturated.
    ``lease_ttl``: how long a dead checkpointer's partitions stay unattended.
    ``max_backoff``: cap of the retry delay while Postgres or Redis fails. ``sweep_every``:
    seconds between retention sweeps (0: retention / 10, between 1 and 60).
    """

    interval: float = 1.0
    fsync_lag: float = 0.0
    retention: float = 3600.0
    batch_size: int = 200
    max_events: int = 1000
    poll: float = 0.1
    lease_ttl: float = 5.0
    max_backoff: float = 5.0
    sweep_every: float = 0.0

    @classmethod
    def from_env(cls, interval: float | None = None, fsync_lag: float | None = None,
                 retention: float | None = None, **overrides: float | int) -> CheckpointSettings:
        """Arguments win over STABILIZE_CHECKPOINT_INTERVAL, STABILIZE_CHECKPOINT_FSYNC_LAG and
        STABILIZE_RETENTION, which win over the defaults."""
        d = cls()
        return cls(
            interval=interval if interval is not None else env_float(INTERVAL_ENV, d.interval),
            fsync_lag=fsync_lag if fsync_lag is not None else env_float(FSYNC_LAG_ENV, d.fsync_lag),
            retention=retention if retention is not None else env_float(RETENTION_ENV, d.retention),
            **overrides,  # type: ignore[arg-type]
        )

    @property
    def sweep_period(self) -> float:
        return self.sweep_every if self.sweep_every > 0 else min(60.0, max(1.0, self.retention / 10))


POSTGRES_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class Checkpointer:
    """Drains the dirty sets of the partitions it holds leases on; see the module docstring.

    ``run_once`` does one pass (tests and ``--once`` use it directly); ``start``/``stop`` run
    passes on a daemon thread until stopped; ``stop`` releases the leases.
    """

    def __init__(self, backend: RedisBackend, store: SnapshotStore,
                 settings: CheckpointSettings | None = None, *, owner: str | None = None) -> None:
        self.backend = backend
        self.store = store
        self.settings = settings or CheckpointSettings()
        self.owner = owner or owner_token()
        self.leases = PartitionLeases(backend, self.owner, self.settings.lease_ttl)
        self.drain = DrainPass(backend, store, batch_size=self.settings.batch_size,
                               max_events=self.settings.max_events, fsync_lag=self.settings.fsync_lag,
                               owner=self.owner)
        self.totals = PassStats()
        self.evicted = 0
        self._registered = False
        self._last_sweep = time.monotonic()
        self._failing: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self, *, interval: float | None = None, all_partitions: bool = False,
                 sweep_now: bool = False) -> PassStats:
        """Refresh leases, then checkpoint the due workflows of the held partitions (or of every
        partition with ``all_partitions``, ignoring leases) and, when due or ``sweep_now``, run a
        retention sweep. ``interval`` overrides the setting (0: everything dirty is due).
        Raises on Postgres or Redis errors."""
        if not self._registered:
            self.store.register_namespace(self.backend.keys.partitions)
            self._registered = True
        parts = set(range(self.backend.keys.partitions)) if all_partitions else self.leases.refresh()
        stats = self.drain.run(parts, self.settings.interval if interval is None else interval, self._stop)
        self.totals.add(stats)
        if self.settings.retention > 0 and (
                sweep_now or time.monotonic() - self._last_sweep >= self.settings.sweep_period):
            self._last_sweep = time.monotonic()
            self.evicted += sweep(self.backend, parts, self.settings.retention)
        return stats

    def drain_all(self, timeout: float = 30.0) -> PassStats:
        """Checkpoint everything dirty now (interval 0, all partitions) until nothing is left or
        ``timeout`` passes; returns the totals. For tools and tests."""
        deadline = time.monotonic() + timeout
        total = PassStats()
        while time.monotonic() < deadline:
            stats = self.run_once(interval=0.0, all_partitions=True)
            total.add(stats)
            if stats.read == 0 and not stats.saturated:
                break
        return total

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Run passes until ``stop`` (or ``self.stop()``) is set. Never raises."""
        stop = stop or self._stop
        backoff = 0.0
        while not stop.is_set():
            try:
                started = time.monotonic()
                stats = self.run_once()
                if stats.read:
                    log.debug("checkpointer: pass over %d partitions: %s in %.3fs", len(self.leases.held),
                              stats, time.monotonic() - started)
            except POSTGRES_DOWN as e:
                backoff = self._failed("postgres", f"PostgreSQL unreachable ({e}); snapshots paused, "
                                       "the engine continues; retrying with backoff", backoff)
            except psycopg.errors.UndefinedTable as e:
                backoff = self._failed("schema", f"PostgreSQL schema {self.store.schema!r} is not migrated "
                                       f"({e}); run `stabilize-redis migrate`", backoff)
            except psycopg.Error as e:
                backoff = self._failed("postgres-error", f"PostgreSQL error ({e}); retrying", backoff)
            except redis.RedisError as e:
                backoff = self._failed("redis", f"Redis unreachable ({e}); retrying", backoff)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                backoff = self._failed("error", f"checkpoint pass failed: {e!r}", backoff, exc=True)
            else:
                self._recovered()
                backoff = 0.0
                stop.wait(0.0 if stats.saturated else self.settings.poll)
                continue
            stop.wait(backoff)

    def _failed(self, kind: str, message: str, backoff: float, exc: bool = False) -> float:
        if kind not in self._failing:
            self._failing[kind] = time.monotonic()
            log.error("checkpointer: %s", message, exc_info=exc)
        return min(self.settings.max_backoff, max(0.2, backoff * 2))

    def _recovered(self) -> None:
        for kind, since in self._failing.items():
            log.warning("checkpointer: %s recovered after %.1fs; catching up", kind, time.monotonic() - since)
        self._failing.clear()

    @property
    def failing(self) -> list[str]:
        """Kinds of failure currently ongoing ('postgres', 'redis', 'schema', ...)."""
        return sorted(self._failing)

    def start(self) -> None:
        """Run the loop on a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="stabilize-checkpointer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, wait for the current pass (up to ``timeout``) and release the leases."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.leases.release()
        except redis.RedisError as e:
            log.warning("checkpointer: could not release leases (%s); they expire on their own", e)
