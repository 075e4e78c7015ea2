"""Domain models: workflows, stages, tasks and their status vocabulary."""

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution, SyntheticStageOwner
from stabilize_redis.models.status import (
    ACTIVE_STATUSES,
    COMPLETED_STATUSES,
    CONTINUABLE_STATUSES,
    HALT_STATUSES,
    VALID_TRANSITIONS,
    InvalidStateTransitionError,
    WorkflowStatus,
    can_transition,
    validate_transition,
)
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import PausedDetails, Trigger, Workflow, WorkflowType

__all__ = [
    "ACTIVE_STATUSES",
    "COMPLETED_STATUSES",
    "CONTINUABLE_STATUSES",
    "HALT_STATUSES",
    "VALID_TRANSITIONS",
    "InvalidStateTransitionError",
    "JoinType",
    "MultiInstanceConfig",
    "PausedDetails",
    "SplitType",
    "StageExecution",
    "SyntheticStageOwner",
    "TaskExecution",
    "Trigger",
    "Workflow",
    "WorkflowStatus",
    "WorkflowType",
    "can_transition",
    "validate_transition",
]
