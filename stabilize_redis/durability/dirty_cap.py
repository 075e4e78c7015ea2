"""Bounded dirty sets: what happens to dirty marks when no checkpointer clears them.

Every commit marks its workflow dirty (``ZADD NX`` into the partition's dirty set) and only a
checkpointer clears marks. Without a DSN nothing would: the sets would grow by one entry per
workflow for ever. So:

**Trim** (``trim_dirty``; ``DirtyCap`` runs it every ``STABILIZE_DIRTY_TRIM_INTERVAL`` seconds,
default 60, 0 disables, in each worker process that runs no checkpointer). When no checkpointer
has been seen in the namespace's census (``lua/checkpoint_census.lua``) for ``census_grace``
seconds (default 60), each partition's dirty set is cut by ``lua/dirty_trim.lua`` to marks
younger than ``STABILIZE_DIRTY_MAX_AGE`` (default 3600 s) and to at most
``STABILIZE_DIRTY_MAX_SIZE`` marks (default 10000 per partition), oldest first, and the
partition's *trimmed* marker (``PartitionKeys.dirty_trimmed``) is incremented. While the census
shows a checkpointer, nothing is trimmed: marks then wait for it, however many.

**Repair** (``DirtyRepair``, in every checkpointer). A dropped mark must not mean a workflow
never reaches PostgreSQL, finished or not: a checkpointer that holds a partition with a trimmed
marker walks the partition's workflow index (``ZSCAN``, a few pages per pass, so draining goes
on meanwhile) and marks dirty again (``lua/dirty_remark.lua``) every workflow whose latest
version or latest events are not in PostgreSQL (``ckpt`` < ``ver``, or an event after
``ckpt_ev``). Finished workflows are re-marked too, so they are saved and later evicted instead
of staying in Redis for ever. At the end of the walk the marker is deleted if no trim happened
meanwhile (its value is compared); otherwise the walk runs again. A trim therefore costs one
walk of the index later and loses nothing; within the age and size bounds a checkpointer that
starts late (or restarts) needs no walk at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.config import env_float, env_int
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.periodic import PeriodicThread

log = logging.getLogger("stabilize_redis.checkpointer")

MAX_AGE_ENV = "STABILIZE_DIRTY_MAX_AGE"
MAX_SIZE_ENV = "STABILIZE_DIRTY_MAX_SIZE"
TRIM_INTERVAL_ENV = "STABILIZE_DIRTY_TRIM_INTERVAL"


@dataclass(frozen=True)
class DirtyCapSettings:
    """Bounds of a dirty set nobody drains (see the module docstring). ``max_age`` seconds
    (0: no age bound), ``max_size`` marks per partition (negative: no size bound), ``every``
    seconds between trims (0: never), ``census_grace`` seconds without any checkpointer in the
    census before trimming, ``batch`` marks dropped per script call at most."""

    max_age: float = 3600.0
    max_size: int = 10000
    every: float = 60.0
    census_grace: float = 60.0
    batch: int = 5000

    @classmethod
    def from_env(cls, **overrides: Any) -> DirtyCapSettings:
        d = cls()
        values: dict[str, Any] = {"max_age": env_float(MAX_AGE_ENV, d.max_age),
                                  "max_size": env_int(MAX_SIZE_ENV, d.max_size),
                                  "every": env_float(TRIM_INTERVAL_ENV, d.every)}
        return cls(**{**values, **overrides})


def live_checkpointers(backend: RedisBackend, grace: float) -> int:
    """How many checkpointers the namespace's census saw in the last ``grace`` seconds (by the
    Redis clock). One round trip; writes nothing."""
    pipe = pipeline(backend.client)
    pipe.time()
    pipe.hvals(backend.keys.checkpointers)
    (secs, micros), seen = pipe.execute()
    now = int(secs) * 1000 + int(micros) // 1000
    return sum(1 for ms in seen if int(ms) >= now - grace * 1000)


def trim_dirty(backend: RedisBackend, settings: DirtyCapSettings | None = None) -> int:
    """If no checkpointer is live (see ``live_checkpointers``), cut every partition's dirty set
    to the bounds of ``settings``; returns how many marks were dropped (0 when one is live)."""
    s = settings or DirtyCapSettings()
    if live_checkpointers(backend, s.census_grace) > 0:
        return 0
    script = backend.scripts.dirty_trim
    args = [int(s.max_age * 1000), s.max_size, max(1, s.batch)]
    pending = list(range(backend.keys.partitions))
    dropped = 0
    while pending:

        def build(pipe: Any, parts: list[int] = pending) -> None:
            for i in parts:
                part = backend.keys.partition(i)
                evalsha(pipe, script, [part.dirty, part.dirty_trimmed], args)

        results = execute(backend.client, build, [script])
        dropped += sum(int(r[0]) for r in results)
        pending = [i for i, r in zip(pending, results, strict=True) if int(r[1]) > 0]
    return dropped


class DirtyCap(PeriodicThread):
    """Runs ``trim_dirty`` every ``settings.every`` seconds (a worker without checkpointer)."""

    thread_name = "stz-dirty-cap"

    def __init__(self, backend: RedisBackend, settings: DirtyCapSettings | None = None) -> None:
        self.settings = settings or DirtyCapSettings.from_env()
        super().__init__(self.settings.every)
        self.backend = backend
        self.dropped = 0

    def tick(self) -> bool:
        dropped = trim_dirty(self.backend, self.settings)
        if dropped:
            self.dropped += dropped
            log.info("dirty marks: dropped %d (no checkpointer for %.0fs; bounds %.0fs / %d per partition); "
                     "a checkpointer that starts later re-marks every unsaved workflow", dropped,
                     self.settings.census_grace, self.settings.max_age, self.settings.max_size)
        return False


@dataclass
class _Walk:
    marker: bytes
    cursor: int = 0
    marked: int = 0


class DirtyRepair:
    """A checkpointer's re-marking of trimmed partitions (see the module docstring).

    ``run`` looks for trimmed markers of the given partitions at most every ``check_every``
    seconds (one round trip) and advances the walks under way by up to ``pages`` pages of
    ``page`` workflows (each one ``ZSCAN`` plus one ``lua/dirty_remark.lua`` call)."""

    def __init__(self, backend: RedisBackend, *, page: int = 200, pages: int = 10,
                 check_every: float = 5.0) -> None:
        self.backend = backend
        self.page = page
        self.pages = pages
        self.check_every = check_every
        self._walks: dict[int, _Walk] = {}
        self._checked = float("-inf")
        self._script = backend.scripts.dirty_remark

    @property
    def walking(self) -> list[int]:
        """Partitions whose walk is under way."""
        return sorted(self._walks)

    def _look(self, parts: list[int]) -> None:
        pipe = pipeline(self.backend.client)
        for i in parts:
            pipe.get(self.backend.keys.partition(i).dirty_trimmed)
        for i, marker in zip(parts, pipe.execute(), strict=True):
            if marker is None:
                self._walks.pop(i, None)
            elif i not in self._walks:
                self._walks[i] = _Walk(marker)

    def run(self, partitions: Iterable[int], *, force: bool = False,
            check: Callable[[], None] | None = None) -> int:
        """Re-mark what the walks reach; returns how many workflows were marked. ``force``
        looks for markers now and finishes every walk. ``check`` is called before each write
        (it raises to stop: the checkpointer's fence)."""
        parts = sorted(partitions)
        for i in [i for i in self._walks if i not in parts]:
            del self._walks[i]  # no longer held: its next holder walks it
        now = time.monotonic()
        if parts and (force or now - self._checked >= self.check_every):
            self._checked = now
            self._look(parts)
        marked = 0
        budget = self.pages
        for i in sorted(self._walks):
            while force or budget > 0:
                budget -= 1
                done, n = self._step(i, self._walks[i], check)
                marked += n
                if done:
                    del self._walks[i]
                    break
        return marked

    def _step(self, partition: int, walk: _Walk, check: Callable[[], None] | None) -> tuple[bool, int]:
        part = self.backend.keys.partition(partition)
        cursor, entries = self.backend.client.zscan(part.workflows, walk.cursor, count=self.page)
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in entries]
        last = int(cursor) == 0
        keys = [part.dirty, part.dirty_trimmed, part.quarantine]
        for wid in ids:
            keys += [part.workflow(wid), part.events(wid)]
        if check is not None:
            check()
        marked, cleared = self._script(keys=keys, args=[walk.marker, "1" if last else "0", *ids])
        walk.cursor = int(cursor)
        walk.marked += int(marked)
        if last:
            log.info("checkpointer: partition %d had trimmed dirty marks; re-marked %d unsaved workflows%s",
                     partition, walk.marked, "" if int(cleared) else " (trimmed again meanwhile: walking again)")
            if not int(cleared):
                self._checked = float("-inf")
        return last, int(marked)
