"""One checkpoint pass over some partitions: read due dirty workflows, write them to Postgres,
acknowledge them in Redis.

A pass lists the partitions' dirty sets (one round trip), then works in batches of up to
``batch_size`` workflows. Per batch: one pipelined Redis round trip to read, holding one
``lua/checkpoint_read.lua`` call per partition (for each due workflow: the whole hash and the
events after the last archived one; not-yet-due ones are skipped inside the script), one
Postgres transaction (version-guarded snapshot upserts and idempotent event inserts) and one
pipelined round trip of ``lua/checkpoint_ack.lua`` calls (record the checkpointed version and
last archived event id; clear the dirty mark only if the version did not move).

``fsync_lag``: with Redis AOF ``appendfsync everysec``, a Redis crash can lose roughly the last
second of commits. Were the checkpointer to copy such a commit to Postgres, Postgres would then
hold a state (and events) Redis no longer has: a later, different commit would be skipped by
the version guard, and replayed transitions would be archived twice under new event ids. With
``fsync_lag`` > 0 every batch is held back until ``fsync_lag`` seconds after it was read, so
only state that had time to reach the disk is written. Set it above the AOF fsync window (the
chaos suite uses 1.5 s); 0 (the default) suits ``appendfsync always`` or a Redis whose loss
you handle with restore anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.durability.snapshots import EventRow, SnapshotRow, SnapshotStore
from stabilize_redis.models.status import WorkflowStatus

log = logging.getLogger("stabilize_redis.checkpointer")

IMMEDIATE_STATUSES = tuple(s.name for s in WorkflowStatus if s.is_complete) + ("SUSPENDED", "PAUSED")
"""Workflows in these statuses are checkpointed at once: they will not change for a while."""


@dataclass
class PassStats:
    """What one pass did. ``saturated`` means it stopped at its per-pass cap with work left."""

    read: int = 0
    written: int = 0
    events: int = 0
    cleared: int = 0
    saturated: bool = False

    def add(self, other: PassStats) -> None:
        self.read += other.read
        self.written += other.written
        self.events += other.events
        self.cleared += other.cleared
        self.saturated = self.saturated or other.saturated


@dataclass
class _Read:
    """One workflow as read for checkpointing."""

    partition: int
    workflow_id: str
    read_ms: int = 0
    row: SnapshotRow | None = None  # None: the hash is gone
    events: list[EventRow] = field(default_factory=list)
    more: bool = False

    @property
    def version(self) -> int:
        return self.row.version if self.row is not None else 0

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
    """Checkpoints due dirty workflows of given partitions (see the module docstring)."""

    def __init__(self, backend: RedisBackend, store: SnapshotStore, *, batch_size: int = 200,
                 max_events: int = 1000, fsync_lag: float = 0.0, max_per_pass: int = 5000,
                 owner: str = "") -> None:
        self.backend = backend
        self.store = store
        self.batch_size = max(1, batch_size)
        self.max_events = max(1, max_events)
        self.fsync_lag = max(0.0, fsync_lag)
        self.max_per_pass = max(self.batch_size, max_per_pass)
        self.owner = owner
        self._immediate = "," + ",".join(IMMEDIATE_STATUSES) + ","

    def run(self, partitions: Iterable[int], interval: float,
            stop: threading.Event | None = None) -> PassStats:
        """Checkpoint every workflow of ``partitions`` that is due: dirty for at least
        ``interval`` seconds, or dirty in an immediate status. Postgres or Redis errors
        propagate; workflows not acknowledged stay dirty for the next pass."""
        parts = sorted(partitions)
        stats = PassStats()
        if not parts:
            return stats
        candidates = self._candidates(parts)
        stats.saturated = len(candidates) > self.max_per_pass
        batches = [self._read(candidates[i:i + self.batch_size], interval)
                   for i in range(0, min(len(candidates), self.max_per_pass), self.batch_size)]
        for batch in batches:
            if not batch.reads:
                continue
            self._hold_back(batch, stop)
            stats.add(self._write(batch))
        return stats

    # -- steps ----------------------------------------------------------------------------------

    def _candidates(self, parts: Sequence[int]) -> list[tuple[int, str]]:
        """Dirty ids of the partitions, oldest first (one round trip)."""
        pipe = self.backend.client.pipeline(transaction=False)
        for i in parts:
            pipe.zrange(self.backend.keys.partition(i).dirty, 0, self.max_per_pass, withscores=True)
        scored = [(score, i, _text(wid)) for i, members in zip(parts, pipe.execute(), strict=True)
                  for wid, score in members]
        scored.sort()
        return [(i, wid) for _, i, wid in scored]

    def _read(self, chunk: Sequence[tuple[int, str]], interval: float) -> _Batch:
        """One round trip: one ``checkpoint_read`` call per partition present in ``chunk``."""
        script = self.backend.scripts.checkpoint_read
        by_part: dict[int, list[str]] = {}
        for i, wid in chunk:
            by_part.setdefault(i, []).append(wid)
        args = [int(interval * 1000), self._immediate, self.max_events]

        def build(pipe: Any) -> None:
            for i, ids in by_part.items():
                part = self.backend.keys.partition(i)
                keys = [part.dirty]
                for wid in ids:
                    keys += [part.workflow(wid), part.events(wid)]
                evalsha(pipe, script, keys, [*args, *ids])

        replies = execute(self.backend.client, build, [script])
        read_at = time.monotonic()
        reads: list[_Read] = []
        for (i, ids), reply in zip(by_part.items(), replies, strict=True):
            read_ms = int(reply[0])
            for wid, result in zip(ids, reply[1:], strict=True):
                if isinstance(result, list):
                    read = self._decode(i, wid, read_ms, result)
                    if read is not None:
                        reads.append(read)
                elif int(result) < 0:
                    reads.append(_Read(i, wid, read_ms))
        return _Batch(reads, read_at)

    def _decode(self, partition: int, wid: str, read_ms: int, result: list[Any]) -> _Read | None:
        flat, entries = result
        raw = {flat[k]: flat[k + 1] for k in range(0, len(flat), 2)}
        try:
            row = SnapshotRow.from_hash(self.backend.keys.namespace, wid, partition, raw)
        except (KeyError, ValueError) as e:
            log.warning("checkpointer: workflow %s has an incomplete hash (%s); skipped", wid, e)
            return None
        events: list[EventRow] = []
        for entry_id, fields in entries:
            values = {fields[k]: fields[k + 1] for k in range(0, len(fields), 2)}
            if b"e" in values:
                events.append(EventRow(wid, _text(entry_id), _text(values[b"e"])))
        return _Read(partition, wid, read_ms, row, events, more=len(entries) >= self.max_events)

    def _hold_back(self, batch: _Batch, stop: threading.Event | None) -> None:
        """Wait until ``fsync_lag`` seconds have passed since the batch was read."""
        remaining = batch.read_at + self.fsync_lag - time.monotonic()
        if remaining <= 0:
            return
        if stop is not None:
            stop.wait(remaining)
        else:
            time.sleep(remaining)

    def _write(self, batch: _Batch) -> PassStats:
        rows = [r.row for r in batch.reads if r.row is not None]
        events = [e for r in batch.reads for e in r.events]
        written, archived = self.store.write_batch(rows, events) if rows or events else (0, 0)
        cleared = self._ack(batch.reads)
        return PassStats(read=len(rows), written=written, events=archived, cleared=cleared)

    def _ack(self, reads: Sequence[_Read]) -> int:
        """One round trip: one ``checkpoint_ack`` call per partition present in ``reads``."""
        script = self.backend.scripts.checkpoint_ack
        by_part: dict[int, list[_Read]] = {}
        for r in reads:
            by_part.setdefault(r.partition, []).append(r)

        def build(pipe: Any) -> None:
            for i, group in by_part.items():
                part = self.backend.keys.partition(i)
                keys = [part.dirty, part.checkpoint_info, *(part.workflow(r.workflow_id) for r in group)]
                args: list[Any] = [min(r.read_ms for r in group), self.owner]
                for r in group:
                    args += [r.workflow_id, r.version, r.last_event, "1" if r.more else "0"]
                evalsha(pipe, script, keys, args)

        results = execute(self.backend.client, build, [script])
        return sum(1 for codes in results for code in codes if int(code) == 1)


def dirty_ages(backend: RedisBackend) -> list[tuple[int, int, int | None]]:
    """Per partition: (index, dirty count, age in ms of the oldest dirty mark or None), by the
    Redis server clock. One round trip."""
    pipe = backend.client.pipeline(transaction=False)
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

