"""Task interfaces that user task implementations subclass."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from stabilize_redis.tasks.result import TaskResult

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution


class Task(ABC):
    """A unit of work run by the engine against a stage.

    ``execute`` must be idempotent: a crash between execution and the commit of its result
    makes the engine run it again.  Exceptions are classified with ``errors.is_transient``.
    """

    @abstractmethod
    def execute(self, stage: StageExecution) -> TaskResult:
        """Do the work for ``stage`` and report the outcome."""

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        """Called when the task times out. Return a result to use, or None for the default
        (TERMINAL with an error)."""
        return None

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        """Called when the workflow is canceled while the task runs. A returned result's
        context and outputs are merged before the task completes as CANCELED."""
        return None

    def on_cleanup(self, stage: StageExecution) -> None:
        """Called once the stage has reached any final status, to release resources."""
        return None

    @property
    def aliases(self) -> list[str]:
        """Alternative registry names for this task (default none)."""
        return []


class RetryableTask(Task):
    """A task that returns RUNNING while it waits and is polled until done or timed out."""

    @abstractmethod
    def get_timeout(self) -> timedelta:
        """Total lifetime cap, measured from the task's first start."""

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """Delay before the next poll, given how long the task has run so far (default 1 s)."""
        return timedelta(seconds=1)

    def get_dynamic_timeout(self, stage: StageExecution) -> timedelta:
        """The timeout the engine enforces for ``stage`` (default ``get_timeout()``)."""
        return self.get_timeout()

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        """The longest one ``execute`` call may take (default None: the rest of the task's
        timeout). A call that exceeds it is timed out like the task (its token canceled,
        ``on_timeout`` decides the result)."""
        return None

    def get_dynamic_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """The backoff the engine applies (default ``get_backoff_period``)."""
        return self.get_backoff_period(stage, duration)


class OverridableTimeoutRetryableTask(RetryableTask):
    """A retryable task whose timeout ``stage.context["stageTimeoutMs"]`` overrides."""

    def get_dynamic_timeout(self, stage: StageExecution) -> timedelta:
        """``stageTimeoutMs`` from the stage context when present, else ``get_timeout()``."""
        override = stage.context.get("stageTimeoutMs")
        if override is not None:
            return timedelta(milliseconds=float(override))
        return self.get_timeout()


class SkippableTask(Task):
    """A task the engine skips (CompleteTask(SKIPPED)) when ``is_enabled`` is False at start."""

    def is_enabled(self, stage: StageExecution) -> bool:
        """Whether the task should run for ``stage`` (default True)."""
        return True

    def execute(self, stage: StageExecution) -> TaskResult:
        """Delegate to :meth:`do_execute` (``is_enabled`` is checked by the engine, not here)."""
        return self.do_execute(stage)

    @abstractmethod
    def do_execute(self, stage: StageExecution) -> TaskResult:
        """The actual work."""


class CallableTask(Task):
    """Adapts a plain function ``func(stage) -> TaskResult`` to :class:`Task`."""

    def __init__(self, func: Callable[[StageExecution], TaskResult], name: str | None = None) -> None:
        self._func = func
        self._name: str = name or str(getattr(func, "__name__", type(func).__name__))

    @property
    def name(self) -> str:
        """The given name, else the function's ``__name__``."""
        return self._name

    @property
    def func(self) -> Callable[[StageExecution], TaskResult]:
        """The wrapped function."""
        return self._func

    def execute(self, stage: StageExecution) -> TaskResult:
        """Call the wrapped function."""
        return self._func(stage)


class NoOpTask(Task):
    """Succeeds immediately with no outputs."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """Return ``TaskResult.success()``."""
        return TaskResult.success()


class WaitTask(RetryableTask):
    """Waits ``stage.context["waitTime"]`` seconds, then succeeds.

    The wait is measured from ``stage.context["waitStartTime"]`` (epoch ms); the first run
    records it (as "now") through the result context.  Until the time has elapsed the task
    returns RUNNING; then it succeeds with output ``waitedSeconds``.  Timeout: 24 hours.
    """

    def get_timeout(self) -> timedelta:
        """24 hours."""
        return timedelta(hours=24)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """The remaining wait, clamped to 1..60 s, so long waits are not polled every second."""
        remaining_ms = self._remaining_ms(stage, int(time.time() * 1000))
        return timedelta(milliseconds=min(max(remaining_ms, 1000), 60000))

    @staticmethod
    def _wait_ms(stage: StageExecution) -> float:
        return float(stage.context.get("waitTime", 0) or 0) * 1000.0

    def _remaining_ms(self, stage: StageExecution, now_ms: int) -> float:
        started = stage.context.get("waitStartTime")
        start_ms = int(started) if started is not None else now_ms
        return self._wait_ms(stage) - (now_ms - start_ms)

    def execute(self, stage: StageExecution) -> TaskResult:
        """RUNNING until ``waitTime`` seconds have passed since ``waitStartTime``, then SUCCEEDED."""
        now_ms = int(time.time() * 1000)
        started = stage.context.get("waitStartTime")
        start_ms = int(started) if started is not None else now_ms
        elapsed_ms = now_ms - start_ms
        if elapsed_ms >= self._wait_ms(stage):
            return TaskResult.success(outputs={"waitedSeconds": elapsed_ms / 1000.0})
        return TaskResult.running(context={"waitStartTime": start_ms})


__all__ = [
    "CallableTask",
    "NoOpTask",
    "OverridableTimeoutRetryableTask",
    "RetryableTask",
    "SkippableTask",
    "Task",
    "WaitTask",
]
