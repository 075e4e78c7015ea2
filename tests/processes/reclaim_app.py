"""Task app of the reclaim tests: one task, ``hold``, that blocks until the test releases it.

``hold`` appends ``[stage ref, pid, "start" | "done", epoch seconds]`` (JSON) to the list
``log_key(ns, workflow id)`` when it starts and when it returns, and blocks in between until the
key ``release_key(ns, workflow id, stage ref)`` exists. It gives up after ``HOLD_LIMIT_S`` and
fails terminally, so a task left blocked by a failing test cannot spin for ever.
"""

from __future__ import annotations

import json
import os
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult

HOLD_LIMIT_S = 60.0


def log_key(ns: str, workflow_id: str) -> str:
    """List of the ``hold`` records of one workflow."""
    return f"{ns}:test:log:{workflow_id}"


def release_key(ns: str, workflow_id: str, ref: str) -> str:
    """Key whose existence lets the ``hold`` task of stage ``ref`` return."""
    return f"{ns}:test:go:{workflow_id}:{ref}"


_client = redis.Redis.from_url(os.environ.get("STZ_TEST_URL", "redis://127.0.0.1:6379/0"))
_ns = os.environ.get("STZ_TEST_NS", "")


def _record(stage: StageExecution, event: str) -> None:
    entry = [stage.ref_id, os.getpid(), event, time.time()]
    _client.rpush(log_key(_ns, stage.execution.id), json.dumps(entry))


def hold(stage: StageExecution) -> TaskResult:
    """Block until released (then succeed) or ``HOLD_LIMIT_S`` passed (then fail terminally)."""
    _record(stage, "start")
    key = release_key(_ns, stage.execution.id, stage.ref_id)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not _client.exists(key):
        if time.monotonic() > deadline:
            return TaskResult.terminal(f"{stage.ref_id} was never released")
        time.sleep(0.01)
    _record(stage, "done")
    return TaskResult.success()


registry = TaskRegistry()
registry.register("hold", hold)
