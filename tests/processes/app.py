"""Task registry served by the worker processes of the multi-process tests.

Each task records, in the test's own namespace, how often it ran per (workflow, stage) and how
many tasks each worker pid is running right now, so the test can kill a worker mid-task.
"""

from __future__ import annotations

import os
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult, is_cancellation_requested

_client = redis.Redis.from_url(os.environ["STZ_TEST_URL"])
_ns = os.environ["STZ_TEST_NS"]


def work(stage: StageExecution) -> TaskResult:
    pid = str(os.getpid())
    wf = stage.execution.id
    _client.hincrby(f"{_ns}:test:running", pid, 1)
    try:
        _client.hincrby(f"{_ns}:test:exec:{wf}", stage.ref_id, 1)
        time.sleep(float(stage.context.get("work_s", 0.02)))
        return TaskResult.success(outputs={f"done_{stage.ref_id}": True, "trail": [stage.ref_id]})
    finally:
        _client.hincrby(f"{_ns}:test:running", pid, -1)


def wait_for_cancel(stage: StageExecution) -> TaskResult:
    """Runs until its cancellation token fires (at most 30 s), recording that it saw it."""
    key = f"{_ns}:test:cancel:{stage.execution.id}"
    _client.hset(key, "running", os.getpid())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if is_cancellation_requested():
            _client.hset(key, "saw_cancel", 1)
            return TaskResult.canceled()
        time.sleep(0.01)
    return TaskResult.success()


registry = TaskRegistry()
registry.register("work", work)
registry.register("wait_for_cancel", wait_for_cancel)
