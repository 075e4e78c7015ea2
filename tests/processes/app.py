"""Task registry served by the worker processes of the multi-process tests.

Each task records, in the test's own namespace, how often it ran per (workflow, stage) and how
many tasks each worker pid is running right now, so the test can kill a worker mid-task;
``work`` also records the ``trail`` (its ancestors' merged list outputs) it was started with.
"""

from __future__ import annotations

import json
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
        _client.hset(f"{_ns}:test:trail:{wf}", stage.ref_id, json.dumps(stage.context.get("trail", [])))
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


def _runs(stage: StageExecution) -> int:
    """Count one more execution of the stage (per workflow) and return the count."""
    return int(_client.hincrby(f"{_ns}:test:exec:{stage.execution.id}", stage.ref_id, 1))


def _await_runs(stage: StageExecution, refs: list[str], at_least: int, timeout: float = 10.0) -> None:
    """Block until every stage in ``refs`` of this workflow has run ``at_least`` times."""
    key = f"{_ns}:test:exec:{stage.execution.id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = _client.hmget(key, refs)
        if all(int(c or 0) >= at_least for c in counts):
            return
        time.sleep(0.005)
    raise TimeoutError(f"{refs} did not reach {at_least} runs")


def numbered(stage: StageExecution) -> TaskResult:
    """Outputs ``pass``: how many times this stage has run."""
    return TaskResult.success(outputs={"pass": _runs(stage)})


def branch(stage: StageExecution) -> TaskResult:
    """A fan-out branch. In the first pass it keeps running until the loop has reset it and its
    upstream has run again (so the jump always lands while it executes); it outputs the pass
    its upstream was in when it started."""
    seen = int(stage.context["pass"])
    _runs(stage)
    if seen == 1:
        _await_runs(stage, [stage.context["upstream"]], 2)
    return TaskResult.success(outputs={f"seen_{stage.ref_id}": seen})


def loop_back(stage: StageExecution) -> TaskResult:
    """Jumps to context['target'] until it has jumped context['loops'] times; before its first
    jump it waits for the branches named in context['wait_for'] to be running."""
    _runs(stage)
    if stage.context.get("wait_for") and not stage.context.get("_jump_count"):
        _await_runs(stage, list(stage.context["wait_for"]), 1)
    if int(stage.context.get("_jump_count", 0)) < int(stage.context["loops"]):
        return TaskResult.jump_to(stage.context["target"])
    return TaskResult.success()


def record(stage: StageExecution) -> TaskResult:
    """Records the ``seen_*`` values it was started with."""
    _runs(stage)
    seen = {k: v for k, v in stage.context.items() if k.startswith("seen_") or k == "pass"}
    _client.hset(f"{_ns}:test:seen:{stage.execution.id}", mapping={k: str(v) for k, v in seen.items()})
    return TaskResult.success()


registry = TaskRegistry()
registry.register("work", work)
registry.register("wait_for_cancel", wait_for_cancel)
registry.register("numbered", numbered)
registry.register("branch", branch)
registry.register("loop_back", loop_back)
registry.register("record", record)
