"""TaskResult: what a task's ``execute`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.models.status import WorkflowStatus


@dataclass
class TaskResult:
    """Outcome of one task execution.

    * ``context`` is merged into ``stage.context`` (stage-scoped).
    * ``outputs`` is merged into ``stage.outputs`` (visible downstream).
    * ``target_stage_ref_id`` set together with REDIRECT requests a jump to that stage.

    ``context`` and ``outputs`` must be dicts of plain data that every store accepts (see
    ``decisions.codec.ensure_plain``: string keys; lists, str, bytes, bool, None, finite floats,
    64-bit ints; no NUL characters; at most ``codec.MAX_DEPTH`` levels; ``codec.TEXT_TYPES``
    values such as a ``datetime`` are stored as their ``str``, like stabilize's ``default=str``).
    A result that is not fails the task once (TERMINAL, a ``StateEncodingError`` naming the key
    path in its exception details) — it is never retried. A directive the engine does not
    execute yet (``stabilize_redis.support.DIRECTIVES``: ``suspend``, ``redirect``, ``jump_to``)
    fails the task the same way with a ``NotExecutedError`` naming it.
    """

    status: WorkflowStatus
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    target_stage_ref_id: str | None = None

    @classmethod
    def success(
        cls, outputs: dict[str, Any] | None = None, context: dict[str, Any] | None = None
    ) -> TaskResult:
        """SUCCEEDED, optionally with outputs and context."""
        return cls(WorkflowStatus.SUCCEEDED, context=dict(context or {}), outputs=dict(outputs or {}))

    @classmethod
    def running(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """RUNNING: the engine runs the task again after its backoff."""
        return cls(WorkflowStatus.RUNNING, context=dict(context or {}))

    @classmethod
    def terminal(cls, error: str, context: dict[str, Any] | None = None) -> TaskResult:
        """TERMINAL with ``context["error"] = error``; fails the stage (subject to its failure policy)."""
        ctx = dict(context or {})
        ctx["error"] = error
        return cls(WorkflowStatus.TERMINAL, context=ctx)

    @classmethod
    def failed_continue(
        cls,
        error: str,
        outputs: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> TaskResult:
        """FAILED_CONTINUE with ``context["error"] = error``; downstream stages still run."""
        ctx = dict(context or {})
        ctx["error"] = error
        return cls(WorkflowStatus.FAILED_CONTINUE, context=ctx, outputs=dict(outputs or {}))

    @classmethod
    def skipped(cls) -> TaskResult:
        """SKIPPED."""
        return cls(WorkflowStatus.SKIPPED)

    @classmethod
    def canceled(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """CANCELED, keeping any final outputs."""
        return cls(WorkflowStatus.CANCELED, outputs=dict(outputs or {}))

    @classmethod
    def stopped(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """STOPPED, keeping any final outputs."""
        return cls(WorkflowStatus.STOPPED, outputs=dict(outputs or {}))

    @classmethod
    def suspend(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """SUSPENDED: the stage waits for a SignalStage (a persistent signal buffered before
        consumed at once) and the task then runs again with ``_signal_name``/``_signal_data`` in
        its context (``handlers.signal_stage``)."""
        return cls(WorkflowStatus.SUSPENDED, context=dict(context or {}))

    @classmethod
    def redirect(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """REDIRECT without a target: the task fails TERMINAL with ``context['error']``, as in
        stabilize (``support.DIRECTIVES``); ``jump_to`` is the redirect that is executed."""
        return cls(WorkflowStatus.REDIRECT, context=dict(context or {}))

    @classmethod
    def jump_to(
        cls,
        target_stage_ref_id: str,
        context: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> TaskResult:
        """REDIRECT to ``target_stage_ref_id``: the engine resets and re-runs that stage,
        merging ``context`` into it and making ``outputs`` available to it. Jumps are not
        executed yet: the task fails naming this directive (``support.DIRECTIVES``)."""
        return cls(
            WorkflowStatus.REDIRECT,
            context=dict(context or {}),
            outputs=dict(outputs or {}),
            target_stage_ref_id=target_stage_ref_id,
        )

    @classmethod
    def builder(cls, status: WorkflowStatus) -> TaskResultBuilder:
        """A fluent :class:`TaskResultBuilder` for ``status``."""
        return TaskResultBuilder(status)

    def merge_outputs(self, other: TaskResult | None) -> TaskResult:
        """A new result with this status and target, and ``other``'s context/outputs laid over this one's."""
        if other is None:
            return self
        return TaskResult(
            status=self.status,
            context={**self.context, **other.context},
            outputs={**self.outputs, **other.outputs},
            target_stage_ref_id=self.target_stage_ref_id,
        )


class TaskResultBuilder:
    """Fluent construction of a :class:`TaskResult`; each method returns the builder."""

    def __init__(self, status: WorkflowStatus) -> None:
        self._status = status
        self._context: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}

    def context(self, context: dict[str, Any]) -> TaskResultBuilder:
        """Replace the context."""
        self._context = dict(context)
        return self

    def outputs(self, outputs: dict[str, Any]) -> TaskResultBuilder:
        """Replace the outputs."""
        self._outputs = dict(outputs)
        return self

    def add_context(self, key: str, value: Any) -> TaskResultBuilder:
        """Set one context key."""
        self._context[key] = value
        return self

    def add_output(self, key: str, value: Any) -> TaskResultBuilder:
        """Set one output key."""
        self._outputs[key] = value
        return self

    def build(self) -> TaskResult:
        """The result (the builder keeps no reference into it)."""
        return TaskResult(status=self._status, context=dict(self._context), outputs=dict(self._outputs))


__all__ = ["TaskResult", "TaskResultBuilder"]
