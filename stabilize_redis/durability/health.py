"""What the checkpointer says about the services it depends on: the truth, once per change.

Failures come in kinds: ``postgres`` (unreachable), ``schema`` (not migrated),
``postgres-error`` (any other PostgreSQL error), ``redis`` and ``error`` (a bug). Per kind:

* the first failure logs one ERROR line (what failed and what the engine does meanwhile);
* while it lasts, at most one WARNING ``<kind> still down after N s (last error: ...)`` every
  ``report_every`` seconds (``STABILIZE_CHECKPOINT_OUTAGE_REPORT_EVERY``, default 60);
* one WARNING ``<kind> recovered after N s`` — only when the caller confirms it: a PostgreSQL
  kind recovers only after an operation that really reached PostgreSQL succeeded, ``redis``
  only after a Redis round trip succeeded (``Checkpointer`` probes when a pass had no such
  operation). A pass that touched neither proves nothing and clears nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

POSTGRES_KINDS = frozenset({"postgres", "schema", "postgres-error"})
REDIS_KINDS = frozenset({"redis"})


@dataclass
class _Outage:
    since: float
    last_report: float
    failures: int = 1
    last_error: str = ""


class OutageReport:
    """The ongoing failures of one checkpointer (thread-safe); see the module docstring."""

    def __init__(self, logger: logging.Logger, report_every: float = 60.0) -> None:
        self.logger = logger
        self.report_every = report_every
        self._lock = threading.Lock()
        self._outages: dict[str, _Outage] = {}

    @property
    def failing(self) -> list[str]:
        with self._lock:
            return sorted(self._outages)

    def failed(self, kind: str, message: str, error: str, *, exc_info: BaseException | None = None) -> None:
        """One failed attempt of ``kind``: ``message`` is the line logged when it starts,
        ``error`` a one-line description of this attempt's error."""
        now = time.monotonic()
        with self._lock:
            outage = self._outages.get(kind)
            if outage is None:
                self._outages[kind] = _Outage(since=now, last_report=now, last_error=error)
                self.logger.error("checkpointer: %s", message, exc_info=exc_info)
                return
            outage.failures += 1
            outage.last_error = error
            if self.report_every > 0 and now - outage.last_report >= self.report_every:
                outage.last_report = now
                self.logger.warning("checkpointer: %s still down after %.0fs (%d failed attempts; last error: %s)",
                                    kind, now - outage.since, outage.failures, error)

    def recovered(self, kinds: frozenset[str] | None = None) -> None:
        """The failures of ``kinds`` (None: every kind) are over: log each recovery once."""
        now = time.monotonic()
        with self._lock:
            for kind in sorted(self._outages):
                if kinds is None or kind in kinds:
                    outage = self._outages.pop(kind)
                    self.logger.warning("checkpointer: %s recovered after %.1fs (%d failed attempts); catching up",
                                        kind, now - outage.since, outage.failures)
