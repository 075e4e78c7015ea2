"""Riding out a dependency that goes away (Redis, mostly): capped exponential backoff, and
logging one line per state change instead of one traceback per failed attempt.

``OutageLog`` reports the health of one loop (or of one kind of failure of a component):

* the first failure logs one line (WARNING unless ``level`` says otherwise)
  ``<what>: down (<error>); retrying``, or ``<what>: <message>`` when the caller words it;
* while the failures go on, ``<what>: still down after N s (<k> failed attempts; last error:
  <error>)`` at most every ``repeat_s`` seconds (default 15; 0: no such lines);
* the first success after that (``ok()``; the caller decides what counts as one) logs
  ``<what>: recovered after N s (<k> failures)``.

Tracebacks are logged at DEBUG only (one per failure), except for errors that are not of an
``expected`` type (a bug rather than an outage): the state-change line carries their traceback.
With ``quiet_flaps`` (the default, for worker loops), a loop that flaps (fails again within
``repeat_s`` of its last line) does not log a new "down" line each time: the brief failures are
counted and mentioned in the next line, so the number of lines stays bounded by time, not by
the number of attempts. Without it (the checkpointer, ``durability.health``) every outage logs
its "down" line, however soon after the last one.

``redis_unavailable`` tells errors that mean "Redis cannot serve right now" (unreachable,
loading, out of memory, read-only replica, busy script, a cluster failover in progress) from
errors caused by the command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

STILL_DOWN_EVERY_S = 15.0
"""Default interval of the "still down" lines."""

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError (LOADING) and AuthenticationError
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    # A Redis Cluster in a failover: a slot moved (redis-py follows MOVED/ASK and refreshes its
    # slot map, but a redirection it gave up on surfaces), no node answers for a slot, or the
    # startup nodes cannot be reached - the same as one Redis restarting.
    redis.exceptions.AskError,  # MovedError too
    redis.exceptions.RedisClusterException,  # SlotNotCoveredError, "cannot be connected", ...
)
_UNAVAILABLE_PREFIXES = ("BUSY ", "LOADING", "MISCONF", "NOREPLICAS", "OOM", "READONLY", "MASTERDOWN",
                         "UNBLOCKED", "CLUSTERDOWN", "TRYAGAIN")
"""``UNBLOCKED``: a blocked read ended because its master became a replica (a failover)."""


def redis_unavailable(error: BaseException) -> bool:
    """True when ``error`` says Redis cannot serve at the moment (and retrying the same command
    later can succeed), False when the command itself failed (wrong type, script error, ...)."""
    if isinstance(error, _UNAVAILABLE_TYPES):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith(_UNAVAILABLE_PREFIXES)


def describe(error: BaseException) -> str:
    """One line naming an error: its type and message (never a traceback)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Backoff:
    """Capped exponential delays: ``initial`` after the first failure, doubling after each
    further one up to ``cap``; ``reset()`` after a success."""

    def __init__(self, initial: float = 0.2, cap: float = 10.0) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        """The delay to wait before the next attempt (and double the one after)."""
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return min(delay, self.cap)

    def reset(self) -> None:
        self._next = self.initial


class OutageLog:
    """The state (up / down) of one loop, logged once per change; thread-safe.

    ``what`` names the loop in every line. ``expected`` are the error types of an outage
    (logged without traceback); others get a traceback on their state-change line. ``level``:
    that of the "down" line. ``quiet_flaps``: see the module docstring."""

    def __init__(self, logger: logging.Logger, what: str, *, repeat_s: float = STILL_DOWN_EVERY_S,
                 expected: tuple[type[BaseException], ...] = (redis.RedisError,
                                                              redis.exceptions.RedisClusterException),
                 clock: Callable[[], float] = time.monotonic, quiet_flaps: bool = True,
                 level: int = logging.WARNING) -> None:
        self.logger = logger
        self.what = what
        self.repeat_s = repeat_s
        self.expected = expected
        self.clock = clock
        self.quiet_flaps = quiet_flaps
        self.level = level
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._announced = False  # this outage's "down" line was logged
        self._last_line: float | None = None  # when the last down / still-down line was logged
        self._failures = 0
        self._blips = 0  # short outages not logged (flapping) since the last line

    @property
    def down(self) -> bool:
        with self._lock:
            return self._down_since is not None

    def down_for(self) -> float:
        """Seconds since the current outage began (0 when up)."""
        with self._lock:
            return 0.0 if self._down_since is None else self.clock() - self._down_since

    def failed(self, error: BaseException, detail: str = "", *, message: str = "") -> None:
        """Record one failed attempt; logs at most one line (see the module docstring).
        ``message`` words the "down" line (default: ``down (<error>); retrying``)."""
        now = self.clock()
        text = describe(error) + (f"; {detail}" if detail else "")
        trace = None if isinstance(error, self.expected) else error
        with self._lock:
            self._failures += 1
            recent = self._last_line is not None and now - self._last_line < self.repeat_s
            if self._down_since is None:
                self._down_since = now
                self._failures = 1
                self._announced = not (recent and self.quiet_flaps)
                if self._announced:
                    self._line(now, self.level, "%s: %s%s", self.what, message or f"down ({text}); retrying",
                               self._blip_note(), trace=trace)
            elif self.repeat_s > 0 and not recent:
                seconds = now - self._down_since
                state = "still down after" if self._announced else "down for"
                self._announced = True
                self._line(now, logging.WARNING, "%s: %s %.0fs (%d failed attempts; last error: %s)%s", self.what,
                           state, seconds, self._failures, text, self._blip_note(), trace=trace)
        self.logger.debug("%s: attempt failed", self.what, exc_info=error)

    def ok(self, note: str = "") -> None:
        """Record a success; logs the recovery (with ``note`` appended) when the outage was
        announced."""
        with self._lock:
            if self._down_since is None:
                return
            seconds = self.clock() - self._down_since
            if self._announced:
                self.logger.warning("%s: recovered after %.1fs (%d failures)%s", self.what, seconds, self._failures,
                                    f"; {note}" if note else "")
            else:
                self._blips += 1
            self._down_since = None
            self._failures = 0
            self._announced = False

    def _blip_note(self) -> str:
        note = f" (and {self._blips} brief outages since the last report)" if self._blips else ""
        self._blips = 0
        return note

    def _line(self, now: float, level: int, fmt: str, *args: object, trace: BaseException | None) -> None:
        self._last_line = now
        self.logger.log(level, fmt, *args, exc_info=trace)
