"""StageExecution: a node of the workflow DAG.

Edges are expressed by ``requisite_stage_ref_ids`` (the ref ids this stage waits for).
Synthetic stages carry ``parent_stage_id`` and a :class:`SyntheticStageOwner` and run
before or after their parent's tasks.  Navigation helpers look the graph up in
``execution.stages``; a stage that is not attached to a workflow has no neighbours.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage.enums import JoinType, SplitType, SyntheticStageOwner, new_id
from stabilize_redis.models.status import CONTINUABLE_STATUSES, HALT_STATUSES, WorkflowStatus
from stabilize_redis.models.task import TaskExecution

if TYPE_CHECKING:
    from stabilize_redis.models.workflow import Workflow

OUTPUT_REDUCERS_KEY = "_output_reducers"
"""Context key through which ``output_reducers`` is persisted (it has no column of its own)."""

PLANNING_FAILED = "beforeStagePlanningFailed"
"""Context flag: planning raised before any task existed to carry the failure."""

_IN_PROGRESS = frozenset({WorkflowStatus.NOT_STARTED, WorkflowStatus.RUNNING})
_DONE_OK = frozenset({WorkflowStatus.SUCCEEDED, WorkflowStatus.SKIPPED, WorkflowStatus.FAILED_CONTINUE})


def _halt_of(statuses: list[WorkflowStatus]) -> WorkflowStatus | None:
    """First halt status found, checked in TERMINAL, STOPPED, CANCELED priority."""
    for candidate in (WorkflowStatus.TERMINAL, WorkflowStatus.STOPPED, WorkflowStatus.CANCELED):
        if candidate in statuses:
            return candidate
    return None


@dataclass
class StageExecution:
    """Runtime state of one stage.

    Contracts:

    * ``id`` is a fresh ULID; ``ref_id`` is the DAG key, unique within a workflow.
    * ``version`` is the optimistic-locking counter maintained by the store.
    * ``output_reducers`` is mirrored into ``context["_output_reducers"]`` on construction
      and rehydrated from it when the field is empty (the store persists only context).
    * Assigning ``tasks`` gives every task a weakref back to this stage.
    * The workflow link is a weakref by default; the Workflow object must be kept alive.
    * ``join_type=N_OF_M`` requires ``join_threshold >= 0`` (ValueError otherwise).
    """

    id: str = field(default_factory=new_id)
    ref_id: str = ""
    type: str = ""
    name: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskExecution] = field(default_factory=list)
    requisite_stage_ref_ids: set[str] = field(default_factory=set)
    parent_stage_id: str | None = None
    synthetic_stage_owner: SyntheticStageOwner | None = None
    start_time: int | None = None
    end_time: int | None = None
    start_time_expiry: int | None = None
    scheduled_time: int | None = None
    version: int = 0
    cleanup_on_failure: bool = False
    finalizer_names: list[str] = field(default_factory=list)
    join_type: JoinType = JoinType.AND
    join_threshold: int = 0
    split_type: SplitType = SplitType.AND
    split_conditions: dict[str, str] = field(default_factory=dict)
    mi_config: MultiInstanceConfig | None = None
    deferred_choice_group: str | None = None
    milestone_ref_id: str | None = None
    milestone_status: str | None = None
    mutex_key: str | None = None
    mutex_scope: str = "workflow"
    cancel_region: str | None = None
    output_reducers: dict[str, str] = field(default_factory=dict)
    _execution: weakref.ReferenceType[Workflow] | Workflow | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.join_type is JoinType.N_OF_M and self.join_threshold < 0:
            raise ValueError(f"join_threshold must be >= 0 for an N_OF_M join, got {self.join_threshold}")
        if not isinstance(self.requisite_stage_ref_ids, set):
            self.requisite_stage_ref_ids = set(self.requisite_stage_ref_ids)
        if self.output_reducers:
            self.context.setdefault(OUTPUT_REDUCERS_KEY, dict(self.output_reducers))
        elif isinstance(self.context.get(OUTPUT_REDUCERS_KEY), dict):
            self.output_reducers = dict(self.context[OUTPUT_REDUCERS_KEY])

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "tasks":
            for task in value:
                task.stage = self

    # ---- optimistic locking -----------------------------------------------------

    @property
    def phase_version(self) -> tuple[str, int]:
        """``(status.name, version)`` for phase-checked optimistic locking."""
        return (self.status.name, self.version)

    # ---- workflow link ----------------------------------------------------------

    @property
    def execution(self) -> Workflow:
        """The owning workflow. Raises ValueError if unattached or garbage collected."""
        ref = self._execution
        if ref is None:
            raise ValueError(f"Stage {self.ref_id or self.id} is not attached to a workflow")
        if isinstance(ref, weakref.ReferenceType):
            workflow = ref()
            if workflow is None:
                raise ValueError(f"Workflow of stage {self.ref_id or self.id} has been garbage collected")
            return workflow
        return ref

    @execution.setter
    def execution(self, value: Workflow) -> None:
        """Attach to ``value`` through a weakref."""
        self._execution = weakref.ref(value)

    def set_execution_strong(self, value: Workflow) -> None:
        """Attach to ``value`` with a strong reference (for stages that outlive their caller's workflow ref)."""
        self._execution = value

    def has_execution(self) -> bool:
        """True if attached to a workflow that is still alive."""
        ref = self._execution
        if ref is None:
            return False
        if isinstance(ref, weakref.ReferenceType):
            return ref() is not None
        return True

    def cleanup(self) -> None:
        """Drop the workflow link and the tasks' stage links (breaks reference cycles)."""
        self._execution = None
        for task in self.tasks:
            task.cleanup()

    # ---- tasks ------------------------------------------------------------------

    def first_task(self) -> TaskExecution | None:
        """The first task, or None when the stage has none."""
        return self.tasks[0] if self.tasks else None

    def next_task(self, task: TaskExecution) -> TaskExecution | None:
        """The task after ``task``; None after a ``stage_end`` task, the last task, or an unknown task."""
        if task.stage_end:
            return None
        for index, candidate in enumerate(self.tasks):
            if candidate is task or candidate.id == task.id:
                return self.tasks[index + 1] if index + 1 < len(self.tasks) else None
        return None

    def has_tasks(self) -> bool:
        """True if the stage has at least one task."""
        return bool(self.tasks)

    # ---- status -----------------------------------------------------------------

    def determine_status(self) -> WorkflowStatus:
        """Derive this stage's status from its before-stages, tasks and after-stages.

        Priority: (1) a halt among before-stages/tasks -- TERMINAL gives
        :meth:`failure_status`, else STOPPED, else CANCELED; (2) PAUSED, BUFFERED,
        SUSPENDED; (3) RUNNING while any core item is NOT_STARTED/RUNNING (or in any
        other unfinished state); (4) a halted after-stage gives its halt status, a
        NOT_STARTED/RUNNING after-stage gives RUNNING; (5) FAILED_CONTINUE if a core item
        had it, else SUCCEEDED.  With no tasks and no before-stages a RUNNING stage counts
        as SUCCEEDED once its after-stages are done (``failure_status()`` if planning
        failed); a stage in any other status yields NOT_STARTED.
        """
        after = [s.status for s in self.after_stages()]
        core = [s.status for s in self.before_stages()] + [t.status for t in self.tasks]

        if not core:
            if self.status is not WorkflowStatus.RUNNING:
                return WorkflowStatus.NOT_STARTED
            if any(s in _IN_PROGRESS for s in after):
                return WorkflowStatus.RUNNING
            after_halt = _halt_of(after)
            if after_halt is not None:
                return after_halt
            if self.context.get(PLANNING_FAILED):
                return self.failure_status()
            return WorkflowStatus.SUCCEEDED

        core_halt = _halt_of(core)
        if core_halt is WorkflowStatus.TERMINAL:
            return self.failure_status()
        if core_halt is not None:
            return core_halt
        for waiting in (WorkflowStatus.PAUSED, WorkflowStatus.BUFFERED, WorkflowStatus.SUSPENDED):
            if waiting in core:
                return waiting
        if not all(s in _DONE_OK for s in core):
            return WorkflowStatus.RUNNING

        after_halt = _halt_of(after)
        if after_halt is not None:
            return after_halt
        if any(s in _IN_PROGRESS for s in after):
            return WorkflowStatus.RUNNING
        if WorkflowStatus.FAILED_CONTINUE in core:
            return WorkflowStatus.FAILED_CONTINUE
        return WorkflowStatus.SUCCEEDED

    def failure_status(self, default: WorkflowStatus = WorkflowStatus.TERMINAL) -> WorkflowStatus:
        """Status a failure of this stage resolves to.

        ``context["continuePipelineOnFailure"]`` truthy -> FAILED_CONTINUE; otherwise
        ``context["failPipeline"]`` (default True) truthy -> ``default``; otherwise STOPPED.
        """
        if self.continue_pipeline_on_failure:
            return WorkflowStatus.FAILED_CONTINUE
        if self.should_fail_pipeline():
            return default
        return WorkflowStatus.STOPPED

    @property
    def continue_pipeline_on_failure(self) -> bool:
        """``context["continuePipelineOnFailure"]`` (default False)."""
        return bool(self.context.get("continuePipelineOnFailure", False))

    def should_fail_pipeline(self) -> bool:
        """``context["failPipeline"]`` (default True)."""
        return bool(self.context.get("failPipeline", True))

    @property
    def allow_sibling_stages_to_continue_on_failure(self) -> bool:
        """``context["allowSiblingStagesToContinueOnFailure"]`` (default False)."""
        return bool(self.context.get("allowSiblingStagesToContinueOnFailure", False))

    # ---- navigation -------------------------------------------------------------

    def _siblings(self) -> list[StageExecution]:
        return list(self.execution.stages) if self.has_execution() else []

    def is_initial(self) -> bool:
        """True if the stage has no requisites."""
        return not self.requisite_stage_ref_ids

    def is_join(self) -> bool:
        """True if the stage waits on more than one upstream."""
        return len(self.requisite_stage_ref_ids) > 1

    def upstream_stages(self) -> list[StageExecution]:
        """Stages whose ref_id is one of this stage's requisites, in workflow order."""
        return [s for s in self._siblings() if s.ref_id in self.requisite_stage_ref_ids]

    def downstream_stages(self) -> list[StageExecution]:
        """Stages that list this stage's ref_id as a requisite, in workflow order."""
        return [s for s in self._siblings() if self.ref_id in s.requisite_stage_ref_ids]

    def all_upstream_stages_complete(self) -> bool:
        """True if every upstream is in CONTINUABLE_STATUSES (vacuously True with none)."""
        return all(s.status in CONTINUABLE_STATUSES for s in self.upstream_stages())

    def any_upstream_stages_failed(self) -> bool:
        """True if an upstream halted, looking through NOT_STARTED upstreams transitively."""
        seen: set[str] = set()
        pending = self.upstream_stages()
        while pending:
            stage = pending.pop()
            if stage.id in seen:
                continue
            seen.add(stage.id)
            if stage.status in HALT_STATUSES:
                return True
            if stage.status is WorkflowStatus.NOT_STARTED:
                pending.extend(stage.upstream_stages())
        return False

    def synthetic_stages(self) -> list[StageExecution]:
        """Stages whose ``parent_stage_id`` is this stage's id."""
        return [s for s in self._siblings() if s.parent_stage_id == self.id]

    def before_stages(self) -> list[StageExecution]:
        """Synthetic children owned STAGE_BEFORE."""
        return [
            s for s in self.synthetic_stages() if s.synthetic_stage_owner is SyntheticStageOwner.STAGE_BEFORE
        ]

    def after_stages(self) -> list[StageExecution]:
        """Synthetic children owned STAGE_AFTER."""
        return [
            s for s in self.synthetic_stages() if s.synthetic_stage_owner is SyntheticStageOwner.STAGE_AFTER
        ]

    def first_before_stages(self) -> list[StageExecution]:
        """Before-stages with no requisites (the ones to start first)."""
        return [s for s in self.before_stages() if s.is_initial()]

    def first_after_stages(self) -> list[StageExecution]:
        """After-stages with no requisites (the ones to start first)."""
        return [s for s in self.after_stages() if s.is_initial()]

    def is_synthetic(self) -> bool:
        """True if the stage has a parent stage."""
        return self.parent_stage_id is not None

    def parent(self) -> StageExecution:
        """The parent of a synthetic stage.

        Raises ValueError if the stage is not synthetic, not attached, or the parent is missing.
        """
        if self.parent_stage_id is None:
            raise ValueError(f"Stage {self.ref_id} is not a synthetic stage")
        for stage in self.execution.stages:
            if stage.id == self.parent_stage_id:
                return stage
        raise ValueError(f"Parent stage {self.parent_stage_id} of stage {self.ref_id} not found")

    def ancestors(self) -> list[StageExecution]:
        """All transitive upstreams and parents, depth-first, each once, excluding self."""
        seen: set[str] = {self.id}
        result: list[StageExecution] = []

        def direct(stage: StageExecution) -> list[StageExecution]:
            found = stage.upstream_stages()
            if stage.parent_stage_id is not None:
                with contextlib.suppress(ValueError):
                    found.append(stage.parent())
            return found

        def visit(stage: StageExecution) -> None:
            if stage.id in seen:
                return
            seen.add(stage.id)
            result.append(stage)
            for nxt in direct(stage):
                visit(nxt)

        for start in direct(self):
            visit(start)
        return result

    # ---- factories --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        type: str,
        name: str,
        ref_id: str,
        context: dict[str, Any] | None = None,
        requisite_stage_ref_ids: set[str] | None = None,
    ) -> StageExecution:
        """Create a NOT_STARTED top-level stage."""
        return cls(
            type=type,
            name=name,
            ref_id=ref_id,
            context=context if context is not None else {},
            requisite_stage_ref_ids=set(requisite_stage_ref_ids or ()),
        )

    @classmethod
    def create_synthetic(
        cls,
        type: str,
        name: str,
        parent: StageExecution,
        owner: SyntheticStageOwner,
        context: dict[str, Any] | None = None,
        tasks: list[TaskExecution] | None = None,
        ref_id: str | None = None,
        requisite_stage_ref_ids: set[str] | None = None,
    ) -> StageExecution:
        """Create a synthetic child of ``parent`` (run before its tasks for STAGE_BEFORE, after
        them for STAGE_AFTER) with ``tasks``, and a fresh ULID ref_id unless ``ref_id`` is given;
        ``requisite_stage_ref_ids`` name sibling synthetic stages of the same parent.

        The child shares the parent's workflow link (weakref) when the parent has one; it is
        *not* added to ``workflow.stages`` -- call ``Workflow.add_stage`` for that (or add it
        to a StageGraphBuilder in a stage definition builder, or ``store.add_stage`` it).
        """
        stage = cls(
            type=type,
            name=name,
            ref_id=ref_id or new_id(),
            context=context if context is not None else {},
            tasks=list(tasks or []),
            requisite_stage_ref_ids=set(requisite_stage_ref_ids or ()),
            parent_stage_id=parent.id,
            synthetic_stage_owner=owner,
        )
        if parent.has_execution():
            stage.execution = parent.execution
        return stage


__all__ = ["OUTPUT_REDUCERS_KEY", "PLANNING_FAILED", "StageExecution"]
