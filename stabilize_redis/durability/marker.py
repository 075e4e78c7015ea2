"""Noticing a namespace that has lost its Redis data.

The namespace meta hash (``keys.NamespaceKeys.meta``: ``partitions``, ``created_at``, and
``restored_at`` after a restore) is the namespace's marker. PostgreSQL's ``namespaces`` table
says which namespaces have ever been checkpointed. Redis has lost a namespace's data when:

* the marker is gone while Postgres knows the namespace (a flush, a deleted keyspace, a Redis
  that came back empty), or
* the marker was re-created *after* Postgres registered the namespace and no restore has run
  since (``created_at`` later than the registration). Constructing a ``RedisBackend`` re-creates
  a missing marker, so a client or tool that connected after the loss hides it from the first
  rule; this one still sees it.

A worker that finds its namespace lost refuses to run (exit code ``EXIT_NAMESPACE_LOST``) and
says to run ``stabilize-redis restore``; a running worker checks every few seconds
(``MarkerWatch``) and stops processing when the data vanishes. Without a DSN the check is off:
there is nothing to compare with and nothing to restore from.

The decision (``assess``) is pure; ``NamespaceGuard`` does the reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stabilize_redis.keys import NamespaceKeys
from stabilize_redis.periodic import PeriodicThread

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotStore

log = logging.getLogger("stabilize_redis.worker")

EXIT_NAMESPACE_LOST = 3
"""Exit code of a worker that refuses to run because its namespace lost its Redis data."""

DEFAULT_TOLERANCE_MS = 60_000
"""Clock skew allowed between the machine that created the marker and Postgres."""


@dataclass(frozen=True)
class NamespaceRecord:
    """A namespace as Postgres registered it: its partition count and when (epoch ms)."""

    partitions: int
    created_at_ms: int


@dataclass(frozen=True)
class MarkerState:
    """The verdict of one check: ``lost`` means workers must not run; ``reason`` says why (and,
    when lost, what to do); ``verified`` is False when Postgres could not be asked."""

    lost: bool
    reason: str
    verified: bool = True


def _int(meta: Mapping[bytes, bytes], field: str) -> int | None:
    raw = meta.get(field.encode())
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def assess(namespace: str, meta: Mapping[bytes, bytes] | None, record: NamespaceRecord | None, *,
           postgres_answered: bool, seen_live: bool, tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> MarkerState:
    """Decide whether ``namespace`` has lost its Redis data.

    ``meta``: the marker hash (None when the key is absent); ``record``: the Postgres
    registration (None when unknown or when Postgres did not answer); ``postgres_answered``:
    whether Postgres could be asked; ``seen_live``: whether this process saw the marker before
    (a marker vanishing under a running worker is a loss even when Postgres cannot confirm).
    """
    restore_hint = (f"run `stabilize-redis restore --namespace {namespace} --dsn ...` to reload its "
                    "workflows from PostgreSQL, then start the workers again")
    if meta is None:
        if record is not None:
            return MarkerState(True, f"namespace {namespace!r} has lost its Redis data: its marker key is gone "
                                     f"but PostgreSQL has checkpointed it since {_iso(record.created_at_ms)}; "
                                     f"{restore_hint}")
        if seen_live:
            return MarkerState(True, f"namespace {namespace!r} vanished from Redis while this worker was running "
                                     f"(marker key gone); {restore_hint}", verified=postgres_answered)
        if not postgres_answered:
            return MarkerState(False, f"namespace {namespace!r} has no marker in Redis and PostgreSQL did not "
                                      "answer: cannot tell a new namespace from a lost one; starting",
                               verified=False)
        return MarkerState(False, f"namespace {namespace!r} is new (no marker, unknown to PostgreSQL)")
    if _int(meta, "restored_at") is not None:
        return MarkerState(False, f"namespace {namespace!r} is live (restored)")
    created = _int(meta, "created_at")
    if record is not None and created is not None and created > record.created_at_ms + tolerance_ms:
        return MarkerState(True, f"namespace {namespace!r} has lost its Redis data: its marker was re-created at "
                                 f"{_iso(created)}, after PostgreSQL registered it at "
                                 f"{_iso(record.created_at_ms)}, and no restore has run since; {restore_hint}")
    if not postgres_answered:
        return MarkerState(False, f"namespace {namespace!r} has its marker in Redis; PostgreSQL did not answer, "
                                  "so a marker re-created after a data loss cannot be ruled out; starting",
                           verified=False)
    return MarkerState(False, f"namespace {namespace!r} is live")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def namespace_record(store: SnapshotStore) -> NamespaceRecord | None:
    """The ``namespaces`` row of the store's namespace, or None; Postgres errors propagate."""
    from psycopg import sql

    with store.pool.connection() as conn:
        row = conn.execute(sql.SQL("SELECT partitions, (extract(epoch from created_at) * 1000)::bigint "
                                   "FROM {} WHERE namespace = %s").format(store.namespaces_table),
                           (store.namespace,)).fetchone()
    return NamespaceRecord(int(row[0]), int(row[1])) if row else None


class NamespaceGuard:
    """Reads the marker (from a raw client: it never creates it) and the Postgres registration,
    and returns ``assess``'s verdict. A Postgres error counts as "did not answer"."""

    def __init__(self, client: Any, namespace: str, store: SnapshotStore,
                 tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> None:
        self.client = client
        self.namespace = namespace
        self.store = store
        self.tolerance_ms = tolerance_ms
        self.meta_key = NamespaceKeys(namespace, 0).meta
        self.seen_live = False

    def check(self) -> MarkerState:
        """One check; Redis errors propagate (the caller decides what an outage means)."""
        raw = self.client.hgetall(self.meta_key)
        meta: dict[bytes, bytes] | None = dict(raw) if raw else None
        try:
            record = namespace_record(self.store)
            answered = True
        except Exception as e:  # noqa: BLE001 - Postgres down or not migrated: cannot confirm
            log.debug("namespace check: PostgreSQL did not answer: %s", e)
            record, answered = None, False
        state = assess(self.namespace, meta, record, postgres_answered=answered, seen_live=self.seen_live,
                       tolerance_ms=self.tolerance_ms)
        if meta is not None and not state.lost:
            self.seen_live = True
        return state


class MarkerWatch(PeriodicThread):
    """Checks the namespace every ``interval`` seconds on a daemon thread; calls ``on_lost``
    once (with the verdict) when the data is found lost. Redis errors are logged and retried:
    an unreachable Redis is not a lost namespace."""

    thread_name = "stz-marker-watch"

    def __init__(self, guard: NamespaceGuard, on_lost: Callable[[MarkerState], None],
                 interval: float = 5.0) -> None:
        super().__init__(interval)
        self.guard = guard
        self.on_lost = on_lost

    def start(self) -> None:
        self.guard.seen_live = True
        super().start()

    def tick(self) -> bool:
        # A Redis error is not a loss: PeriodicThread reports it (one line per state change)
        # and the check runs again next interval.
        state = self.guard.check()
        if state.lost:
            self.on_lost(state)
            return True
        return False
