"""Task registry of the worker processes of ``test_multi_instance_races``. Every execution is
counted in ``{ns}:test:exec:{wf}`` (by ref id). ``hold`` marks ``{ns}:test:held:{wf}`` and
returns RUNNING (polled, holding no thread) until the test sets ``{ns}:test:release:{wf}``;
``quick`` outputs ``value`` (the context's ``item``, else the instance index)."""

from __future__ import annotations

import os
from datetime import timedelta

import redis

from stabilize_redis import RetryableTask, StageExecution, TaskRegistry, TaskResult

_client = redis.Redis.from_url(os.environ["STZ_TEST_URL"])
_ns = os.environ["STZ_TEST_NS"]


def _count(stage: StageExecution) -> None:
    _client.hincrby(f"{_ns}:test:exec:{stage.execution.id}", stage.ref_id, 1)


class Hold(RetryableTask):
    """Runs until the test releases the workflow (RUNNING, polled every 20 ms)."""

    def get_timeout(self) -> timedelta:
        return timedelta(seconds=120)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(milliseconds=20)

    def execute(self, stage: StageExecution) -> TaskResult:
        wf = stage.execution.id
        _client.set(f"{_ns}:test:held:{wf}", 1)
        if not _client.exists(f"{_ns}:test:release:{wf}"):
            return TaskResult.running()
        _count(stage)
        return TaskResult.success()


def quick(stage: StageExecution) -> TaskResult:
    _count(stage)
    if "item" not in stage.context and "_mi_instance_index" not in stage.context:
        return TaskResult.success()
    return TaskResult.success(outputs={"value": stage.context.get("item", stage.context.get("_mi_instance_index"))})


registry = TaskRegistry()
registry.register("hold", Hold())
registry.register("quick", quick)
