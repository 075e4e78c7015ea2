"""Task registry of ``tests/processes/test_pattern_races.py`` (transient signals, milestones,
fan-in reducers), served by CLI worker processes. Everything a task sees is recorded in Redis
under the test's namespace (``{ns}:test:...``), so the test can check it across processes;
``{ns}:test:pid:{wf}`` names, per ref id, the worker pid that executed the stage.

Holding: a stage whose context names ``hold`` finishes only once the test (or another task)
has set ``{ns}:test:go:{wf}:{hold}``. Each execution first adds the stage's ref id to
``{ns}:test:arrived:{wf}``, then waits up to ``block_s`` seconds (context, default 0) for the
key, spinning at a millisecond, so tasks released together finish together; if the key is
still missing it returns ``running()`` and is polled again (the workers' backoff is set short
by the test). A blocked thread is thus given back after ``block_s`` even when every thread of
a worker is holding.

* ``step`` - holds as above, then succeeds with its context's ``emit`` as outputs.
* ``gate`` - a suspending stage. Every execution counts in ``{ns}:test:exec:{wf}``. Resumed (a
  signal in its context): appends ``[name, data]`` to ``{ns}:test:seen:{wf}`` and succeeds.
  Otherwise marks ``{ns}:test:started`` (field: workflow id) and, by context ``mode``: suspends
  at once (``now``), or first holds on ``release`` blocking (``block``, 0.5 s at a time) or
  only polling (``poll``); each suspension counts in ``{ns}:test:suspends:{wf}``.
* ``watch`` - a milestone watcher: counts its execution and records the status of the ``m``
  stage it read from the store while it ran (``{ns}:test:saw:{wf}``, by ref id).
* ``join`` - a fan-in join: counts its execution, records the ``finding``/``cost`` values in its
  context (``{ns}:test:joined:{wf}``, JSON) and then releases hold ``joined``.
"""

from __future__ import annotations

import json
import os
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult, connect
from stabilize_redis.hitl import get_signal

_url, _ns = os.environ["STZ_TEST_URL"], os.environ["STZ_TEST_NS"]
_client = redis.Redis.from_url(_url)
_engine = connect(_url, _ns)


def go_key(workflow_id: str, hold: str) -> str:
    """The key that releases hold ``hold`` of workflow ``workflow_id``."""
    return f"{_ns}:test:go:{workflow_id}:{hold}"


def _count(stage: StageExecution) -> int:
    _mark(stage)
    return int(_client.hincrby(f"{_ns}:test:exec:{stage.execution.id}", stage.ref_id, 1))


def _mark(stage: StageExecution) -> None:
    """Record which worker process executed the stage (last execution wins)."""
    _client.hset(f"{_ns}:test:pid:{stage.execution.id}", stage.ref_id, os.getpid())


def _released(stage: StageExecution, hold: str, block_s: float) -> bool:
    """Whether hold ``hold`` is released, waiting up to ``block_s`` for it (see module doc)."""
    wf = stage.execution.id
    _mark(stage)
    _client.sadd(f"{_ns}:test:arrived:{wf}", stage.ref_id)
    key = go_key(wf, hold)
    deadline = time.monotonic() + block_s
    while not _client.exists(key):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def step(stage: StageExecution) -> TaskResult:
    hold = stage.context.get("hold")
    if hold and not _released(stage, str(hold), float(stage.context.get("block_s", 0))):
        return TaskResult.running()
    return TaskResult.success(outputs=dict(stage.context.get("emit") or {}))


def gate(stage: StageExecution) -> TaskResult:
    wf = stage.execution.id
    _count(stage)
    name, data = get_signal(stage)
    if name is not None:
        _client.rpush(f"{_ns}:test:seen:{wf}", json.dumps([name, data]))
        return TaskResult.success(outputs={"signal": name})
    _client.hset(f"{_ns}:test:started", wf, 1)
    mode = stage.context.get("mode", "now")
    if mode != "now" and not _released(stage, "release", 0.5 if mode == "block" else 0.0):
        return TaskResult.running()
    _client.hincrby(f"{_ns}:test:suspends:{wf}", stage.ref_id, 1)
    return TaskResult.suspend()


def watch(stage: StageExecution) -> TaskResult:
    wf = stage.execution.id
    _count(stage)
    milestone = _engine.store.retrieve(wf).stage_by_ref_id("m")
    _client.hset(f"{_ns}:test:saw:{wf}", stage.ref_id, milestone.status.name if milestone else "missing")
    return TaskResult.success()


def join(stage: StageExecution) -> TaskResult:
    wf = stage.execution.id
    _count(stage)
    seen = {"finding": stage.context.get("finding"), "cost": stage.context.get("cost")}
    _client.rpush(f"{_ns}:test:joined:{wf}", json.dumps(seen))
    _client.set(go_key(wf, "joined"), 1)
    return TaskResult.success()


registry = TaskRegistry()
registry.register("step", step)
registry.register("gate", gate)
registry.register("watch", watch)
registry.register("join", join)
