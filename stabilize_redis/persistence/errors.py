"""Errors of the WorkflowStore API (stabilize's names)."""

from __future__ import annotations


class WorkflowNotFoundError(Exception):
    """No workflow with this id in the namespace (nor in its PostgreSQL snapshots)."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"workflow {execution_id} not found")
        self.execution_id = execution_id


class WorkflowExistsError(Exception):
    """``store`` was asked to store a workflow id that already exists."""


class StageNotFoundError(ValueError):
    """No stage with this id (stabilize's ``retrieve_stage`` raises ValueError for it)."""


__all__ = ["StageNotFoundError", "WorkflowExistsError", "WorkflowNotFoundError"]
