"""Task registry of the signal race tests (``tests/processes/test_signal_races.py``).

``gate`` suspends on its first execution and succeeds once resumed. Every execution is counted
in ``<ns>:test:exec:<wf>`` and every signal a resumed execution saw is appended to
``<ns>:test:seen:<wf>``, so the test can check that each stage resumed exactly once. The first
execution marks ``<ns>:test:started`` and then, by the stage's ``hold`` context value: returns at
once (``none``), waits a random few milliseconds (``jitter``), or blocks until the test's
signal is buffered for the stage (``buffered``), so the suspension is decided after the signal.
"""

from __future__ import annotations

import json
import os
import random
import time

import redis

from stabilize_redis import StageExecution, TaskRegistry, TaskResult
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.handlers.signal_stage import buffered_signals
from stabilize_redis.hitl import get_signal

_url, _ns = os.environ["STZ_TEST_URL"], os.environ["STZ_TEST_NS"]
_client = redis.Redis.from_url(_url)


def gate(stage: StageExecution) -> TaskResult:
    wf = stage.execution.id
    _client.hincrby(f"{_ns}:test:exec:{wf}", stage.ref_id, 1)
    name, data = get_signal(stage)
    if name is not None:
        _client.rpush(f"{_ns}:test:seen:{wf}", json.dumps([name, data]))
        return TaskResult.success(outputs={"signal": name})
    _client.hset(f"{_ns}:test:started", wf, 1)
    hold = stage.context.get("hold", "none")
    if hold == "jitter":
        time.sleep(random.uniform(0, 0.02))
    elif hold == "buffered":
        backend = backend_for(_url, _ns)
        deadline = time.monotonic() + 20
        while not buffered_signals(backend, wf, stage.id) and time.monotonic() < deadline:
            time.sleep(0.002)
    return TaskResult.suspend()


registry = TaskRegistry()
registry.register("gate", gate)
