"""TaskRegistry: resolves the task names stored on TaskExecution to implementations."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from stabilize_redis.errors import TaskNotFoundError as _EngineTaskNotFoundError
from stabilize_redis.tasks.interface import CallableTask, Task
from stabilize_redis.tasks.result import TaskResult

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

logger = logging.getLogger(__name__)

TaskCallable: TypeAlias = Callable[["StageExecution"], TaskResult]
TaskImplementation: TypeAlias = "type[Task] | Task | TaskCallable"
VerifierImplementation: TypeAlias = Any  # a Verifier instance or a callable(stage) -> VerifyResult


class TaskNotFoundError(_EngineTaskNotFoundError):
    """No task (or verifier) is registered under ``task_type``.

    Also an ``errors.TaskNotFoundError``, so either import catches it.
    """

    def __init__(self, task_type: str) -> None:
        super().__init__(f"No task found for type: {task_type}", task_name=task_type)
        self.task_type = task_type


class TaskRegistry:
    """Name -> task implementation map, with aliases and verifiers. The built-in loop tasks
    (``tasks.loop_tasks.BUILTIN_TASKS``) resolve in every registry without registration; a
    task registered under one of their names takes precedence (they are not listed).

    An implementation may be a Task subclass (instantiated anew on every :meth:`get`, so
    per-task state must live in class attributes), a Task instance (returned as is) or a
    plain callable ``f(stage) -> TaskResult`` (wrapped in :class:`CallableTask`).
    Registration is thread-safe.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._verifiers: dict[str, VerifierImplementation] = {}
        self._lock = threading.RLock()

    # ---- registration -----------------------------------------------------------

    def register(
        self,
        name: str,
        task: type[Task] | Task | TaskCallable,
        aliases: list[str] | None = None,
        strict: bool = False,
    ) -> None:
        """Register ``task`` under ``name`` plus ``aliases`` and the task's own ``.aliases``.

        A duplicate ``name`` overwrites with a warning, or raises ValueError when ``strict``.
        Raises TypeError if ``task`` is neither a Task class, a Task instance nor callable.
        """
        if not (
            isinstance(task, Task) or (isinstance(task, type) and issubclass(task, Task)) or callable(task)
        ):
            raise TypeError(
                f"Cannot register {task!r} as task '{name}': not a Task class, instance or callable"
            )
        with self._lock:
            if name in self._tasks:
                if strict:
                    raise ValueError(f"Task '{name}' is already registered")
                logger.warning("Overwriting existing task registration: %s", name)
            self._tasks[name] = task
            own: list[str] = []
            if isinstance(task, type) and issubclass(task, Task):
                own = list(task().aliases)
            elif isinstance(task, Task):
                own = list(task.aliases)
            for alias in [*(aliases or []), *own]:
                if alias != name:
                    self._aliases[alias] = name

    def register_class(self, task_class: type[Task], name: str | None = None) -> None:
        """Register ``task_class`` under ``name`` or its class name."""
        self.register(name or task_class.__name__, task_class)

    def task(self, name: str, aliases: list[str] | None = None) -> Callable[[TaskCallable], TaskCallable]:
        """Decorator registering a function as task ``name``; returns the function unchanged."""

        def decorator(func: TaskCallable) -> TaskCallable:
            self.register(name, func, aliases)
            return func

        return decorator

    # ---- lookup -----------------------------------------------------------------

    def _resolve(self, name: str) -> str:
        return self._aliases.get(name, name) if name not in self._tasks else name

    def get(self, name: str) -> Task:
        """The task registered under ``name`` or an alias of it.

        Raises:
            TaskNotFoundError: nothing is registered under that name.
        """
        with self._lock:
            resolved = self._resolve(name)
            impl = self._tasks.get(resolved)
        if impl is None:
            impl = _builtin(resolved)
        if impl is None:
            raise TaskNotFoundError(name)
        if isinstance(impl, Task):
            return impl
        if isinstance(impl, type) and issubclass(impl, Task):
            return impl()
        return CallableTask(impl, name=resolved)

    def get_by_class(self, class_name: str) -> Task:
        """Resolve an ``implementing_class`` value: the exact name (or alias), then the last
        dotted part, then that part lower-cased.

        Raises:
            TaskNotFoundError: none of them is registered.
        """
        simple = class_name.rsplit(".", 1)[-1]
        for candidate in (class_name, simple, simple.lower()):
            if self.has(candidate):
                return self.get(candidate)
        raise TaskNotFoundError(class_name)

    def has(self, name: str) -> bool:
        """True if ``name`` or an alias of it is registered."""
        with self._lock:
            return self._resolve(name) in self._tasks or _builtin(name) is not None

    def list_tasks(self) -> list[str]:
        """Registered names (not aliases), in registration order."""
        with self._lock:
            return list(self._tasks)

    def clear(self) -> None:
        """Forget every task, alias and verifier."""
        with self._lock:
            self._tasks.clear()
            self._aliases.clear()
            self._verifiers.clear()

    # ---- verifiers --------------------------------------------------------------

    def register_verifier(self, name: str, verifier: VerifierImplementation) -> None:
        """Register a Verifier instance or a callable ``f(stage) -> VerifyResult`` under ``name``."""
        with self._lock:
            if name in self._verifiers:
                logger.warning("Overwriting existing verifier registration: %s", name)
            self._verifiers[name] = verifier

    def verifier(self, name: str) -> Callable[[Any], Any]:
        """Decorator registering a function as verifier ``name``."""

        def decorator(func: Any) -> Any:
            self.register_verifier(name, func)
            return func

        return decorator

    def get_verifier(self, name: str) -> VerifierImplementation:
        """The verifier registered under ``name``. Raises TaskNotFoundError('verifier:<name>')."""
        with self._lock:
            if name not in self._verifiers:
                raise TaskNotFoundError(f"verifier:{name}")
            return self._verifiers[name]

    def has_verifier(self, name: str) -> bool:
        """True if a verifier is registered under ``name``."""
        with self._lock:
            return name in self._verifiers

    def list_verifiers(self) -> list[str]:
        """Registered verifier names."""
        with self._lock:
            return list(self._verifiers)


