"""Concurrency limits per ``pipeline_config_id``: the decisions, pure.

A workflow with ``is_limit_concurrent``, a ``pipeline_config_id`` and
``max_concurrent_executions > 0`` is *limited*. Its limit is one record (``LimitState``: the
holders, the FIFO of waiters, the maximum last asked for) in the partition of its limit id
(``limit_id``), reached by messages - on a cluster another slot than most of its workflows, so
every step is a message through the outbox and each is idempotent:

* ``LimitAcquire`` (sent by the limited workflow's StartWorkflow instead of starting it): a
  holder or waiter already is answered as before; else a free slot makes it a holder
  (``granted``), a full limit queues it (``buffered``) when it keeps waiting workflows, or
  refuses it (``refused``, the workflow is CANCELED). The answer is a ``LimitDecision`` to the
  workflow.
* ``LimitRelease`` (sent by the commit that ends a limited workflow, in any status, and by a
  ``granted`` answer reaching a workflow that ended or was canceled meanwhile): it leaves the
  holders or the waiters, and the first waiters take the free slots (each gets ``granted``).
* ``StartWaitingWorkflows`` (stabilize's, also an operator's tool): fills free slots from the
  waiters; with ``purge_queue`` the waiters left are refused.

So the holders never exceed the maximum, a slot is freed only by its holder's end, and the
waiters start in arrival order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.keys import limit_routing_id as limit_id
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import LimitAcquire, LimitRelease

GRANTED, BUFFERED, REFUSED = "granted", "buffered", "refused"
DECISIONS = (GRANTED, BUFFERED, REFUSED)


def is_limited(wf: Workflow) -> bool:
    return bool(wf.is_limit_concurrent and wf.pipeline_config_id and wf.max_concurrent_executions > 0)


def acquire_message(wf: Workflow, execution_type: str) -> LimitAcquire:
    """The LimitAcquire a limited workflow sends its limit (its StartWorkflow; recovery)."""
    assert wf.pipeline_config_id is not None
    return LimitAcquire(execution_id=limit_id(wf.pipeline_config_id), execution_type=execution_type,
                        requester_id=wf.id, pipeline_config_id=wf.pipeline_config_id,
                        maximum=wf.max_concurrent_executions, keep_waiting=wf.keep_waiting_pipelines)


def release_for(pipeline_config_id: str, workflow_id: str, execution_type: str) -> LimitRelease:
    """``workflow_id`` gives its slot (or place in line) of ``pipeline_config_id``'s limit back."""
    return LimitRelease(execution_id=limit_id(pipeline_config_id), execution_type=execution_type,
                        requester_id=workflow_id, pipeline_config_id=pipeline_config_id)


def release_message(wf: Workflow, execution_type: str) -> LimitRelease | None:
    """The LimitRelease a limited workflow's final commit sends (None for one not limited)."""
    if not is_limited(wf):
        return None
    assert wf.pipeline_config_id is not None
    return release_for(wf.pipeline_config_id, wf.id, execution_type)


@dataclass
class LimitState:
    """One limit: ``holders`` run, ``waiters`` wait in arrival order, ``maximum`` holders."""

    maximum: int = 0
    holders: list[str] = field(default_factory=list)
    waiters: list[str] = field(default_factory=list)

    @classmethod
    def decode(cls, raw: bytes | None) -> LimitState:
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        return cls(int(data.get("max", 0)), list(data.get("holders", [])), list(data.get("waiters", [])))

    def encode(self) -> str:
        return json.dumps({"max": self.maximum, "holders": self.holders, "waiters": self.waiters},
                          separators=(",", ":"))

    def acquire(self, workflow_id: str, maximum: int, keep_waiting: bool) -> str:
        """The answer to ``workflow_id`` asking for a slot (module docstring); updates self."""
        self.maximum = maximum
        if workflow_id in self.holders:
            return GRANTED
        if workflow_id in self.waiters:
            return BUFFERED
        if len(self.holders) < self.maximum:
            self.holders.append(workflow_id)
            return GRANTED
        if keep_waiting:
            self.waiters.append(workflow_id)
            return BUFFERED
        return REFUSED

    def release(self, workflow_id: str) -> list[str]:
        """``workflow_id`` leaves; returns the waiters that now hold a slot, in order."""
        if workflow_id in self.holders:
            self.holders.remove(workflow_id)
        if workflow_id in self.waiters:
            self.waiters.remove(workflow_id)
        return self.fill()

    def fill(self) -> list[str]:
        """Free slots go to the first waiters; returns them."""
        granted: list[str] = []
        while self.waiters and len(self.holders) < self.maximum:
            nxt = self.waiters.pop(0)
            self.holders.append(nxt)
            granted.append(nxt)
        return granted

    def purge(self) -> list[str]:
        """Every waiter is refused; returns them."""
        refused, self.waiters = self.waiters, []
        return refused


__all__ = ["BUFFERED", "DECISIONS", "GRANTED", "REFUSED", "LimitState", "acquire_message", "is_limited",
           "limit_id", "release_for", "release_message"]
