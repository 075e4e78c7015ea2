"""Human-in-the-loop helpers, with stabilize's API (``stabilize.hitl``).

* :class:`ApprovalTask` suspends its stage until an ``approve`` or ``reject`` signal arrives.
  ``approve`` -> SUCCEEDED with outputs ``approved=True`` and ``approval`` (the signal data);
  ``reject`` -> TERMINAL ("Approval rejected", ``approved``/``approval`` in the stage context),
  or FAILED_CONTINUE (the same values as outputs) when the stage context sets
  ``approval_reject_continues``. Any other signal suspends it again.
* :func:`send_signal` / :func:`approve` / :func:`reject` push a ``SignalStage``; persistent by
  default, so a decision sent before the gate suspended is buffered and consumed by the commit
  that suspends it (``handlers.signal_stage``). The gate survives worker restarts and restore
  from PostgreSQL: the SUSPENDED stage and any buffered signal are fields of the workflow hash.
* :func:`get_signal` reads the signal that resumed a stage, inside a task.

``user`` is accepted for stabilize compatibility but not recorded: this engine's SignalStage
has no ``user`` field (it is never merged into the signal data, which tasks expose as outputs).
"""

from __future__ import annotations

from typing import Any, Protocol

from stabilize_redis.models.stage import StageExecution
from stabilize_redis.queue.messages import Message, SignalStage
from stabilize_redis.tasks.interface import Task
from stabilize_redis.tasks.result import TaskResult

APPROVE_SIGNAL = "approve"
REJECT_SIGNAL = "reject"


class _Queue(Protocol):
    """Anything that enqueues a message: a RedisQueue, ``client.queue``."""

    def push(self, message: Message, /) -> Any: ...


class ApprovalTask(Task):
    """Waits (SUSPENDED) for an ``approve`` or ``reject`` signal, then succeeds or fails."""

    @property
    def aliases(self) -> list[str]:
        return ["human_approval", "hitl_approval"]

    def execute(self, stage: StageExecution) -> TaskResult:
        name, data = get_signal(stage)
        if name == APPROVE_SIGNAL:
            return TaskResult.success(outputs={"approved": True, "approval": data})
        if name == REJECT_SIGNAL:
            if stage.context.get("approval_reject_continues", False):
                return TaskResult.failed_continue("Approval rejected", outputs={"approved": False, "approval": data})
            return TaskResult.terminal("Approval rejected", context={"approved": False, "approval": data})
        return TaskResult.suspend()


def _check_owner(store: Any, execution_id: str, stage_id: str) -> None:
    """ValueError unless ``stage_id`` is a stage of workflow ``execution_id``."""
    try:
        found = store.retrieve(execution_id) if not hasattr(store, "retrieve_stage") else None
        if found is None:  # one stage read, not the whole workflow
            store.retrieve_stage(stage_id, execution_id)
        elif all(stage.id != stage_id for stage in found.stages):
            raise KeyError(stage_id)
    except (KeyError, LookupError, ValueError) as exc:
        raise ValueError(f"Stage {stage_id} is not a stage of workflow {execution_id}; "
                         "refusing to signal across workflows") from exc
    except Exception as exc:  # noqa: BLE001 - any lookup failure means it cannot be addressed
        raise ValueError(f"Stage {stage_id} could not be resolved in workflow {execution_id}: {exc}") from exc


def send_signal(queue: _Queue, execution_id: str, stage_id: str, signal_name: str,
                signal_data: dict[str, Any] | None = None, *, execution_type: str = "PIPELINE",
                persistent: bool = True, store: Any = None, user: str = "") -> None:
    """Push a SignalStage for ``stage_id`` of ``execution_id``. ``persistent`` (default): buffer
    it if the stage has not suspended yet (WCP-24); otherwise it is discarded unless the stage
    is SUSPENDED (WCP-23). With ``store``, a stage of another workflow (or none) raises
    ValueError here; without it such a signal is dead-lettered ``unknown_target``."""
    del user  # not carried (see the module docstring)
    if store is not None:
        _check_owner(store, execution_id, stage_id)
    queue.push(SignalStage(execution_type=execution_type, execution_id=execution_id, stage_id=stage_id,
                           signal_name=signal_name, signal_data=dict(signal_data or {}), persistent=persistent))


def approve(queue: _Queue, execution_id: str, stage_id: str, data: dict[str, Any] | None = None, *,
            execution_type: str = "PIPELINE", store: Any = None, user: str = "") -> None:
    """Approve a stage waiting on an :class:`ApprovalTask` (a persistent ``approve`` signal)."""
    send_signal(queue, execution_id, stage_id, APPROVE_SIGNAL, data, execution_type=execution_type,
                store=store, user=user)


def reject(queue: _Queue, execution_id: str, stage_id: str, data: dict[str, Any] | None = None, *,
           execution_type: str = "PIPELINE", store: Any = None, user: str = "") -> None:
    """Reject a stage waiting on an :class:`ApprovalTask` (a persistent ``reject`` signal)."""
    send_signal(queue, execution_id, stage_id, REJECT_SIGNAL, data, execution_type=execution_type,
                store=store, user=user)


def get_signal(stage: StageExecution) -> tuple[str | None, dict[str, Any]]:
    """``(signal_name, signal_data)`` of the signal that resumed ``stage``; ``(None, {})`` if none."""
    return stage.context.get("_signal_name"), stage.context.get("_signal_data") or {}


__all__ = ["APPROVE_SIGNAL", "REJECT_SIGNAL", "ApprovalTask", "approve", "get_signal", "reject", "send_signal"]
