"""Partition epochs: snapshot versions that stay ordered across a Redis rollback.

A workflow's ``version`` orders its states only within one Redis history. When Redis restarts
from an AOF that misses its last second (or fails over to a replica that lagged), it continues
from an older state and hands the lost version numbers out again, to different states. So each
partition lives through numbered **epochs**, and snapshots are ordered by ``(epoch, version)``:
a new epoch begins whenever the partition's Redis server process changes, every snapshot is
stamped with the epoch it was checkpointed in, and PostgreSQL's upsert guard compares the pair.

**Telling lives apart.** When it first meets a server process, a checkpointer loads
``lua/checkpoint_life.lua`` with a random token appended; the script's SHA (the *life*) is
recorded in PostgreSQL per partition. Redis 7 neither persists nor replicates its script cache,
so ``SCRIPT EXISTS <life>`` answers 1 exactly while the same process runs: after a restart, a
failover or a ``SCRIPT FLUSH`` it answers 0. (``INFO``'s run id would do too, but the
namespace's ACL user has no ``INFO``, and a life token costs one command it already has.) A
restart that lost nothing also starts a new life; that costs one reconciliation pass.

**Recording a life** (``Lives.check``, one PostgreSQL transaction per call): the partitions'
``partition_lives`` rows are locked (in partition order), and *under that lock* Redis is asked
which recorded lives are alive and what epoch it holds (``PartitionKeys.life``). A partition
whose life is gone gets a new one: epoch = max(PostgreSQL's, Redis's) + 1, so epochs only grow
even if either side forgot, and a pending reconciliation of every row written since
``last_write_at - window`` (``durability.reconcile``). The new epoch is then raised in Redis too.

**Writing a batch** (``Lives.claim``, inside the batch's transaction): each read carries the life
it was read in (checked with ``SCRIPT EXISTS`` in the same pipeline as the reads, and again after
the fsync hold-back). A partition's reads are written, stamped with its epoch, only if its row
still names that life and has no reconciliation pending; otherwise they are left dirty for the
next pass. Because new lives are recorded under the same row lock, a batch read before a
restart can never be written after the new life was recorded, and rows written before it are
seen by its reconciliation.

``window`` (``STABILIZE_RECONCILE_WINDOW`` seconds, default 30) must exceed the AOF fsync window
plus the time from a commit to its checkpoint (interval + fsync lag + one batch).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg import Cursor, sql

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.backend.scripts import script_source
from stabilize_redis.config import env_float
from stabilize_redis.keys import LIFE_EPOCH_FIELD

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotStore

log = logging.getLogger("stabilize_redis.checkpointer")

RECONCILE_WINDOW_ENV = "STABILIZE_RECONCILE_WINDOW"
DEFAULT_RECONCILE_WINDOW = 30.0


def reconcile_window(value: float | None = None) -> float:
    """The argument, else STABILIZE_RECONCILE_WINDOW, else 30 s."""
    return value if value is not None else env_float(RECONCILE_WINDOW_ENV, DEFAULT_RECONCILE_WINDOW)


@dataclass(frozen=True)
class Life:
    """A partition's current life as PostgreSQL records it. ``reconciled``: no reconciliation
    is pending, so batches of this life may be written. ``reconcile_from``: the window start of
    the pending reconciliation."""

    partition: int
    epoch: int
    life: str
    reconciled: bool
    reconcile_from: datetime | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Lives:
    """The lives of one namespace's partitions: PostgreSQL's record (``partition_lives``), the
    life tokens in Redis, and a per-process cache so a pass costs one ``SCRIPT EXISTS`` while
    nothing changes. Thread-compatible (one DrainPass uses it)."""

    def __init__(self, backend: RedisBackend, store: SnapshotStore, window: float | None = None) -> None:
        self.backend = backend
        self.store = store
        self.window = reconcile_window(window)
        self.table = sql.SQL("{}.partition_lives").format(sql.Identifier(store.schema))
        self.cache: dict[int, Life] = {}

    # -- Redis ---------------------------------------------------------------------------------

    def tokens(self, partitions: Iterable[int]) -> list[str]:
        """The distinct cached lives of ``partitions`` (for a ``SCRIPT EXISTS``)."""
        return sorted({self.cache[p].life for p in partitions if p in self.cache and self.cache[p].life})

    @staticmethod
    def alive(tokens: Sequence[str], reply: Sequence[Any]) -> set[str]:
        """The tokens a ``SCRIPT EXISTS tokens...`` reply says the server knows."""
        return {t for t, ok in zip(tokens, reply, strict=True) if ok}

    def current(self, partitions: Iterable[int], alive: set[str]) -> set[int]:
        """Partitions whose cached life is alive and reconciled: their batches may be read."""
        return {p for p in partitions if p in self.cache and self.cache[p].reconciled
                and self.cache[p].life in alive}

    def _new_token(self) -> str:
        body = script_source("checkpoint_life") + f"-- life {uuid.uuid4().hex}\n"
        return _text(self.backend.client.script_load(body))

    def _redis_state(self, tokens: Sequence[str], partitions: Sequence[int]) -> tuple[set[str], dict[int, int]]:
        pipe = pipeline(self.backend.client)
        if tokens:
            pipe.script_exists(*tokens)
        for p in partitions:
            pipe.hget(self.backend.keys.partition(p).life, LIFE_EPOCH_FIELD)
        res = pipe.execute()
        alive = self.alive(tokens, res[0]) if tokens else set()
        epochs = res[1:] if tokens else res
        return alive, {p: int(e or 0) for p, e in zip(partitions, epochs, strict=True)}

    def _raise(self, token: str, epochs: Mapping[int, int]) -> None:
        """Raise Redis's copy of the epochs. Best effort: should the new life already be over
        (NOSCRIPT), PostgreSQL's record still keeps epochs growing."""
        pipe = pipeline(self.backend.client)
        for p, epoch in epochs.items():
            pipe.evalsha(token, 1, self.backend.keys.partition(p).life, epoch)
        pipe.execute(raise_on_error=False)

    # -- PostgreSQL ----------------------------------------------------------------------------

    def _lock(self, cur: Cursor[Any], partitions: Sequence[int]) -> list[tuple[Any, ...]]:
        cur.execute(sql.SQL(
            "SELECT partition, epoch, life, last_write_at, reconciled_epoch, reconcile_from FROM {} "
            "WHERE namespace = %s AND partition = ANY(%s) ORDER BY partition FOR UPDATE").format(self.table),
            (self.store.namespace, list(partitions)))
        return cur.fetchall()

    def check(self, partitions: Iterable[int]) -> dict[int, Life]:
        """Record a new life for every partition whose recorded one is gone (see the module
        docstring) and return the current lives; updates the cache. Raises on Postgres or Redis
        errors (nothing recorded then)."""
        parts = sorted(set(partitions))
        if not parts:
            return {}
        lives, new, token = self.store.transact(lambda cur: self._check(cur, parts))
        if new:
            self._raise(token, new)
            quiet = {p: e for p, e in new.items() if lives[p].reconciled}
            changed = {p: e for p, e in new.items() if not lives[p].reconciled}
            if quiet:
                log.info("checkpointer: new Redis life for partitions %s (epochs %s); nothing written in an "
                         "earlier life is recent enough to need reconciling", sorted(quiet), sorted(set(quiet.values())))
            if changed:
                since = min((start for p in changed if (start := lives[p].reconcile_from) is not None), default=None)
                log.warning("checkpointer: Redis began a new life for partitions %s (epochs %s): reconciling the "
                            "PostgreSQL rows written since %s before checkpointing them", sorted(changed),
                            sorted(set(changed.values())), since)
        self.cache.update(lives)
        return lives

    def _check(self, cur: Cursor[Any], parts: list[int]) -> tuple[dict[int, Life], dict[int, int], str]:
        cur.execute(sql.SQL(
            "INSERT INTO {} (namespace, partition, epoch, life, reconciled_epoch) "
            "SELECT %s, p, 0, '', 0 FROM unnest(%s::integer[]) AS p ON CONFLICT DO NOTHING").format(self.table),
            (self.store.namespace, parts))
        rows = self._lock(cur, parts)
        alive, redis_epochs = self._redis_state(sorted({r[2] for r in rows if r[2]}), parts)
        lives: dict[int, Life] = {}
        new: dict[int, int] = {}
        token = ""
        updates: list[tuple[int, int, datetime | None, int]] = []
        for p, epoch, life, last_write, reconciled_epoch, pending_from in rows:
            if life and life in alive:
                lives[p] = Life(p, int(epoch), life, int(reconciled_epoch) >= int(epoch), pending_from)
                continue
            token = token or self._new_token()
            fresh = int(max(int(epoch), redis_epochs[p]) + 1)
            start = pending_from if int(reconciled_epoch) < int(epoch) else None
            if last_write is not None:
                window_start = last_write - timedelta(seconds=self.window)
                start = window_start if start is None else min(start, window_start)
            done = fresh if start is None else int(reconciled_epoch)
            updates.append((p, fresh, start, done))
            lives[p] = Life(p, fresh, token, done >= fresh, start)
            new[p] = fresh
        if updates:
            cur.execute(sql.SQL(
                "UPDATE {} AS l SET epoch = u.epoch, life = %s, started_at = now(), "
                "reconcile_from = u.start, reconciled_epoch = u.done "
                "FROM unnest(%s::integer[], %s::bigint[], %s::timestamptz[], %s::bigint[]) "
                "AS u(partition, epoch, start, done) "
                "WHERE l.namespace = %s AND l.partition = u.partition").format(self.table),
                (token, [u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates],
                 [u[3] for u in updates], self.store.namespace))
        return lives, new, token

    def reconciled(self, life: Life, cur: Cursor[Any]) -> bool:
        """Inside the caller's transaction: lock ``life``'s row and, if it is still the current
        life with its reconciliation pending, mark it done and return True; False when another
        checkpointer did it or a newer life began (the caller then writes nothing). Touches
        ``last_write_at``: should this life end soon, the next reconciliation looks back from
        here, over rows the dirty marks set now may not have rewritten yet."""
        rows = self._lock(cur, [life.partition])
        if not rows or rows[0][1] != life.epoch or rows[0][2] != life.life or rows[0][4] >= life.epoch:
            self.cache.pop(life.partition, None)
            return False
        cur.execute(sql.SQL("UPDATE {} SET reconciled_epoch = epoch, last_write_at = now() "
                            "WHERE namespace = %s AND partition = %s").format(self.table),
                    (self.store.namespace, life.partition))
        self.cache[life.partition] = replace(life, reconciled=True)
        return True

    def claim(self, reads: Mapping[int, str]) -> Callable[[Cursor[Any]], dict[int, int]]:
        """The first step of a batch's transaction: lock the partitions' rows and return
        ``{partition: epoch}`` for those whose row names the life the reads were made in
        (``reads``: partition -> life) with nothing pending, touching their ``last_write_at``.
        Other partitions are dropped from the cache (the next pass checks them)."""

        def run(cur: Cursor[Any]) -> dict[int, int]:
            rows = self._lock(cur, sorted(reads))
            ok = {int(r[0]): int(r[1]) for r in rows
                  if r[2] == reads.get(int(r[0])) and int(r[4]) >= int(r[1])}
            for p in set(reads) - set(ok):
                self.cache.pop(p, None)
            if ok:
                cur.execute(sql.SQL("UPDATE {} SET last_write_at = now() WHERE namespace = %s AND partition = ANY(%s)")
                            .format(self.table), (self.store.namespace, sorted(ok)))
            return ok

        return run

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached lives (their Redis life ended): the next pass checks them."""
        for p in partitions:
            self.cache.pop(p, None)
