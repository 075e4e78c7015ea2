"""Code run in worker processes spawned by the integration tests (importable, picklable)."""

from __future__ import annotations

import os

import redis

from stabilize_redis import (
    QueueProcessor,
    RedisQueue,
    RedisWorkflowStore,
    StageExecution,
    Task,
    TaskRegistry,
    TaskResult,
)
from tests.integration.support import FAST


def exec_key(namespace: str, workflow_id: str, ref_id: str) -> str:
    """Counter of a stage's task executions, kept in Redis so every process can add to it."""
    return f"{namespace}:test:exec:{workflow_id}:{ref_id}"


class CountInRedis(Task):
    """INCRs the stage's execution counter and succeeds with the stage's ref id as output."""

    def __init__(self, url: str, namespace: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.namespace = namespace

    def execute(self, stage: StageExecution) -> TaskResult:
        self.client.incr(exec_key(self.namespace, stage.execution.id, stage.ref_id))
        return TaskResult.success(outputs={"branches": [stage.ref_id]})


def registry_for(url: str, namespace: str) -> TaskRegistry:
    registry = TaskRegistry()
    registry.register("count", CountInRedis(url, namespace))
    return registry


def run_worker(url: str, namespace: str, ready_key: str, stop_key: str, concurrency: int) -> None:
    """Run a background processor until ``stop_key`` is pushed to."""
    store = RedisWorkflowStore(url, namespace=namespace)
    queue = RedisQueue(url, namespace=namespace)
    processor = QueueProcessor(queue, store=store, task_registry=registry_for(url, namespace),
                               engine_config=FAST, concurrency=concurrency)
    processor.start()
    client = redis.Redis.from_url(url)
    client.rpush(ready_key, os.getpid())
    try:
        client.blpop([stop_key], timeout=120)
    finally:
        processor.stop(timeout=10)
