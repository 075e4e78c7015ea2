"""Task registry of the worker processes of ``test_mutex_races``: every task records in the
test's namespace whether another task of the same (workflow, mutex key) was executing when it
started - an exact overlap check across processes, with no clocks - and how often each stage ran."""

from __future__ import annotations

import os
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult

_client = redis.Redis.from_url(os.environ["STZ_TEST_URL"])
_ns = os.environ["STZ_TEST_NS"]


def critical(stage: StageExecution) -> TaskResult:
    """A stage with a mutex_key holds ``{ns}:test:in:{wf}:{key}`` (an execution count) while it works; a start that finds
    it above zero is an overlap, counted in ``{ns}:test:overlaps``."""
    wf = stage.execution.id
    inside = f"{_ns}:test:in:{wf}:{stage.mutex_key}"
    _client.hincrby(f"{_ns}:test:exec:{wf}", stage.ref_id, 1)
    if stage.mutex_key is None:
        time.sleep(float(stage.context.get("work_s", 0.01)))
        return TaskResult.success(outputs={"picked": stage.ref_id})
    if int(_client.incr(inside)) > 1:
        _client.incr(f"{_ns}:test:overlaps")
    try:
        time.sleep(float(stage.context.get("work_s", 0.01)))
    finally:
        _client.decr(inside)
    return TaskResult.success(outputs={"picked": stage.ref_id})


registry = TaskRegistry()
registry.register("critical", critical)
