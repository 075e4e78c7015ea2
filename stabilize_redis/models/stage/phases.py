"""The phases of a stage with synthetic children: which child runs when.

A synthetic stage (``parent_stage_id`` set) belongs to one phase of its parent:

* ``BEFORE`` (owner STAGE_BEFORE): runs before the parent's tasks, which start once every
  before-stage finished continuably; a halted before-stage fails the parent instead;
* ``AFTER`` (owner STAGE_AFTER): runs after the parent's tasks succeeded;
* ``FAILURE`` (owner STAGE_AFTER, context ``ON_FAILURE_KEY`` set: built by a builder's
  ``on_failure_stages``): runs only when the parent's tasks or before-stages failed.

Within a phase, children wait for each other by requisite ref ids among siblings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabilize_redis.models.stage.enums import SyntheticStageOwner

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

BEFORE = "before"
AFTER = "after"
FAILURE = "failure"
PHASES = (BEFORE, AFTER, FAILURE)

ON_FAILURE_KEY = "_on_failure_stage"
"""Context flag of a synthetic STAGE_AFTER stage that runs only when its parent fails."""


def phase_of(stage: StageExecution) -> str:
    """The phase of synthetic ``stage`` (a stage without an owner counts as BEFORE)."""
    if stage.synthetic_stage_owner is SyntheticStageOwner.STAGE_AFTER:
        return FAILURE if stage.context.get(ON_FAILURE_KEY) else AFTER
    return BEFORE


def owner_of(phase: str) -> SyntheticStageOwner:
    """The ``SyntheticStageOwner`` (and ContinueParentStage phase) of ``phase``."""
    return SyntheticStageOwner.STAGE_BEFORE if phase == BEFORE else SyntheticStageOwner.STAGE_AFTER


__all__ = ["AFTER", "BEFORE", "FAILURE", "ON_FAILURE_KEY", "PHASES", "owner_of", "phase_of"]
