"""TaskExecution: one sequential unit of work inside a stage."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_redis.models.stage.enums import new_id
from stabilize_redis.models.status import WorkflowStatus

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution


@dataclass
class TaskExecution:
    """Runtime state of one task of a stage.

    ``implementing_class`` is the task-registry key used to resolve the implementation.
    The link to the owning stage is a weakref by default (the stage owns its tasks);
    use :meth:`set_stage_strong` for a task that must keep its stage alive.
    ``version`` is the optimistic-locking counter maintained by the store.
    """

    id: str = field(default_factory=new_id)
    name: str = ""
    implementing_class: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    start_time: int | None = None
    end_time: int | None = None
    stage_start: bool = False
    stage_end: bool = False
    loop_start: bool = False
    loop_end: bool = False
    task_exception_details: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    _stage: weakref.ReferenceType[StageExecution] | StageExecution | None = field(
        default=None, repr=False, compare=False
    )

    # ---- stage link -------------------------------------------------------------

    @property
    def stage(self) -> StageExecution | None:
        """The owning stage, or None if unattached or garbage collected."""
        ref = self._stage
        if ref is None:
            return None
        if isinstance(ref, weakref.ReferenceType):
            return ref()
        return ref

    @stage.setter
    def stage(self, value: StageExecution | None) -> None:
        """Attach to ``value`` through a weakref (None detaches)."""
        self._stage = None if value is None else weakref.ref(value)

    def set_stage_strong(self, value: StageExecution) -> None:
        """Attach to ``value`` with a strong reference."""
        self._stage = value

    def has_stage(self) -> bool:
        """True if the task is attached to a stage that is still alive."""
        return self.stage is not None

    def cleanup(self) -> None:
        """Drop the stage link (breaks reference cycles)."""
        self._stage = None

    # ---- flags ------------------------------------------------------------------

    @property
    def is_stage_start(self) -> bool:
        """True for the first task of its stage."""
        return self.stage_start

    @property
    def is_stage_end(self) -> bool:
        """True for the last task of its stage (``next_task`` returns None after it)."""
        return self.stage_end

    @property
    def is_loop_start(self) -> bool:
        """True if this task starts a loop."""
        return self.loop_start

    @property
    def is_loop_end(self) -> bool:
        """True if this task ends a loop."""
        return self.loop_end

    # ---- state ------------------------------------------------------------------

    def set_exception_details(self, exception: dict[str, Any]) -> None:
        """Record failure details under ``task_exception_details["exception"]``."""
        self.task_exception_details["exception"] = exception

    @property
    def phase_version(self) -> tuple[str, int]:
        """``(status.name, version)`` for phase-checked optimistic locking."""
        return (self.status.name, self.version)

    @classmethod
    def create(
        cls,
        name: str,
        implementing_class: str,
        stage_start: bool = False,
        stage_end: bool = False,
    ) -> TaskExecution:
        """Create a NOT_STARTED task with a fresh ULID id."""
        return cls(
            name=name,
            implementing_class=implementing_class,
            stage_start=stage_start,
            stage_end=stage_end,
        )


__all__ = ["TaskExecution"]
