"""How durable a submit is when ``submit`` returns: the setting and its parsing.

``client.submit(workflow, durability=...)`` (or ``STABILIZE_SUBMIT_DURABILITY``) takes:

* ``"memory"`` (the default): the Redis primary has the workflow in memory. With
  ``appendfsync everysec`` a Redis crash within about a second of the submit can lose it;
  with ``appendfsync always`` the write is on the primary's disk before the submit returns.
* ``"replicas:N"``: additionally wait (Redis ``WAIT``) until N replicas have the write. It
  survives the loss of the primary when a replica is promoted (Sentinel or Cluster failover);
  a primary restarted from its own AOF still loses what its AOF lost, and the replicas follow it.
* ``"checkpoint"``: additionally write the workflow's snapshot to PostgreSQL before returning
  (needs a DSN). Whatever Redis then loses, ``restore`` and the checkpointer's reconciliation
  bring the workflow back from PostgreSQL.

When the confirmation does not arrive within ``STABILIZE_SUBMIT_DURABILITY_TIMEOUT`` seconds
(default 5), ``submit`` raises :class:`SubmitNotDurable`: the workflow *was* stored and may run,
only its durability is unconfirmed. Submitting the same workflow again is harmless (nothing is
written twice) and waits for the confirmation again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stabilize_redis.config import env_float

DURABILITY_ENV = "STABILIZE_SUBMIT_DURABILITY"
TIMEOUT_ENV = "STABILIZE_SUBMIT_DURABILITY_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0

MEMORY = "memory"
REPLICAS = "replicas"
CHECKPOINT = "checkpoint"


class SubmitNotDurable(RuntimeError):
    """The workflow was stored, but the requested durability was not confirmed in time."""

    def __init__(self, workflow_id: str, reason: str) -> None:
        super().__init__(f"workflow {workflow_id} was submitted but is not confirmed durable: {reason}")
        self.workflow_id = workflow_id
        self.reason = reason


@dataclass(frozen=True)
class Durability:
    """A parsed durability setting: ``mode`` and, for ``replicas``, how many."""

    mode: str = MEMORY
    replicas: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def parse(cls, value: str | None = None, timeout_s: float | None = None) -> Durability:
        """``value`` (else ``STABILIZE_SUBMIT_DURABILITY``, else ``memory``); raises ValueError
        naming the accepted forms for anything else."""
        raw = (value if value is not None else os.environ.get(DURABILITY_ENV) or MEMORY).strip().lower()
        if timeout_s is None:
            timeout_s = env_float(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        if not timeout_s > 0 or timeout_s != timeout_s:
            raise ValueError(f"submit durability timeout must be a positive number of seconds, got {timeout_s!r}")
        if raw in (MEMORY, CHECKPOINT):
            return cls(raw, 0, timeout_s)
        mode, sep, count = raw.partition(":")
        if mode == REPLICAS and sep and count.isdigit() and int(count) >= 1:
            return cls(REPLICAS, int(count), timeout_s)
        raise ValueError(f"submit durability {raw!r}: expected 'memory', 'replicas:N' (N >= 1) or 'checkpoint'")
