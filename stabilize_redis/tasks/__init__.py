"""Task interfaces, results and the task registry."""

from stabilize_redis.tasks.interface import (
    CallableTask,
    NoOpTask,
    OverridableTimeoutRetryableTask,
    RetryableTask,
    SkippableTask,
    Task,
    WaitTask,
)
from stabilize_redis.tasks.registry import (
    TaskNotFoundError,
    TaskRegistry,
    get_default_registry,
    get_task,
    register_task,
)
from stabilize_redis.tasks.result import TaskResult, TaskResultBuilder

__all__ = [
    "CallableTask",
    "NoOpTask",
    "OverridableTimeoutRetryableTask",
    "RetryableTask",
    "SkippableTask",
    "Task",
    "TaskNotFoundError",
    "TaskRegistry",
    "TaskResult",
    "TaskResultBuilder",
    "WaitTask",
    "get_default_registry",
    "get_task",
    "register_task",
]
