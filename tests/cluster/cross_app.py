"""Task registry of the cross-partition cluster tests: ``step`` records, on the cluster,
``[workflow id, pid, "start" | "end", epoch seconds]`` (JSON) to one list per namespace when it
starts and when it returns, and takes ``work_s`` of its stage's context in between
(``STZ_TEST_URL``/``STZ_TEST_NS`` say where)."""

from __future__ import annotations

import json
import os
import time
from functools import cache
from typing import Any

from stabilize_redis import StageExecution, TaskRegistry, TaskResult
from stabilize_redis.backend.connection import Target, connect_redis


@cache
def _client() -> Any:
    return connect_redis(Target(os.environ["STZ_TEST_URL"], os.environ["STZ_TEST_NS"]))


def log_key(namespace: str) -> str:
    return f"{namespace}:test:steps"


def _record(stage: StageExecution, event: str) -> None:
    entry = [stage.execution.id, os.getpid(), event, time.time()]
    _client().rpush(log_key(os.environ["STZ_TEST_NS"]), json.dumps(entry))


def step(stage: StageExecution) -> TaskResult:
    _record(stage, "start")
    time.sleep(float(stage.context.get("work_s", 0.05)))
    _record(stage, "end")
    return TaskResult.success(outputs={stage.ref_id: stage.execution.id})


registry = TaskRegistry()
registry.register("step", step)
