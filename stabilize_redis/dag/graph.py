"""StageGraphBuilder: the collector a stage definition builder adds synthetic stages to.

A builder's ``before_stages``/``after_stages``/``on_failure_stages`` receive one of these for
the parent stage; every stage added becomes a synthetic child of that parent with the graph's
owner (``STAGE_BEFORE`` or ``STAGE_AFTER``). Dependencies between the added stages are plain
requisite ref ids among siblings (``connect``, ``append``), as for top-level stages. Nothing is
stored here: the engine stores ``build()``'s stages in the commit that plans them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stabilize_redis.models.stage import StageExecution, SyntheticStageOwner


class StageGraphBuilder:
    """Synthetic stages of one parent and phase, in the order they were added.

    Contracts: ``add`` sets the stage's ``parent_stage_id`` and ``synthetic_stage_owner`` (and
    links it to the parent's workflow, if any); the first stage added also gets the builder's
    initial ``requisite_stage_ref_ids``. ``connect(a, b)`` makes ``b`` wait for ``a``.
    """

    def __init__(self, parent: StageExecution, owner: SyntheticStageOwner,
                 requisite_stage_ref_ids: set[str] | None = None) -> None:
        self.parent = parent
        self.owner = owner
        self.requisite_stage_ref_ids: set[str] = set(requisite_stage_ref_ids or ())
        self._stages: list[StageExecution] = []

    @classmethod
    def before_stages(cls, parent: StageExecution) -> StageGraphBuilder:
        """A builder of stages that run before ``parent``'s tasks."""
        from stabilize_redis.models.stage import SyntheticStageOwner

        return cls(parent, SyntheticStageOwner.STAGE_BEFORE)

    @classmethod
    def after_stages(cls, parent: StageExecution,
                     requisite_stage_ref_ids: set[str] | None = None) -> StageGraphBuilder:
        """A builder of stages that run after ``parent``'s tasks (also used for on-failure stages)."""
        from stabilize_redis.models.stage import SyntheticStageOwner

        return cls(parent, SyntheticStageOwner.STAGE_AFTER, requisite_stage_ref_ids)

    def add(self, stage: StageExecution) -> StageGraphBuilder:
        """Make ``stage`` a synthetic child of the parent with this builder's owner; returns self."""
        stage.parent_stage_id = self.parent.id
        stage.synthetic_stage_owner = self.owner
        if self.parent.has_execution():
            stage.execution = self.parent.execution
        if not self._stages and self.requisite_stage_ref_ids:
            stage.requisite_stage_ref_ids = stage.requisite_stage_ref_ids | self.requisite_stage_ref_ids
        self._stages.append(stage)
        return self

    def append(self, stage: StageExecution) -> StageGraphBuilder:
        """Add ``stage`` so that it waits for the stage added last (if any); returns self."""
        if self._stages:
            self.connect(self._stages[-1], stage)
        return self.add(stage)

    def connect(self, previous: StageExecution, next_stage: StageExecution) -> None:
        """``next_stage`` waits for ``previous`` (adds ``previous.ref_id`` to its requisites)."""
        next_stage.requisite_stage_ref_ids = set(next_stage.requisite_stage_ref_ids) | {previous.ref_id}

    def build(self) -> list[StageExecution]:
        """The stages added, in order (a new list)."""
        return list(self._stages)

    @property
    def stages(self) -> list[StageExecution]:
        return list(self._stages)

    @property
    def last_stage(self) -> StageExecution | None:
        return self._stages[-1] if self._stages else None

    def is_empty(self) -> bool:
        return not self._stages


def connect_stages_linearly(stages: list[StageExecution]) -> None:
    """Make each stage of ``stages`` wait for the one before it."""
    for previous, current in zip(stages, stages[1:], strict=False):
        current.requisite_stage_ref_ids = set(current.requisite_stage_ref_ids) | {previous.ref_id}


def add_stages_to_execution(stages: list[StageExecution], add_stage: Callable[[StageExecution], None]) -> None:
    """Call ``add_stage`` for each stage, in order (e.g. ``workflow.add_stage``)."""
    for stage in stages:
        add_stage(stage)


__all__ = ["StageGraphBuilder", "add_stages_to_execution", "connect_stages_linearly"]
