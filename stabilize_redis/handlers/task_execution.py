"""Running user task code: timeouts, the cancellation token, and turning what happened into an
``Outcome`` that RunTask commits. No Redis here."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from stabilize_redis.errors import TaskTimeoutError, TransientError, is_transient, truncate_error
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.resilience.cancellation import CancellationToken, TaskCancelledError, bind_token
from stabilize_redis.tasks.interface import RetryableTask, Task
from stabilize_redis.tasks.result import TaskResult

log = logging.getLogger("stabilize_redis.tasks")

_timeout_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="stz-task")


@dataclass
class Outcome:
    """What one execution produced: a result, or an error (transient or not)."""

    result: TaskResult | None = None
    error: BaseException | None = None
    transient: bool = False
    timed_out: bool = False
    context_update: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None


def task_timeout(impl: Task, stage: StageExecution, default_s: float) -> float | None:
    """Seconds the whole task may run (from the task's start), or None for the default.

    A RetryableTask's dynamic timeout wins, then ``stageTimeoutMs``."""
    if isinstance(impl, RetryableTask):
        return impl.get_dynamic_timeout(stage).total_seconds()
    ms = stage.context.get("stageTimeoutMs")
    if isinstance(ms, int | float) and ms > 0:
        return ms / 1000.0
    return None


def poll_backoff(impl: Task, stage: StageExecution, task: TaskExecution, fallback_s: float) -> float:
    """Seconds before re-running a task that returned ``running()``."""
    if isinstance(impl, RetryableTask):
        elapsed = timedelta(milliseconds=max(0, int(time.time() * 1000) - (task.start_time or 0)))
        return impl.get_dynamic_backoff_period(stage, elapsed).total_seconds()
    return fallback_s


def execute(impl: Task, stage: StageExecution, token: CancellationToken, remaining_s: float | None) -> Outcome:
    """Run ``impl.execute(stage)`` with the token bound to the running thread.

    With a time limit the task runs on a helper thread and is abandoned (its token cancelled)
    when the limit passes; Python cannot kill a thread, so cooperative tasks should check the
    token. Without one it runs on the calling thread.
    """

    def run() -> TaskResult:
        with bind_token(token):
            return impl.execute(stage)

    try:
        if remaining_s is None:
            result = run()
        else:
            future = _timeout_pool.submit(run)
            try:
                result = future.result(timeout=max(remaining_s, 0.0))
            except FutureTimeout:
                token.cancel()
                return Outcome(timed_out=True, error=TaskTimeoutError(
                    f"task exceeded its timeout of {remaining_s:.1f}s"))
        if not isinstance(result, TaskResult):
            return Outcome(error=TypeError(f"execute() returned {type(result).__name__}, not TaskResult"))
        return Outcome(result=result)
    except TaskCancelledError as e:
        return Outcome(error=e)
    except TaskTimeoutError as e:
        return Outcome(timed_out=True, error=e)
    except BaseException as e:  # noqa: BLE001 - user code may raise anything; it is recorded
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        if isinstance(e, TransientError):
            return Outcome(error=e, transient=True, context_update=dict(e.context_update or {}),
                           retry_after=_seconds(e.retry_after))
        return Outcome(error=e, transient=is_transient(e))


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def exception_details(error: BaseException, transient: bool) -> dict[str, Any]:
    """stabilize's ``{"details": {...}}`` shape for a task failure."""
    message = truncate_error(str(error) or type(error).__name__)
    return {
        "details": {
            "error": message,
            "errors": [message],
            "exception_type": type(error).__name__,
            "transient": transient,
            "error_code": getattr(error, "code", None) if isinstance(getattr(error, "code", None), int) else None,
        }
    }


class TokenRegistry:
    """Cancellation tokens of the tasks running in this process, by task id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, CancellationToken] = {}

    def open(self, task_id: str) -> CancellationToken:
        with self._lock:
            token = self._tokens.get(task_id) or CancellationToken()
            self._tokens[task_id] = token
            return token

    def close(self, task_id: str) -> None:
        with self._lock:
            self._tokens.pop(task_id, None)

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            token = self._tokens.get(task_id)
        if token is not None:
            token.cancel()
            return True
        return False
