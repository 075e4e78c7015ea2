"""One checkpoint pass over some partitions: read due dirty workflows, write them to Postgres,
acknowledge them in Redis.

A pass lists the partitions' dirty sets and checks their Redis lives (one round trip: the
``ZRANGE``s and one ``SCRIPT EXISTS``; ``durability.epochs``). A partition whose life changed is
recorded in a new epoch and reconciled (``durability.reconcile``) before anything of it is
written. Then it works in batches of up to ``batch_size`` workflows. Per batch: one pipelined
Redis round trip to read (``SCRIPT EXISTS`` of the partitions' lives, then one
``lua/checkpoint_read.lua`` call per partition: for each due workflow the whole hash and the
events after the last archived one; not-yet-due ones are skipped inside the script), one
Postgres transaction (``SnapshotStore.write_checkpoint``: the partitions' lives claimed, then
snapshot upserts guarded by (epoch, version) and idempotent event inserts) and one pipelined
round trip of ``lua/checkpoint_ack.lua`` calls (record the checkpointed version and last
archived event id; clear the dirty mark only if the version did not move).

**Isolation.** A workflow whose hash cannot be decoded, or that PostgreSQL refuses (a NUL in a
name, NaN in an event, ...), is quarantined (``durability.quarantine``): every other workflow of
its batch is written, it is acknowledged with its reason and retried when it changes again. A
workflow this checkpointer quarantined before is written in a savepoint of its own from then on,
so it costs the others nothing.

``fsync_lag``: with Redis AOF ``appendfsync everysec``, a Redis crash can lose roughly the last
second of commits. Were the checkpointer to copy such a commit to Postgres, Postgres would then
hold a state (and events) Redis no longer has. With ``fsync_lag`` > 0 every batch is held back
until ``fsync_lag`` seconds after it was read, and its partitions' lives are checked once more
(one ``SCRIPT EXISTS``): a batch whose Redis restarted meanwhile is dropped, unacknowledged, and
read again by a later pass. State read longer than the fsync window ago was on disk, so a crash
after the check cannot take it back. Set it above the AOF fsync window (e.g. 1.5 s); with 0
(the default) a crash can still leave Postgres ahead of Redis, and the reconciliation of the
next life sets that right.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.epochs import Lives
from stabilize_redis.durability.quarantine import describe, is_data_error, reason_json
from stabilize_redis.durability.reconcile import Reconciler
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.durability.snapshots import CheckpointResult, EventRow, SnapshotRow, SnapshotStore
from stabilize_redis.keys import EVENT_FIELD, WORKFLOW_VERSION_FIELD
from stabilize_redis.models.status import WorkflowStatus

log = logging.getLogger("stabilize_redis.checkpointer")

IMMEDIATE_STATUSES = tuple(s.name for s in WorkflowStatus if s.is_complete) + ("SUSPENDED", "PAUSED")
"""Workflows in these statuses are checkpointed at once: they will not change for a while."""

RECONCILE_RETRY = 30.0
"""Seconds before a reconciliation PostgreSQL refused for its data is tried again."""

MAX_SUSPECTS = 10_000
"""Quarantined workflow ids remembered per pass object (written alone when they come back)."""


@dataclass
class PassStats:
    """What one pass did. ``saturated`` means it stopped at its per-pass cap with work left.
    ``quarantined``: workflows set aside (undecodable, or refused by Postgres); ``dropped``:
    workflows read but not written because their partition's Redis life changed (they stay
    dirty); ``reconciled``: workflows a reconciliation rewrote or restored."""

    read: int = 0
    written: int = 0
    events: int = 0
    cleared: int = 0
    saturated: bool = False
    quarantined: int = 0
    dropped: int = 0
    reconciled: int = 0

    def add(self, other: PassStats) -> None:
        self.read += other.read
        self.written += other.written
        self.events += other.events
        self.cleared += other.cleared
        self.saturated = self.saturated or other.saturated
        self.quarantined += other.quarantined
        self.dropped += other.dropped
        self.reconciled += other.reconciled


@dataclass
class _Read:
    """One workflow as read for checkpointing. ``refused``: why it cannot be written (empty
    when it can) and ``stage`` where that was found ('decode' or 'snapshot'); ``seen_version``:
    its ``ver`` as read (0 when the hash is gone)."""

    partition: int
    workflow_id: str
    life: str
    read_ms: int = 0
    row: SnapshotRow | None = None  # None: the hash is gone, or it cannot be decoded
    events: list[EventRow] = field(default_factory=list)
    more: bool = False
    refused: str = ""
    stage: str = ""
    seen_version: int = 0

    @property
    def last_event(self) -> str:
        return self.events[-1].stream_id if self.events else ""


@dataclass
class _Batch:
    reads: list[_Read]
    read_at: float  # monotonic time the read round trip returned


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DrainPass:
    """Checkpoints due dirty workflows of given partitions (see the module docstring).
    ``reconcile_window``: see ``durability.epochs`` (default STABILIZE_RECONCILE_WINDOW)."""

    def __init__(self, backend: RedisBackend, store: SnapshotStore, *, batch_size: int = 200,
                 max_events: int = 1000, fsync_lag: float = 0.0, max_per_pass: int = 5000,
                 owner: str = "", reconcile_window: float | None = None) -> None:
        self.backend = backend
        self.store = store
        self.batch_size = max(1, batch_size)
        self.max_events = max(1, max_events)
        self.fsync_lag = max(0.0, fsync_lag)
        self.max_per_pass = max(self.batch_size, max_per_pass)
        self.owner = owner
        self.lives = Lives(backend, store, reconcile_window)
        self.reconciler = Reconciler(backend, store, self.lives)
        self._immediate = "," + ",".join(IMMEDIATE_STATUSES) + ","
        self._suspects: dict[str, str] = {}
        self._retry_reconcile: dict[int, float] = {}

    def run(self, partitions: Iterable[int], interval: float,
            stop: threading.Event | None = None) -> PassStats:
        """Checkpoint every workflow of ``partitions`` that is due: dirty for at least
        ``interval`` seconds, or dirty in an immediate status. Partitions whose Redis life
        changed are reconciled first. Postgres or Redis errors propagate; workflows not
        acknowledged stay dirty for the next pass."""
        parts = sorted(partitions)
        stats = PassStats()
        if not parts:
            return stats
        candidates, alive = self._candidates(parts)
        ready = self._settle(parts, alive, stats)
        candidates = [(i, wid) for i, wid in candidates if i in ready]
        stats.saturated = len(candidates) > self.max_per_pass
        batches = [self._read(candidates[i:i + self.batch_size], interval)
                   for i in range(0, min(len(candidates), self.max_per_pass), self.batch_size)]
        for batch in batches:
            if not batch.reads:
                continue
            stats.dropped += self._hold_back(batch, stop)
            if batch.reads:
                stats.add(self._write(batch))
        return stats

    def checkpoint_now(self, partition: int, workflow_ids: Sequence[str]) -> PassStats:
        """Checkpoint the given workflows of one partition at once, whatever their dirty age,
        after settling the partition's life as a pass does (nothing is written while its
        reconciliation is pending). A workflow that is not dirty is already in PostgreSQL."""
        stats = PassStats()
        tokens = self.lives.tokens([partition])
        alive = self.lives.alive(tokens, self.backend.client.script_exists(*tokens)) if tokens else set()
        if partition not in self._settle([partition], alive, stats):
            return stats
        batch = self._read([(partition, wid) for wid in workflow_ids], 0.0)
        if batch.reads:
            stats.dropped += self._hold_back(batch, None)
        if batch.reads:
            stats.add(self._write(batch))
        return stats

    # -- steps ----------------------------------------------------------------------------------

    def _candidates(self, parts: Sequence[int]) -> tuple[list[tuple[int, str]], set[str]]:
        """Dirty ids of the partitions, oldest first, and the cached lives Redis still knows
        (one round trip)."""
        tokens = self.lives.tokens(parts)
        pipe = pipeline(self.backend.client)
        if tokens:
            pipe.script_exists(*tokens)
        for i in parts:
            pipe.zrange(self.backend.keys.partition(i).dirty, 0, self.max_per_pass, withscores=True)
        res = pipe.execute()
        alive = self.lives.alive(tokens, res[0]) if tokens else set()
        scored = [(score, i, _text(wid)) for i, members in zip(parts, res[1:] if tokens else res, strict=True)
                  for wid, score in members]
        scored.sort()
        return [(i, wid) for _, i, wid in scored], alive

    def _settle(self, parts: Sequence[int], alive: set[str], stats: PassStats) -> set[int]:
        """The partitions whose batches may be written: their life is current and reconciled.
        Records new lives and reconciles them first. A reconciliation PostgreSQL refuses for its
        data leaves that partition pending (logged) without holding back the others."""
        ready = self.lives.current(parts, alive)
        now = time.monotonic()
        stale = [p for p in parts if p not in ready and self._retry_reconcile.get(p, 0.0) <= now]
        if not stale:
            return ready
        for p, life in self.lives.check(stale).items():
            if not life.reconciled:
                try:
                    report = self.reconciler.run(life)
                except Exception as e:
                    if not is_data_error(e):
                        raise
                    self._retry_reconcile[p] = now + RECONCILE_RETRY
                    log.error("checkpointer: reconciliation of partition %d failed (%s); its checkpoints wait, "
                              "retrying in %.0fs", p, describe(e), RECONCILE_RETRY)
                    continue
                self._retry_reconcile.pop(p, None)
                stats.reconciled += report.rewritten + report.restored
                if not report.done:
                    continue
            ready.add(p)
        return ready

    def _read(self, chunk: Sequence[tuple[int, str]], interval: float) -> _Batch:
        """One round trip: the lives of the partitions present in ``chunk``, then one
        ``checkpoint_read`` call per partition. Reads of a partition whose life is gone are
        dropped (its next pass checks it)."""
        script = self.backend.scripts.checkpoint_read
        by_part: dict[int, list[str]] = {}
        for i, wid in chunk:
            by_part.setdefault(i, []).append(wid)
        lives = {i: self.lives.cache[i].life for i in by_part if i in self.lives.cache}
        tokens = sorted(set(lives.values()))
        args = [int(interval * 1000), self._immediate, self.max_events]

        def build(pipe: Any) -> None:
            if tokens:
                pipe.script_exists(*tokens)
            for i, ids in by_part.items():
                part = self.backend.keys.partition(i)
                keys = [part.dirty]
                for wid in ids:
                    keys += [part.workflow(wid), part.events(wid)]
                evalsha(pipe, script, keys, [*args, *ids])

        replies = execute(self.backend.client, build, [script])
        read_at = time.monotonic()
        alive = self.lives.alive(tokens, replies[0]) if tokens else set()
        reads: list[_Read] = []
        for (i, ids), reply in zip(by_part.items(), replies[1:] if tokens else replies, strict=True):
            life = lives.get(i, "")
            if life not in alive:
                self.lives.forget([i])
                continue
            read_ms = int(reply[0])
            for wid, result in zip(ids, reply[1:], strict=True):
                if isinstance(result, list):
                    reads.append(self._decode(i, wid, life, read_ms, result))
                elif int(result) < 0:
                    reads.append(_Read(i, wid, life, read_ms))
        return _Batch(reads, read_at)

    def _decode(self, partition: int, wid: str, life: str, read_ms: int, result: list[Any]) -> _Read:
        flat, entries = result
        raw = {flat[k]: flat[k + 1] for k in range(0, len(flat), 2)}
        try:
            seen = int(raw.get(WORKFLOW_VERSION_FIELD.encode(), b"0"))
        except ValueError:
            seen = 0
        try:
            row = SnapshotRow.from_hash(self.backend.keys.namespace, wid, partition, raw)
            events: list[EventRow] = []
            for entry_id, fields in entries:
                values = {fields[k]: fields[k + 1] for k in range(0, len(fields), 2)}
                if EVENT_FIELD.encode() in values:
                    events.append(EventRow(wid, _text(entry_id), _text(values[EVENT_FIELD.encode()])))
        except Exception as e:  # noqa: BLE001 - whatever is in the hash, it must not stop the pass
            reason = f"the hash cannot be read as a snapshot: {describe(e)}"
            return _Read(partition, wid, life, read_ms, refused=reason, stage="decode", seen_version=seen)
        return _Read(partition, wid, life, read_ms, row, events, more=len(entries) >= self.max_events,
                     seen_version=row.version)

    def _hold_back(self, batch: _Batch, stop: threading.Event | None) -> int:
        """Wait until ``fsync_lag`` seconds have passed since the batch was read, then drop the
        reads whose Redis life ended meanwhile (one round trip); returns how many were dropped."""
        if self.fsync_lag <= 0:
            return 0
        remaining = batch.read_at + self.fsync_lag - time.monotonic()
        if remaining > 0:
            if stop is not None:
                stop.wait(remaining)
            else:
                time.sleep(remaining)
        tokens = sorted({r.life for r in batch.reads if r.life})
        if not tokens:
            return 0
        alive = self.lives.alive(tokens, self.backend.client.script_exists(*tokens))
        gone = {r.partition for r in batch.reads if r.life not in alive}
        if not gone:
            return 0
        kept = [r for r in batch.reads if r.partition not in gone]
        dropped = len(batch.reads) - len(kept)
        log.warning("checkpointer: Redis restarted while a batch was held back; %d workflow(s) of partitions %s "
                    "are not written but read again", dropped, sorted(gone))
        self.lives.forget(gone)
        batch.reads = kept
        return dropped

    def _write(self, batch: _Batch) -> PassStats:
        items = [(r.row, r.events) for r in batch.reads if r.row is not None]
        result = CheckpointResult()
        if items:
            claim = self.lives.claim({r.partition: r.life for r in batch.reads})
            result = self.store.write_checkpoint(items, claim, isolate=self._suspects.keys())
        acked: list[_Read] = []
        dropped = 0
        for r in batch.reads:
            if r.row is not None and r.row.partition not in result.epochs:
                dropped += 1
                continue
            if r.row is not None and r.workflow_id in result.refused:
                r.refused, r.stage = f"PostgreSQL refused it: {result.refused[r.workflow_id]}", "snapshot"
                r.events = []
            elif r.row is not None:
                self._suspects.pop(r.workflow_id, None)
            if r.refused:
                self._report(r)
            acked.append(r)
        cleared = self._ack(acked) if acked else 0
        quarantined = sum(1 for r in acked if r.refused)
        return PassStats(read=len(items), written=result.written, events=result.archived, cleared=cleared,
                         quarantined=quarantined, dropped=dropped)

    def _report(self, r: _Read) -> None:
        """One ERROR line the first time a workflow is quarantined for a reason."""
        if self._suspects.get(r.workflow_id) != r.refused:
            log.error("checkpointer: workflow %s (partition %d, version %d) quarantined: %s; it stays "
                      "unsaved in Redis and is retried when it changes (`stabilize-redis quarantine list`)",
                      r.workflow_id, r.partition, r.seen_version, r.refused)
        if r.workflow_id not in self._suspects and len(self._suspects) >= MAX_SUSPECTS:
            self._suspects.pop(next(iter(self._suspects)))
        self._suspects[r.workflow_id] = r.refused

    def _ack(self, reads: Sequence[_Read]) -> int:
        """One round trip: one ``checkpoint_ack`` call per partition present in ``reads``."""
        script = self.backend.scripts.checkpoint_ack
        by_part: dict[int, list[_Read]] = {}
        for r in reads:
            by_part.setdefault(r.partition, []).append(r)

        def build(pipe: Any) -> None:
            for i, group in by_part.items():
                part = self.backend.keys.partition(i)
                keys = [part.dirty, part.checkpoint_info, part.quarantine,
                        *(part.workflow(r.workflow_id) for r in group),
                        *(part.events(r.workflow_id) for r in group)]
                args: list[Any] = [min(r.read_ms for r in group), self.owner]
                for r in group:
                    if r.refused:
                        args += [r.workflow_id, r.seen_version, "", "0", reason_json(r.refused, r.seen_version, r.stage)]
                    else:
                        args += [r.workflow_id, r.seen_version if r.row is not None else 0, r.last_event,
                                 "1" if r.more else "0", ""]
                evalsha(pipe, script, keys, args)

        results = execute(self.backend.client, build, [script])
        return sum(1 for codes in results for code in codes if int(code) == 1)


def dirty_ages(backend: RedisBackend) -> list[tuple[int, int, int | None]]:
    """Per partition: (index, dirty count, age in ms of the oldest dirty mark or None), by the
    Redis server clock. One round trip."""
    pipe = pipeline(backend.client)
    pipe.time()
    parts = backend.keys.all_partitions()
    for part in parts:
        pipe.zcard(part.dirty)
        pipe.zrange(part.dirty, 0, 0, withscores=True)
    res = pipe.execute()
    secs, micros = res[0]
    now = int(secs) * 1000 + int(micros) // 1000
    out: list[tuple[int, int, int | None]] = []
    for k, part in enumerate(parts):
        count, oldest = res[1 + 2 * k], res[2 + 2 * k]
        out.append((part.index, int(count), now - int(oldest[0][1]) if oldest else None))
    return out


def oldest_dirty_age_ms(backend: RedisBackend) -> int:
    """Age in ms of the oldest dirty mark of the namespace (0 when nothing is dirty)."""
    return max((age for _, _, age in dirty_ages(backend) if age is not None), default=0)

