"""Running user task code: timeouts, the cancellation token, and turning what happened into an
``Outcome`` that RunTask commits; ``vet_outcome`` turns an outcome holding a value that cannot
be stored into a task failure before anything is committed. No Redis here."""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from stabilize_redis.backend.view_reads import AncestorsUnavailable
from stabilize_redis.decisions.codec import StateEncodingError, ensure_plain, storable_text, stored_form
from stabilize_redis.errors import TaskTimeoutError, TransientError, is_transient, truncate_error
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.resilience.cancellation import CancellationToken, TaskCancelledError, bind_token
from stabilize_redis.support import NotExecutedError, result_refusal
from stabilize_redis.tasks.interface import RetryableTask, Task
from stabilize_redis.tasks.result import TaskResult

log = logging.getLogger("stabilize_redis.tasks")

_timeout_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="stz-task")

MAX_RETRY_AFTER_S = 86400.0
"""Longest ``TransientError.retry_after`` honoured (one day). A longer one fails the task
with that reason rather than being clamped: retrying earlier than the caller asked would only
spend attempts, an error that does not clear within a day is not transient, and a workflow
must not sit RUNNING for weeks on a value that is usually a unit mistake (milliseconds given
as seconds). Waiting longer is what SUSPENDED (and a signal) or a scheduled stage are for."""


@dataclass
class Outcome:
    """What one execution produced: a result, or an error (transient or not)."""

    result: TaskResult | None = None
    error: BaseException | None = None
    transient: bool = False
    timed_out: bool = False
    context_update: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    """Seconds before a transient retry, once ``vet_outcome`` has checked ``requested_retry_after``."""
    requested_retry_after: Any = None
    """``TransientError.retry_after`` as the task gave it (seconds or a timedelta)."""


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
    token. Without one it runs on the calling thread. A Redis failure while the task reads its
    ancestors' outputs (``backend.view_reads.AncestorsUnavailable``) is raised, not recorded.
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
    except AncestorsUnavailable:
        raise  # Redis, not the task, failed: the message is handled again
    except TaskCancelledError as e:
        return Outcome(error=e)
    except TaskTimeoutError as e:
        return Outcome(timed_out=True, error=e)
    except BaseException as e:  # noqa: BLE001 - user code may raise anything; it is recorded
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        if isinstance(e, TransientError):
            return Outcome(error=e, transient=True, context_update=e.context_update or {},
                           requested_retry_after=e.retry_after)
        return Outcome(error=e, transient=is_transient(e))


def vet_outcome(outcome: Outcome, where: str) -> Outcome:
    """``outcome`` if everything it would commit can be stored (``codec.ensure_plain``), else
    a non-transient error outcome whose StateEncodingError names the key path under ``where``
    (e.g. ``stage 'build': task 'compile' result outputs.a[3]: ...``), so the task fails once
    instead of its commit failing on every delivery. Checks a result's context, outputs and
    target, and a transient error's ``context_update`` and ``retry_after`` (which it converts to
    ``retry_after`` seconds: finite, not negative, at most ``MAX_RETRY_AFTER_S``). Context and
    outputs come back in their stored form (``codec.stored_form``: a ``datetime`` as its
    ``str``). A result the engine cannot honour (``support.result_refusal``: ``jump_to``,
    ``suspend``, ...) becomes a NotExecutedError naming the directive."""
    try:
        if outcome.result is not None:
            result = _check_result(outcome.result, f"{where} result")
            refusal = result_refusal(result)
            if refusal is not None:
                return Outcome(error=NotExecutedError(f"{where} result: {refusal}"), timed_out=outcome.timed_out)
            return outcome if result is outcome.result else replace(outcome, result=result)
        if outcome.error is not None and outcome.transient:
            update = _check_mapping(outcome.context_update, f"{where} context_update")
            return replace(outcome, context_update=update,
                           retry_after=retry_delay(outcome.requested_retry_after, f"{where} retry_after"))
    except StateEncodingError as e:
        return Outcome(error=e, timed_out=outcome.timed_out)
    return outcome


def _check_mapping(value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise StateEncodingError(f"{path}: must be a dict, not {type(value).__name__}")
    return stored_form(value, path)


def _check_result(result: TaskResult, path: str) -> TaskResult:
    context = _check_mapping(result.context, f"{path} context")
    outputs = _check_mapping(result.outputs, f"{path} outputs")
    ensure_plain(result.target_stage_ref_id, f"{path} target_stage_ref_id")
    if context is result.context and outputs is result.outputs:
        return result
    return replace(result, context=context, outputs=outputs)


def retry_delay(value: Any, path: str) -> float | None:
    """Seconds from a ``retry_after`` (None, a number of seconds or a timedelta); raises
    StateEncodingError naming ``path`` unless it is finite, not negative and at most
    ``MAX_RETRY_AFTER_S``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range
            seconds = math.inf
    else:
        raise StateEncodingError(f"{path}: {_shown(value)} is not a number of seconds")
    if math.isnan(seconds) or math.isinf(seconds):
        raise StateEncodingError(f"{path}: {_shown(value)} is not a finite number of seconds")
    if seconds < 0:
        raise StateEncodingError(f"{path}: {_shown(value)} is negative")
    if seconds > MAX_RETRY_AFTER_S:
        raise StateEncodingError(f"{path}: {_shown(value)} exceeds the limit of {MAX_RETRY_AFTER_S:.0f} seconds")
    return seconds


def exception_details(error: BaseException, transient: bool) -> dict[str, Any]:
    """stabilize's ``{"details": {...}}`` shape for a task failure; the message is made storable
    (a NUL or lone surrogate in an exception's text is escaped)."""
    message = truncate_error(storable_text(error_text(error)))
    return {
        "details": {
            "error": message,
            "errors": [message],
            "exception_type": type(error).__name__,
            "transient": transient,
            "error_code": getattr(error, "code", None) if isinstance(getattr(error, "code", None), int) else None,
        }
    }


def _shown(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - user object
        text = type(value).__name__
    return storable_text(text if len(text) <= 60 else f"{text[:60]}...")


def error_text(error: BaseException) -> str:
    """``str(error)``, or its type name when that is empty or ``__str__`` itself fails."""
    try:
        return str(error) or type(error).__name__
    except Exception:  # noqa: BLE001 - a broken __str__ must not stop the failure being recorded
        return f"{type(error).__name__} (str() failed)"


class TokenRegistry:
    """Cancellation tokens of the tasks running in this process, by task id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, CancellationToken] = {}
        self._where: dict[str, tuple[str, str]] = {}

    def open(self, task_id: str, where: tuple[str, str] | None = None) -> CancellationToken:
        """The token of ``task_id`` (made on first open); ``where``: its (workflow id, stage id),
        for ``running``."""
        with self._lock:
            token = self._tokens.get(task_id) or CancellationToken()
            self._tokens[task_id] = token
            if where is not None:
                self._where[task_id] = where
            return token

    def close(self, task_id: str) -> None:
        with self._lock:
            self._tokens.pop(task_id, None)
            self._where.pop(task_id, None)

    def running(self) -> list[tuple[str, str, str]]:
        """(task id, workflow id, stage id) of every open token opened with ``where``."""
        with self._lock:
            return [(tid, wid, sid) for tid, (wid, sid) in self._where.items() if tid in self._tokens]

    def cancel(self, task_id: str) -> bool:
        """Cancel ``task_id``'s token; True if it was open and not canceled before."""
        with self._lock:
            token = self._tokens.get(task_id)
        if token is not None and not token.is_cancelled:
            token.cancel()
            return True
        return False
