"""The checkpointer: keeps PostgreSQL up to date with a namespace's workflows.

It drains each partition's dirty set (``durability.drain``): finished, SUSPENDED and PAUSED
workflows are written at once, others once they have been dirty for ``interval`` seconds
(default 1). It also evicts finished workflows whose end is older than ``retention`` (default
1 h; ``durability.retention``), and re-marks the unsaved workflows of partitions whose dirty set
was trimmed while no checkpointer ran (``durability.dirty_cap``).

It runs inside every worker process when a DSN is configured (``durability.embedded``), and
standalone as ``stabilize-redis checkpointer``. Many may run at once: each partition is drained
by the holder of its lease (``durability.leases``); the others stand by and take over within a
lease TTL when a holder dies.

Failure behaviour: Postgres being down never stops the engine. The checkpointer logs the outage
once, a "still down" line at most every ``outage_report_every`` seconds, retries with a capped
exponential backoff (``max_backoff``), keeps every unsaved workflow dirty, and catches up when
Postgres answers again; it logs the recovery once, and only after an operation that really
reached PostgreSQL succeeded (``durability.health``). Redis errors are handled the same way.

Watchdog: passes run on a loop thread; the thread that calls ``run`` (``start``'s thread)
supervises it. A pass that makes no progress for ``stall_timeout`` seconds (stuck inside a call
on a socket that went silent) is logged as one ERROR line naming the call and the time, then
abandoned: a fresh loop thread with a new owner token and a new PostgreSQL pool takes over at
once, the abandoned pass is fenced off (it writes nothing more, its connections are shut down
and their server sessions ended, its leases released and never renewed; ``durability.watchdog``). Retention sweeps and re-marking
run inside passes, so the watchdog covers them too. The store given to the checkpointer should
be its own (the worker and the CLI make one): on a stall its connections are shut down.

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
from typing import Any, cast

import psycopg
import redis
from psycopg_pool import PoolTimeout

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.config import MemoryPolicy, env_float
from stabilize_redis.durability.dirty_cap import DirtyRepair
from stabilize_redis.durability.drain import DrainPass, PassStats
from stabilize_redis.durability.health import POSTGRES_KINDS, REDIS_KINDS, OutageReport
from stabilize_redis.durability.leases import PartitionLeases, owner_token
from stabilize_redis.durability.pool import FencedPool, terminate_backends
from stabilize_redis.durability.retention import sweep
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.durability.watchdog import Abandoned, Fence, FencedStore
from stabilize_redis.outage import describe

log = logging.getLogger("stabilize_redis.checkpointer")

INTERVAL_ENV = "STABILIZE_CHECKPOINT_INTERVAL"
FSYNC_LAG_ENV = "STABILIZE_CHECKPOINT_FSYNC_LAG"
RETENTION_ENV = "STABILIZE_RETENTION"
STALL_TIMEOUT_ENV = "STABILIZE_CHECKPOINT_STALL_TIMEOUT"
OUTAGE_REPORT_ENV = "STABILIZE_CHECKPOINT_OUTAGE_REPORT_EVERY"


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
    seconds between retention sweeps (0: retention / 10, between 1 and 60). ``stall_timeout``:
    a pass without progress for this long is abandoned (0: never; keep it above the
    PostgreSQL statement timeout plus ``fsync_lag``). ``outage_report_every``: seconds between
    "still down" lines of an ongoing outage (0: none).
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
    stall_timeout: float = 60.0
    outage_report_every: float = 60.0

    @classmethod
    def from_env(cls, interval: float | None = None, fsync_lag: float | None = None,
                 retention: float | None = None, **overrides: float | int) -> CheckpointSettings:
        """Arguments win over STABILIZE_CHECKPOINT_INTERVAL, STABILIZE_CHECKPOINT_FSYNC_LAG,
        STABILIZE_RETENTION, STABILIZE_CHECKPOINT_STALL_TIMEOUT and
        STABILIZE_CHECKPOINT_OUTAGE_REPORT_EVERY, which win over the defaults."""
        d = cls()
        values: dict[str, Any] = {
            "interval": interval if interval is not None else env_float(INTERVAL_ENV, d.interval),
            "fsync_lag": fsync_lag if fsync_lag is not None else env_float(FSYNC_LAG_ENV, d.fsync_lag),
            "retention": retention if retention is not None else env_float(RETENTION_ENV, d.retention),
            "stall_timeout": env_float(STALL_TIMEOUT_ENV, d.stall_timeout),
            "outage_report_every": env_float(OUTAGE_REPORT_ENV, d.outage_report_every),
        }
        return cls(**{**values, **overrides})

    @property
    def sweep_period(self) -> float:
        return self.sweep_every if self.sweep_every > 0 else min(60.0, max(1.0, self.retention / 10))


POSTGRES_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


@dataclass
class _Generation:
    """One loop thread of a checkpointer and everything it writes through."""

    fence: Fence
    owner: str
    store: SnapshotStore
    owns_store: bool
    pg: FencedStore
    leases: PartitionLeases
    drain: DrainPass
    repair: DirtyRepair
    thread: threading.Thread | None = None


class Checkpointer:
    """Drains the dirty sets of the partitions it holds leases on; see the module docstring.

    ``run_once`` does one pass (tests and ``--once`` use it directly); ``run`` runs passes on a
    loop thread and supervises it until stopped; ``start``/``stop`` do that on a daemon thread;
    ``stop`` releases the leases. ``owner``, ``leases`` and ``drain`` are the current
    generation's; ``recycles`` counts the passes the watchdog abandoned.
    """

    def __init__(self, backend: RedisBackend, store: SnapshotStore,
                 settings: CheckpointSettings | None = None, *, owner: str | None = None) -> None:
        self.backend = backend
        self.store = store
        self.settings = settings or CheckpointSettings()
        # Events are archived and finished workflows evicted by this checkpointer: the caps of
        # a deployment without PostgreSQL would drop what it has not archived yet.
        backend.memory = MemoryPolicy.from_env(durable=True)
        self.totals = PassStats()
        self.evicted = 0
        self.remarked = 0
        self.recycles = 0
        self._base_owner = owner or owner_token()
        self._outage = OutageReport(log, self.settings.outage_report_every)
        self._registered = False
        self._last_sweep = time.monotonic()
        self._stop = threading.Event()
        self._join_timeout = 10.0
        self._thread: threading.Thread | None = None
        self._gen = self._generation(0, store, owns_store=False)
        self._abandoned: list[_Generation] = []
        self._zombies: set[int] = set()  # server pids of abandoned connections not yet ended
        self._zombies_lock = threading.Lock()

    def _generation(self, number: int, store: SnapshotStore, *, owns_store: bool) -> _Generation:
        s = self.settings
        fence = Fence(number)
        owner = self._base_owner if number == 0 else f"{self._base_owner}/g{number}"
        pg = FencedStore(store, fence)
        drain = DrainPass(self.backend, cast(SnapshotStore, pg), batch_size=s.batch_size,
                          max_events=s.max_events, fsync_lag=s.fsync_lag, owner=owner)
        return _Generation(fence, owner, store, owns_store, pg, PartitionLeases(self.backend, owner, s.lease_ttl),
                           drain, DirtyRepair(self.backend))

    @property
    def owner(self) -> str:
        return self._gen.owner

    @property
    def leases(self) -> PartitionLeases:
        return self._gen.leases

    @property
    def drain(self) -> DrainPass:
        return self._gen.drain

    @property
    def failing(self) -> list[str]:
        """Kinds of failure currently ongoing ('postgres', 'redis', 'schema', ...)."""
        return self._outage.failing

    @property
    def abandoned_threads(self) -> int:
        """Loop threads the watchdog abandoned that are still blocked in a call."""
        return sum(1 for g in self._abandoned if g.thread is not None and g.thread.is_alive())

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self, *, interval: float | None = None, all_partitions: bool = False,
                 sweep_now: bool = False) -> PassStats:
        """Refresh leases, then checkpoint the due workflows of the held partitions (or of every
        partition with ``all_partitions``, ignoring leases) and, when due or ``sweep_now``, run a
        retention sweep. ``interval`` overrides the setting (0: everything dirty is due).
        Raises on Postgres or Redis errors."""
        return self._pass(self._gen, interval, all_partitions, sweep_now)

    def _pass(self, gen: _Generation, interval: float | None, all_partitions: bool, sweep_now: bool,
              confirm: bool = False) -> PassStats:
        fence = gen.fence
        fence.begin()
        try:
            if not self._registered:
                gen.pg.register_namespace(self.backend.keys.partitions)
                self._registered = True
            fence.step("refreshing partition leases")
            if all_partitions:
                parts = set(range(self.backend.keys.partitions))
            else:
                before = gen.leases.refreshed_at
                parts = gen.leases.refresh()
                fence.reached_redis = fence.reached_redis or gen.leases.refreshed_at != before
            fence.step("re-marking trimmed dirty sets")
            self.remarked += gen.repair.run(parts, force=all_partitions, check=fence.progress)
            fence.step(f"draining {len(parts)} partitions")
            stats = gen.drain.run(parts, self.settings.interval if interval is None else interval, fence.abandoned)
            fence.reached_redis = fence.reached_redis or bool(parts)
            fence.check()
            self.totals.add(stats)
            if self.settings.retention > 0 and (
                    sweep_now or time.monotonic() - self._last_sweep >= self.settings.sweep_period):
                fence.step(f"retention sweep of {len(parts)} partitions")
                self._last_sweep = time.monotonic()
                self.evicted += sweep(self.backend, parts, self.settings.retention, check=fence.progress)
            if confirm:
                self._confirm(gen)
            return stats
        finally:
            fence.end()

    def _confirm(self, gen: _Generation) -> None:
        """Make sure every ongoing failure is really over before it is reported as such: probe
        PostgreSQL / Redis when the pass did not reach it. Raises when one is still down."""
        failing = set(self._outage.failing)
        if failing & POSTGRES_KINDS and not gen.fence.reached_postgres:
            gen.fence.step("probing PostgreSQL")
            gen.pg.namespace_partitions()
        if failing & REDIS_KINDS and not gen.fence.reached_redis:
            gen.fence.step("probing Redis")
            self.backend.client.ping()

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

    # -- the loop and its watchdog --------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Run passes on a loop thread until ``stop`` (or ``self.stop()``) is set, abandoning and
        replacing a loop whose pass is stuck (see the module docstring). Never raises."""
        stop = stop or self._stop
        self._spawn(self._gen, stop)
        limit = self.settings.stall_timeout
        while not stop.is_set():
            gen = self._gen
            stalled, step = gen.fence.stalled_for()
            if limit > 0 and stalled >= limit:
                self._recycle(gen, stalled, step, stop)
                continue
            stop.wait(limit - stalled if limit > 0 else None)
        thread = self._gen.thread
        if thread is not None:
            thread.join(self._join_timeout)

    def _spawn(self, gen: _Generation, stop: threading.Event) -> None:
        gen.thread = threading.Thread(target=self._loop, args=(gen, stop), daemon=True,
                                      name=f"stabilize-checkpointer-g{gen.fence.generation}")
        gen.thread.start()

    def _loop(self, gen: _Generation, stop: threading.Event) -> None:
        backoff = 0.0
        while not stop.is_set() and not gen.fence.abandoned.is_set():
            try:
                started = time.monotonic()
                stats = self._pass(gen, None, False, False, confirm=True)
                if stats.read:
                    log.debug("checkpointer: pass over %d partitions: %s in %.3fs", len(gen.leases.held),
                              stats, time.monotonic() - started)
            except Abandoned:
                break
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                if gen.fence.abandoned.is_set():
                    break  # its own connections were shut down by the watchdog
                backoff = self._failed(e, backoff)
                stop.wait(backoff)
                continue
            if gen.fence.abandoned.is_set():
                break
            self._outage.recovered()
            backoff = 0.0
            stop.wait(0.0 if stats.saturated else self.settings.poll)
        log.debug("checkpointer: loop of generation %d ended", gen.fence.generation)

    def _failed(self, e: Exception, backoff: float) -> float:
        if isinstance(e, psycopg.errors.QueryCanceled):
            self._outage.failed("postgres", e, f"PostgreSQL statement timed out ({describe(e)}); snapshots "
                                "paused, the engine continues; retrying with backoff")
        elif isinstance(e, POSTGRES_DOWN):
            self._outage.failed("postgres", e, f"PostgreSQL unreachable ({e}); snapshots paused, the engine "
                                "continues; retrying with backoff")
        elif isinstance(e, psycopg.errors.UndefinedTable):
            self._outage.failed("schema", e, f"PostgreSQL schema {self.store.schema!r} is not migrated ({e}); "
                                "run `stabilize-redis migrate`")
        elif isinstance(e, psycopg.Error):
            self._outage.failed("postgres-error", e, f"PostgreSQL error ({e}); retrying")
        elif isinstance(e, redis.RedisError):
            self._outage.failed("redis", e, f"Redis unreachable ({e}); retrying")
        else:
            self._outage.failed("error", e, f"checkpoint pass failed: {e!r}")
        return min(self.settings.max_backoff, max(0.2, backoff * 2))

    def _recycle(self, gen: _Generation, stalled: float, step: str, stop: threading.Event) -> None:
        """Abandon ``gen`` (stuck for ``stalled`` seconds in ``step``) and start a fresh one."""
        gen.fence.abandon()
        pool = gen.store.pool
        fresh = SnapshotStore(gen.store.dsn, gen.store.schema, gen.store.namespace,
                              max_size=pool.max_size, timeout=pool.timeout)
        new = self._generation(gen.fence.generation + 1, fresh, owns_store=True)
        self._gen = new
        self.recycles += 1
        self._abandoned = [g for g in self._abandoned if g.thread is not None and g.thread.is_alive()] + [gen]
        log.error("checkpointer: a pass has made no progress for %.1fs, stuck in %s (owner %s, %d partitions); "
                  "abandoning it (it writes nothing more; its connections are shut down and its leases released) "
                  "and starting a fresh loop with a new PostgreSQL pool", stalled, step, gen.owner,
                  len(gen.leases.held))
        threading.Thread(target=self._retire, args=(gen, new), daemon=True,
                         name=f"stabilize-checkpointer-retire-g{gen.fence.generation}").start()
        self._spawn(new, stop)

    def _retire(self, gen: _Generation, successor: _Generation) -> None:
        """Unblock and clean up an abandoned generation, off the supervisor (this may block):
        shut its connections down, end their server sessions (whose open transaction may hold
        locks the successor needs; with those of earlier retirements that could not be ended)
        through the successor's pool, release its leases."""
        pool = gen.store.pool
        with self._zombies_lock:
            if isinstance(pool, FencedPool):
                self._zombies.update(pool.backend_pids())
            pids = sorted(self._zombies)
        if isinstance(pool, FencedPool):
            pool.abort()
        if gen.owns_store:
            gen.store.close()
        try:
            terminate_backends(successor.store.pool, pids, pool.name)
        except (psycopg.Error, PoolTimeout) as e:
            log.warning("checkpointer: could not end the server sessions %s of the abandoned pass (%s); "
                        "PostgreSQL ends them after idle_in_transaction_session_timeout", pids, describe(e))
        else:
            with self._zombies_lock:
                self._zombies.difference_update(pids)
        try:
            gen.leases.release_all()
        except redis.RedisError as e:
            log.warning("checkpointer: could not release the leases of %s (%s); they expire on their own",
                        gen.owner, describe(e))

    def start(self) -> None:
        """Run the loop and its watchdog on a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="stabilize-checkpointer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, wait for the current pass (up to ``timeout``) and release the leases."""
        self._join_timeout = timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        gen = self._gen
        try:
            gen.leases.release()
        except redis.RedisError as e:
            log.warning("checkpointer: could not release leases (%s); they expire on their own", e)
        if gen.owns_store:
            gen.store.close()
