"""What the checkpointer says about the services it depends on: the truth, once per change.

Failures come in kinds: ``postgres`` (unreachable), ``schema`` (not migrated),
``postgres-error`` (any other PostgreSQL error), ``redis`` and ``error`` (a bug). Each kind is
one ``stabilize_redis.outage.OutageLog`` (the mechanism the worker loops use), set up so that:

* the first failure logs one ERROR line (what failed and what the engine does meanwhile), also
  when it comes soon after the previous outage of that kind ended;
* while it lasts, at most one WARNING ``<kind> ... still down after N s (last error: ...)`` every
  ``report_every`` seconds (``STABILIZE_CHECKPOINT_OUTAGE_REPORT_EVERY``, default 60; 0: none);
* one WARNING ``<kind> ... recovered after N s`` — only when the caller confirms it: a PostgreSQL
  kind recovers only after an operation that really reached PostgreSQL succeeded, ``redis``
  only after a Redis round trip succeeded (``Checkpointer`` probes when a pass had no such
  operation). A pass that touched neither proves nothing and clears nothing.
"""

from __future__ import annotations

import logging

import psycopg
import redis

from stabilize_redis.outage import OutageLog

POSTGRES_KINDS = frozenset({"postgres", "schema", "postgres-error"})
REDIS_KINDS = frozenset({"redis"})
KINDS = POSTGRES_KINDS | REDIS_KINDS | {"error"}


class OutageReport:
    """The ongoing failures of one checkpointer, one ``OutageLog`` per kind; see the module
    docstring."""

    def __init__(self, logger: logging.Logger, report_every: float = 60.0) -> None:
        self._logs = {kind: OutageLog(logger, f"checkpointer ({kind})", repeat_s=report_every,
                                      expected=(psycopg.Error, redis.RedisError), quiet_flaps=False,
                                      level=logging.ERROR)
                      for kind in sorted(KINDS)}

    @property
    def failing(self) -> list[str]:
        return [kind for kind, outage in self._logs.items() if outage.down]

    def failed(self, kind: str, error: BaseException, message: str) -> None:
        """One failed attempt of ``kind``: ``message`` is the line logged when it starts."""
        self._logs[kind].failed(error, message=message)

    def recovered(self) -> None:
        """Every ongoing failure is over: log each recovery once."""
        for outage in self._logs.values():
            outage.ok("catching up")
