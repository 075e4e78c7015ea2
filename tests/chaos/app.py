"""Task registry the chaos suite's worker processes serve (``--app tests.chaos.app:registry``).

Every execution appends two JSON lines to ``$STZ_CHAOS_LOG/<pid>.jsonl``: ``{"ev": "start", ...}``
before user code and ``{"ev": "end", ...}`` after it, with the workflow id, stage ref id, task
id, pid and wall-clock time. The files live outside Redis and Postgres, so they survive every
fault the suite injects (a SIGKILLed worker loses nothing already written), and the suite counts
executions and repeats from them.

Tasks: ``work`` (sleeps ``work_s`` and succeeds), ``fail`` (returns TERMINAL; the shape decides
whether the stage continues), ``flaky`` (raises a TransientError ``fail_times`` times, counting
in its stage context, then succeeds), ``poison`` (returns a value no store could keep, chosen by
its stage context's ``poison``: see ``POISONS``; the engine must fail it TERMINAL, once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from stabilize_redis import StageExecution, TaskRegistry, TaskResult
from stabilize_redis.errors import TransientError

_dir = os.environ.get("STZ_CHAOS_LOG", "")


def _log(event: str, stage: StageExecution, **extra: Any) -> None:
    if not _dir:
        return
    line = json.dumps({"ev": event, "wf": stage.execution.id, "stage": stage.ref_id,
                       "task": stage.tasks[0].id if stage.tasks else "", "pid": os.getpid(),
                       "t": time.time(), **extra})
    fd = os.open(os.path.join(_dir, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def work(stage: StageExecution) -> TaskResult:
    _log("start", stage)
    time.sleep(float(stage.context.get("work_s", 0.02)))
    _log("end", stage)
    return TaskResult.success(outputs={f"done_{stage.ref_id}": True})


def fail(stage: StageExecution) -> TaskResult:
    _log("start", stage)
    time.sleep(float(stage.context.get("work_s", 0.02)))
    _log("end", stage)
    return TaskResult.terminal(f"planned failure of {stage.ref_id}")


def flaky(stage: StageExecution) -> TaskResult:
    seen = int(stage.context.get("flaky_seen", 0))
    _log("start", stage, attempt=seen)
    time.sleep(float(stage.context.get("work_s", 0.02)))
    _log("end", stage, attempt=seen)
    if seen < int(stage.context.get("fail_times", 2)):
        raise TransientError(f"transient failure {seen + 1} of {stage.ref_id}", retry_after=0.05,
                             context_update={"flaky_seen": seen + 1})
    return TaskResult.success(outputs={f"done_{stage.ref_id}": True, "attempts": seen + 1})


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


POISONS: dict[str, Callable[[], TaskResult]] = {
    "nan": lambda: TaskResult.success(outputs={"ratio": float("nan")}),
    "int-beyond-64-bits": lambda: TaskResult.success(outputs={"big": 2**70}),
    "nul-string": lambda: TaskResult.success(context={"log": "ok\x00then"}),
    "600-deep": lambda: TaskResult.success(outputs={"tree": _nested(600)}),
}
"""What ``poison`` returns, by the stage context's ``poison``."""


def poison(stage: StageExecution) -> TaskResult:
    _log("start", stage)
    result = POISONS[str(stage.context["poison"])]()
    _log("end", stage)
    return result


registry = TaskRegistry()
registry.register("work", work)
registry.register("fail", fail)
registry.register("flaky", flaky)
registry.register("poison", poison)