def _builtin(name: str) -> type[Task] | None:
    """The built-in task every registry resolves under ``name`` when nothing is registered
    under it (the loop tasks of ``stages.loop_builder``, ``noop`` and ``wait``:
    ``tasks.loop_tasks.BUILTIN_TASKS``)."""
    from stabilize_redis.tasks.loop_tasks import BUILTIN_TASKS

    return BUILTIN_TASKS.get(name)


_default_registry: TaskRegistry | None = None
_default_lock = threading.Lock()


def get_default_registry() -> TaskRegistry:
    """The process-wide registry used by the module-level helpers (created on first use)."""
    global _default_registry
    with _default_lock:
        if _default_registry is None:
            _default_registry = TaskRegistry()
        return _default_registry


def register_task(
    name: str, task: type[Task] | Task | TaskCallable, aliases: list[str] | None = None
) -> None:
    """Register in the default registry."""
    get_default_registry().register(name, task, aliases)


def get_task(name: str) -> Task:
    """Look up in the default registry."""
    return get_default_registry().get(name)


def task(name: str, aliases: list[str] | None = None) -> Callable[[TaskCallable], TaskCallable]:
    """Decorator registering a function in the default registry."""
    return get_default_registry().task(name, aliases)


def register_verifier(name: str, verifier: VerifierImplementation) -> None:
    """Register a verifier in the default registry."""
    get_default_registry().register_verifier(name, verifier)


def get_verifier(name: str) -> VerifierImplementation:
    """Look up a verifier in the default registry."""
    return get_default_registry().get_verifier(name)


def verifier(name: str) -> Callable[[Any], Any]:
    """Decorator registering a verifier in the default registry."""
    return get_default_registry().verifier(name)


__all__ = [
    "TaskImplementation",
    "TaskNotFoundError",
    "TaskRegistry",
    "get_default_registry",
    "get_task",
    "get_verifier",
    "register_task",
    "register_verifier",
    "task",
    "verifier",
]
