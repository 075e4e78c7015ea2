"""Task registry served by the worker processes of the multi-process tests.

Each task records, in the test's own namespace, how often it ran per (workflow, stage) and how
many tasks each worker pid is running right now, so the test can kill a worker mid-task.
"""

from __future__ import annotations

import os
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult

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


registry = TaskRegistry()
registry.register("work", work)
