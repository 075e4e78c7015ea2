"""Fencing a checkpointer pass so that a watchdog can abandon it.

A checkpointer runs its passes on a loop thread; each loop thread is one **generation** with
its own ``Fence``. The pass reports progress to the fence (``step`` when it starts a step,
``beat`` when a call returns) and calls ``check`` before every step that writes. The
checkpointer's supervisor (``Checkpointer.run``) reads ``stalled_for()``: a pass that has made
no progress for ``stall_timeout`` seconds is stuck inside a call (a black-holed socket, a
server that never answers). The supervisor then ``abandon()``s the fence and starts a fresh
generation (new owner token, new pool, new thread).

From then on the abandoned thread can write nothing: every PostgreSQL call goes through a
``FencedStore``, which refuses to start a call and, when a call returns late, raises
``Abandoned`` instead of returning (so the Redis acknowledgement that would follow a snapshot
write never runs); the pool of the abandoned generation has its sockets shut down
(``durability.pool.FencedPool.abort``), so a call blocked inside PostgreSQL fails and can
never commit; and the pass checks the fence before refreshing leases, draining, and each write of a sweep or a
re-marking walk. Its leases are released at once (by a helper thread, as that takes Redis) and
never renewed by it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Abandoned(Exception):
    """Raised in a pass whose generation was abandoned by the watchdog: stop, write nothing."""


class Fence:
    """Progress and ownership of one generation's passes (thread-safe)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.abandoned = threading.Event()
        self._lock = threading.Lock()
        self._in_pass = False
        self._beat = time.monotonic()
        self._step = "idle"
        self.reached_postgres = False  # a PostgreSQL call of the current pass succeeded
        self.reached_redis = False  # a Redis round trip of the current pass succeeded

    def begin(self) -> None:
        """A pass starts."""
        with self._lock:
            self._in_pass = True
            self._beat = time.monotonic()
            self._step = "starting a pass"
            self.reached_postgres = self.reached_redis = False

    def end(self) -> None:
        """The pass returned (or raised)."""
        with self._lock:
            self._in_pass = False
            self._step = "idle"

    def step(self, what: str) -> None:
        """The pass moves on to ``what`` (counts as progress); raises Abandoned if abandoned."""
        self.check()
        with self._lock:
            self._beat = time.monotonic()
            self._step = what

    def beat(self) -> None:
        with self._lock:
            self._beat = time.monotonic()

    def enter(self, what: str) -> str:
        """A call ``what`` starts (counts as progress); returns the step to restore after it."""
        self.check()
        with self._lock:
            previous, self._step = self._step, what
            self._beat = time.monotonic()
            return previous

    def leave(self, previous: str) -> None:
        """The call returned: progress, back to step ``previous``."""
        with self._lock:
            self._step = previous
            self._beat = time.monotonic()

    def check(self) -> None:
        if self.abandoned.is_set():
            raise Abandoned(f"checkpointer generation {self.generation} was abandoned")

    def progress(self) -> None:
        """``check``, then count as progress: the callback of loops that write (sweep, re-mark)."""
        self.check()
        self.beat()

    def abandon(self) -> None:
        self.abandoned.set()

    def stalled_for(self) -> tuple[float, str]:
        """(seconds since the last progress of the current pass, its current step); 0 between
        passes."""
        with self._lock:
            if not self._in_pass:
                return 0.0, self._step
            return time.monotonic() - self._beat, self._step


class FencedStore:
    """A SnapshotStore seen through a Fence: each public method call checks the fence first,
    records its progress, and raises ``Abandoned`` when it returns after the fence was
    abandoned; a successful call marks the pass as having reached PostgreSQL. Attributes that
    are not callables are passed through."""

    def __init__(self, store: Any, fence: Fence) -> None:
        self._store = store
        self._fence = fence

    @property
    def inner(self) -> Any:
        return self._store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name.startswith("_") or not callable(value):
            return value
        return self._fenced(name, value)

    def _fenced(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        fence = self._fence

        def fenced(*args: Any, **kwargs: Any) -> Any:
            previous = fence.enter(f"PostgreSQL {name}()")
            try:
                result = call(*args, **kwargs)
            finally:
                fence.leave(previous)
            fence.check()
            fence.reached_postgres = True
            return result

        return fenced
