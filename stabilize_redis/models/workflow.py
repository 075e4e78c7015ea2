"""Workflow: the top-level container of stages and run-level state."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from stabilize_redis.models.outputs import merge_outputs_in_order
from stabilize_redis.models.stage.enums import new_id
from stabilize_redis.models.stage.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.topology import is_top_level, topological_sort, validate_stage_graph


def _now_ms() -> int:
    return int(time.time() * 1000)


class WorkflowType(Enum):
    """PIPELINE: a full workflow; ORCHESTRATION: an ad-hoc run whose graph is not validated."""

    PIPELINE = "PIPELINE"
    ORCHESTRATION = "ORCHESTRATION"


@dataclass
class Trigger:
    """What started a workflow and the parameters it was given."""

    type: str = "manual"
    user: str = "anonymous"
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return all fields as a dict; ``Trigger.from_dict(t.to_dict()) == t``."""
        return {
            "type": self.type,
            "user": self.user,
            "parameters": self.parameters,
            "artifacts": self.artifacts,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Trigger:
        """Build from a dict; missing keys (or ``None``) give the defaults."""
        data = data or {}
        return cls(
            type=data.get("type", "manual"),
            user=data.get("user", "anonymous"),
            parameters=dict(data.get("parameters") or {}),
            artifacts=list(data.get("artifacts") or []),
            payload=dict(data.get("payload") or {}),
        )


@dataclass
class PausedDetails:
    """Who paused a workflow and for how long (epoch milliseconds)."""

    paused_by: str = ""
    pause_time: int | None = None
    resume_time: int | None = None
    paused_ms: int = 0

    @property
    def is_paused(self) -> bool:
        """True between a pause and the matching resume."""
        return self.pause_time is not None and self.resume_time is None


@dataclass
class Workflow:
    """A run of a stage graph.

    Contracts:

    * Construction (``__post_init__``) and :meth:`add_stage` give every stage a **weakref**
      to this workflow, so the Workflow object must be kept alive while stages are used.
    * ``config_version`` is informational and is not persisted.
    * ``context`` is execution-level (e.g. ``_max_jumps``).
    """

    id: str = field(default_factory=new_id)
    type: WorkflowType = WorkflowType.PIPELINE
    application: str = ""
    name: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    stages: list[StageExecution] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    trigger: Trigger = field(default_factory=Trigger)
    start_time: int | None = None
    end_time: int | None = None
    start_time_expiry: int | None = None
    is_canceled: bool = False
    canceled_by: str | None = None
    cancellation_reason: str | None = None
    paused: PausedDetails | None = None
    pipeline_config_id: str | None = None
    is_limit_concurrent: bool = False
    max_concurrent_executions: int = 0
    keep_waiting_pipelines: bool = False
    origin: str = "unknown"
    config_version: str | None = None

    def __post_init__(self) -> None:
        for stage in self.stages:
            stage.execution = self

    # ---- stages -----------------------------------------------------------------

    def add_stage(self, stage: StageExecution) -> None:
        """Append ``stage`` and link it to this workflow (weakref)."""
        stage.execution = self
        self.stages.append(stage)

    def remove_stage(self, stage_id: str) -> None:
        """Remove the stage with id ``stage_id`` (no error if absent)."""
        self.stages = [s for s in self.stages if s.id != stage_id]

    def stage_by_id(self, stage_id: str) -> StageExecution:
        """The stage with id ``stage_id``. Raises ValueError if there is none."""
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise ValueError(f"Stage {stage_id} not found in workflow {self.id}")

    def stage_by_ref_id(self, ref_id: str) -> StageExecution | None:
        """The first stage with ``ref_id``, or None."""
        for stage in self.stages:
            if stage.ref_id == ref_id:
                return stage
        return None

    def initial_stages(self) -> list[StageExecution]:
        """Top-level stages with no requisites, in stage order."""
        return [s for s in self.stages if s.is_initial() and not s.is_synthetic()]

    def top_level_stages(self) -> list[StageExecution]:
        """Non-synthetic stages, in stage order."""
        return [s for s in self.stages if not s.is_synthetic()]

    def cleanup(self) -> None:
        """Break stage/task back-references and drop the stages."""
        for stage in self.stages:
            stage.cleanup()
        self.stages.clear()

    # ---- context ----------------------------------------------------------------

    def get_context(self) -> dict[str, Any]:
        """Outputs of the top-level stages merged in topological order.

        Lists are concatenated without duplicates (first occurrence kept); any other value
        is last-wins.  Raises CircularDependencyError if the stages cannot be ordered.
        """
        ordered = topological_sort(self.stages, stage_filter=is_top_level)
        return merge_outputs_in_order(stage.outputs for stage in ordered)

    # ---- status -----------------------------------------------------------------

    def update_status(self, status: WorkflowStatus) -> None:
        """Set ``status`` without transition validation."""
        self.status = status

    def cancel(self, user: str, reason: str) -> None:
        """Flag the workflow canceled by ``user`` for ``reason`` (status is left to the engine)."""
        self.is_canceled = True
        self.canceled_by = user
        self.cancellation_reason = reason

    def pause(self, user: str) -> None:
        """Record a pause by ``user`` now and set status PAUSED."""
        self.paused = PausedDetails(paused_by=user, pause_time=_now_ms())
        self.status = WorkflowStatus.PAUSED

    def resume(self) -> None:
        """Set status RUNNING; if paused, record the resume time and the paused duration."""
        if self.paused is not None and self.paused.pause_time is not None:
            self.paused.resume_time = _now_ms()
            self.paused.paused_ms = self.paused.resume_time - self.paused.pause_time
        self.status = WorkflowStatus.RUNNING

    def paused_duration_relative_to(self, instant_ms: int) -> int:
        """``paused_ms`` if the pause began after ``instant_ms``, else 0."""
        if (
            self.paused is not None
            and self.paused.pause_time is not None
            and self.paused.pause_time > instant_ms
        ):
            return self.paused.paused_ms
        return 0

    # ---- factories --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        application: str,
        name: str,
        stages: list[StageExecution],
        trigger: Trigger | None = None,
        pipeline_config_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Workflow:
        """Validate the stage graph, then build a NOT_STARTED PIPELINE workflow.

        Raises:
            InvalidStageGraphError: duplicate ref, self edge or unknown requisite ref.
            CircularDependencyError: the stages form a cycle.
        """
        validate_stage_graph(stages)
        return cls(
            application=application,
            name=name,
            stages=stages,
            context=context if context is not None else {},
            trigger=trigger or Trigger(),
            pipeline_config_id=pipeline_config_id,
        )

    @classmethod
    def create_orchestration(cls, application: str, name: str, stages: list[StageExecution]) -> Workflow:
        """Build an ORCHESTRATION workflow without validating the graph."""
        return cls(type=WorkflowType.ORCHESTRATION, application=application, name=name, stages=stages)


__all__ = ["PausedDetails", "Trigger", "Workflow", "WorkflowType"]
