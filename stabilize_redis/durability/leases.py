"""Per-partition leases: at most one checkpointer drains a partition at a time, and the live
checkpointers share the partitions evenly.

A lease is a key in the partition's hash tag holding its owner's token, taken with SET NX PX and
extended by its owner (``lua/checkpoint_lease.lua``). Every checkpointer also records itself in
the namespace's census (``lua/checkpoint_census.lua``) and holds at most its fair share,
``ceil(partitions / live checkpointers)``: it gives up extra leases and takes free ones up to
its share, trying partitions in an order that starts at a point derived from its token. A
checkpointer that dies stops renewing; its census entry and leases expire after ``ttl`` and the
others take its partitions over.

Leases are an efficiency measure only: correctness never depends on them, because snapshot
writes are version-guarded and dirty marks are cleared by compare.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
import zlib
from typing import Any

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.redis_ops import evalsha, execute

log = logging.getLogger("stabilize_redis.checkpointer")


def owner_token() -> str:
    """A token naming this process uniquely: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PartitionLeases:
    """The leases one checkpointer holds. ``refresh`` (at most every ``ttl / 3`` seconds, or
    every ``EAGER_PERIOD`` while it holds fewer than its share, unless forced) renews its census
    entry, extends the leases it keeps, gives up those beyond its share and tries to take free
    ones up to it."""

    EAGER_PERIOD = 0.25

    def __init__(self, backend: RedisBackend, owner: str, ttl: float = 5.0) -> None:
        self.backend = backend
        self.owner = owner
        self.ttl = ttl
        self.held: set[int] = set()
        self.share = backend.keys.partitions
        n = backend.keys.partitions
        start = zlib.crc32(owner.encode()) % n
        self._order = [(start + k) % n for k in range(n)]
        self._refreshed = float("-inf")

    @property
    def refreshed_at(self) -> float:
        """``time.monotonic()`` of the last refresh that talked to Redis (-inf: none yet)."""
        return self._refreshed

    def _call(self, op: str, partitions: list[int]) -> list[bool]:
        script = self.backend.scripts.checkpoint_lease
        ttl_ms = int(self.ttl * 1000)

        def build(pipe: Any) -> None:
            for i in partitions:
                evalsha(pipe, script, [self.backend.keys.partition(i).checkpoint_lease], [op, self.owner, ttl_ms])

        if not partitions:
            return []
        return [int(r) == 1 for r in execute(self.backend.client, build, [script])]

    def _census(self, op: str) -> int:
        script = self.backend.scripts.checkpoint_census

        def build(pipe: Any) -> None:
            evalsha(pipe, script, [self.backend.keys.checkpointers], [op, self.owner, int(self.ttl * 1000)])

        return int(execute(self.backend.client, build, [script])[0])

    def refresh(self, force: bool = False) -> set[int]:
        """Renew, share and take leases (if due, or ``force``); returns the partitions held."""
        now = time.monotonic()
        # Below its share a checkpointer looks for free partitions more often, so partitions
        # another one gave up are taken over within a fraction of a second.
        period = self.ttl / 3 if len(self.held) >= self.share else min(self.ttl / 3, self.EAGER_PERIOD)
        if not force and now - self._refreshed < period:
            return self.held
        live = max(1, self._census("join"))
        self.share = math.ceil(self.backend.keys.partitions / live)
        keep = [i for i in self._order if i in self.held][: self.share]
        extra = sorted(self.held - set(keep))
        results = self._call("acquire", keep)
        held = {i for i, ok in zip(keep, results, strict=True) if ok}
        if extra:
            self._call("release", extra)
        if len(held) < self.share:
            free = [i for i in self._order if i not in held and i not in extra]
            taken = [i for i, ok in zip(free, self._call("acquire", free), strict=True) if ok]
            room = self.share - len(held)
            held.update(taken[:room])
            self._call("release", taken[room:])
        gained, lost = held - self.held, self.held - held
        if gained or lost:
            log.debug("checkpointer %s: %d live, share %d, leases %s (gained %s, lost %s)", self.owner, live,
                      self.share, sorted(held), sorted(gained), sorted(lost))
        self.held = held
        self._refreshed = now
        return held

    def release(self) -> None:
        """Give up every lease held and leave the census (others take over at once)."""
        held = sorted(self.held)
        self.held = set()
        self._refreshed = float("-inf")
        self._call("release", held)
        self._census("leave")

    def release_all(self) -> None:
        """Give up every lease of the namespace this owner holds, whatever ``held`` says (another
        thread may be inside ``refresh``), and leave the census. For a watchdog retiring an
        owner whose thread is stuck."""
        self.held = set()
        self._call("release", list(range(self.backend.keys.partitions)))
        self._census("leave")
