"""Task registry served by the CLI worker processes of the cluster tests: ``work`` records, on
the cluster, how often it ran per (workflow, stage) and how many tasks each worker pid runs now;
``step`` records ``[workflow id, pid, "start" | "end", epoch seconds]`` (JSON) to one list per
namespace (``steps_key``) around its ``work_s`` (``STZ_TEST_URL``/``STZ_TEST_NS`` say where)."""

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


def running_key(namespace: str) -> str:
    return f"{namespace}:test:running"


def exec_key(namespace: str, workflow_id: str) -> str:
    return f"{namespace}:test:exec:{workflow_id}"


def work(stage: StageExecution) -> TaskResult:
    pid, ns, client = str(os.getpid()), os.environ["STZ_TEST_NS"], _client()
    client.hincrby(running_key(ns), pid, 1)
    try:
        client.hincrby(exec_key(ns, stage.execution.id), stage.ref_id, 1)
        time.sleep(float(stage.context.get("work_s", 0.02)))
        return TaskResult.success(outputs={f"done_{stage.ref_id}": True})
    finally:
        client.hincrby(running_key(ns), pid, -1)


def steps_key(namespace: str) -> str:
    return f"{namespace}:test:steps"


def _step_record(stage: StageExecution, event: str) -> None:
    entry = [stage.execution.id, os.getpid(), event, time.time()]
    _client().rpush(steps_key(os.environ["STZ_TEST_NS"]), json.dumps(entry))


def step(stage: StageExecution) -> TaskResult:
    _step_record(stage, "start")
    time.sleep(float(stage.context.get("work_s", 0.05)))
    _step_record(stage, "end")
    return TaskResult.success(outputs={stage.ref_id: stage.execution.id})


registry = TaskRegistry()
registry.register("work", work)
registry.register("step", step)
