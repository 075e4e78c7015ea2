"""Finding a task's implementation: by its implementing class, then by the message's type."""

from __future__ import annotations

from stabilize_redis.models.task import TaskExecution
from stabilize_redis.tasks.interface import Task
from stabilize_redis.tasks.registry import TaskNotFoundError, TaskRegistry


def resolve_task(registry: TaskRegistry, task: TaskExecution, task_type: str = "") -> Task | None:
    """The registered implementation of ``task``, or None when none is registered."""
    try:
        return registry.get_by_class(task.implementing_class)
    except TaskNotFoundError:
        pass
    if task_type:
        try:
            return registry.get(task_type)
        except TaskNotFoundError:
            pass
    return None


def find_task(tasks: list[TaskExecution], task_id: str) -> TaskExecution | None:
    return next((t for t in tasks if t.id == task_id), None)
