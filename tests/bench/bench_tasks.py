"""The benchmark's tasks, for ``stabilize-redis worker --app tests.bench.bench_tasks:registry``."""

from __future__ import annotations

import os
from datetime import timedelta

import redis

from stabilize_redis import RetryableTask, StageExecution, Task, TaskRegistry, TaskResult
from tests.bench.workloads import LOOP_TARGET, LOOP_TASK_NAME, TASK_NAME, loop_should_jump


class NoopBench(Task):
    """Returns success with a tiny output at once: measures engine overhead only."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"ok": True})


EMIT_TASK_NAME = "emit_bench"


class EmitBench(Task):
    """Succeeds with an output key of its own (``out_<ref id>``): a chain of these makes every
    descendant's inherited outputs grow with its depth (``bench_chains``)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={f"out_{stage.ref_id}": stage.ref_id})


class LoopBackBench(Task):
    """The LOOP workload's last stage: ``TaskResult.jump_to(LOOP_TARGET)`` until the loop has
    run ``LOOP_PASSES`` times (``workloads.loop_should_jump``), then succeeds like NoopBench."""

    def execute(self, stage: StageExecution) -> TaskResult:
        if loop_should_jump(stage.context):
            return TaskResult.jump_to(LOOP_TARGET)
        return TaskResult.success(outputs={"ok": True})


HOLD_TASK_NAME = "hold_bench"


class HoldBench(RetryableTask):
    """Polls (RUNNING every 10 ms, holding no thread) until the key ``bench:release:<workflow
    id>`` exists on ``STZ_BENCH_URL``; the multi-instance benchmark holds a parent open with it
    while it adds instances."""

    _client: redis.Redis | None = None

    def get_timeout(self) -> timedelta:
        return timedelta(minutes=30)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(milliseconds=10)

    def execute(self, stage: StageExecution) -> TaskResult:
        if HoldBench._client is None:
            HoldBench._client = redis.Redis.from_url(os.environ["STZ_BENCH_URL"])
        if HoldBench._client.exists(f"bench:release:{stage.execution.id}"):
            return TaskResult.success()
        return TaskResult.running()


registry = TaskRegistry()
registry.register(HOLD_TASK_NAME, HoldBench)
registry.register(TASK_NAME, NoopBench)
registry.register(LOOP_TASK_NAME, LoopBackBench)
registry.register(EMIT_TASK_NAME, EmitBench)
