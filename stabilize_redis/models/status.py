"""The status vocabulary shared by workflows, stages and tasks.

Every member's value is a ``(name, complete, halt)`` tuple:

* ``complete`` -- the entity has finished its work, well or badly;
* ``halt`` -- the outcome must block everything downstream.

``str(status)`` is the bare name and persistence/messages store ``status.name``.
Transitions are checked with :func:`can_transition` / :func:`validate_transition`;
staying in the same state is always allowed and completed states allow nothing else.
"""

from __future__ import annotations

from enum import Enum


class WorkflowStatus(Enum):
    """Status of a workflow, stage or task. Value: ``(name, complete, halt)``."""

    NOT_STARTED = ("NOT_STARTED", False, False)
    RUNNING = ("RUNNING", False, False)
    PAUSED = ("PAUSED", False, False)
    SUSPENDED = ("SUSPENDED", False, False)
    SUCCEEDED = ("SUCCEEDED", True, False)
    FAILED_CONTINUE = ("FAILED_CONTINUE", True, False)
    TERMINAL = ("TERMINAL", True, True)
    CANCELED = ("CANCELED", True, True)
    REDIRECT = ("REDIRECT", False, False)
    STOPPED = ("STOPPED", True, True)
    SKIPPED = ("SKIPPED", True, False)
    BUFFERED = ("BUFFERED", False, False)

    @property
    def is_complete(self) -> bool:
        """True once the entity has finished (CANCELED, SUCCEEDED, STOPPED, SKIPPED, TERMINAL, FAILED_CONTINUE)."""
        return bool(self.value[1])

    @property
    def is_halt(self) -> bool:
        """True for outcomes that block downstream work (TERMINAL, CANCELED, STOPPED)."""
        return bool(self.value[2])

    @property
    def is_successful(self) -> bool:
        """True for SUCCEEDED and SKIPPED."""
        return self in (WorkflowStatus.SUCCEEDED, WorkflowStatus.SKIPPED)

    @property
    def is_failure(self) -> bool:
        """True for TERMINAL, STOPPED and FAILED_CONTINUE (CANCELED is *not* a failure)."""
        return self in (WorkflowStatus.TERMINAL, WorkflowStatus.STOPPED, WorkflowStatus.FAILED_CONTINUE)

    @property
    def is_skipped(self) -> bool:
        """True only for SKIPPED."""
        return self is WorkflowStatus.SKIPPED

    @property
    def is_dirty(self) -> bool:
        """True while the entity is mid-execution (RUNNING, REDIRECT)."""
        return self in (WorkflowStatus.RUNNING, WorkflowStatus.REDIRECT)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"WorkflowStatus.{self.name}"


_S = WorkflowStatus

COMPLETED_STATUSES: frozenset[WorkflowStatus] = frozenset(
    {_S.CANCELED, _S.SUCCEEDED, _S.STOPPED, _S.SKIPPED, _S.TERMINAL, _S.FAILED_CONTINUE}
)
"""Statuses whose ``is_complete`` is True."""

CONTINUABLE_STATUSES: frozenset[WorkflowStatus] = frozenset(
    {_S.SUCCEEDED, _S.FAILED_CONTINUE, _S.SKIPPED, _S.REDIRECT}
)
"""Upstream statuses that let downstream stages proceed."""

HALT_STATUSES: frozenset[WorkflowStatus] = frozenset({_S.TERMINAL, _S.CANCELED, _S.STOPPED})
"""Statuses that block everything downstream."""

ACTIVE_STATUSES: frozenset[WorkflowStatus] = frozenset({_S.NOT_STARTED, _S.RUNNING, _S.PAUSED, _S.SUSPENDED})
"""Statuses of an entity that is still going to do something."""

VALID_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    _S.NOT_STARTED: frozenset({_S.RUNNING, _S.CANCELED, _S.SKIPPED, _S.BUFFERED, _S.TERMINAL}),
    _S.BUFFERED: frozenset({_S.NOT_STARTED, _S.RUNNING, _S.CANCELED, _S.SKIPPED}),
    _S.RUNNING: frozenset(
        {
            _S.SUCCEEDED,
            _S.FAILED_CONTINUE,
            _S.TERMINAL,
            _S.CANCELED,
            _S.PAUSED,
            _S.STOPPED,
            _S.SUSPENDED,
            _S.REDIRECT,
            _S.SKIPPED,
        }
    ),
    _S.PAUSED: frozenset({_S.RUNNING, _S.CANCELED, _S.STOPPED}),
    _S.SUSPENDED: frozenset({_S.RUNNING, _S.CANCELED, _S.STOPPED}),
    _S.REDIRECT: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.CANCELED}),
    # Completed states are final.
    _S.SUCCEEDED: frozenset(),
    _S.FAILED_CONTINUE: frozenset(),
    _S.TERMINAL: frozenset(),
    _S.CANCELED: frozenset(),
    _S.STOPPED: frozenset(),
    _S.SKIPPED: frozenset(),
}
"""Allowed ``current -> target`` moves (self-moves are implicitly allowed)."""


class InvalidStateTransitionError(Exception):
    """A status change that :data:`VALID_TRANSITIONS` does not allow.

    Attributes mirror the constructor: ``current``, ``target``, ``entity_type``, ``entity_id``.
    """

    def __init__(
        self,
        current: WorkflowStatus,
        target: WorkflowStatus,
        entity_type: str = "entity",
        entity_id: str | None = None,
    ) -> None:
        self.current = current
        self.target = target
        self.entity_type = entity_type
        self.entity_id = entity_id
        who = f"{entity_type} {entity_id}" if entity_id else entity_type
        super().__init__(f"Invalid state transition for {who}: {current} -> {target}")


def can_transition(current: WorkflowStatus, target: WorkflowStatus) -> bool:
    """Return True if moving from ``current`` to ``target`` is allowed.

    Staying in the same state is always allowed; completed states allow nothing else.
    """
    if current is target:
        return True
    return target in VALID_TRANSITIONS.get(current, frozenset())


def validate_transition(
    current: WorkflowStatus,
    target: WorkflowStatus,
    entity_type: str = "entity",
    entity_id: str | None = None,
) -> None:
    """Raise :class:`InvalidStateTransitionError` unless ``can_transition(current, target)``."""
    if not can_transition(current, target):
        raise InvalidStateTransitionError(current, target, entity_type, entity_id)


__all__ = [
    "ACTIVE_STATUSES",
    "COMPLETED_STATUSES",
    "CONTINUABLE_STATUSES",
    "HALT_STATUSES",
    "VALID_TRANSITIONS",
    "InvalidStateTransitionError",
    "WorkflowStatus",
    "can_transition",
    "validate_transition",
]
