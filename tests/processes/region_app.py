"""Task registry of the worker processes of ``test_region_races``. Every execution is counted in
``{ns}:test:exec:{wf}`` (by ref id). ``until_canceled`` marks its stage in
``{ns}:test:started:{wf}``, works until its cancellation token fires (at most 30 s) and, if it
fired, adds its ref id to ``{ns}:test:token:{wf}``; its ``on_cancel`` adds the ref id to
``{ns}:test:on_cancel:{wf}``. ``quick`` just succeeds."""

from __future__ import annotations

import os
import threading

import redis

from stabilize_redis import StageExecution, Task, TaskRegistry, TaskResult, is_cancellation_requested

_client = redis.Redis.from_url(os.environ["STZ_TEST_URL"])
_ns = os.environ["STZ_TEST_NS"]


def _count(stage: StageExecution) -> None:
    _client.hincrby(f"{_ns}:test:exec:{stage.execution.id}", stage.ref_id, 1)


class UntilCanceled(Task):
    """Works until canceled; records that it started and whether it saw its token."""

    def execute(self, stage: StageExecution) -> TaskResult:
        _count(stage)
        wf = stage.execution.id
        _client.sadd(f"{_ns}:test:started:{wf}", stage.ref_id)
        idle = threading.Event()
        for _ in range(3000):  # cooperative: the token is this task's only way to stop early
            if is_cancellation_requested():
                _client.sadd(f"{_ns}:test:token:{wf}", stage.ref_id)
                break
            idle.wait(0.01)
        return TaskResult.success()

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        _client.sadd(f"{_ns}:test:on_cancel:{stage.execution.id}", stage.ref_id)
        return None


def quick(stage: StageExecution) -> TaskResult:
    _count(stage)
    return TaskResult.success()


registry = TaskRegistry()
registry.register("until_canceled", UntilCanceled())
registry.register("quick", quick)
