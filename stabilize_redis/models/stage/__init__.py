"""Stage model: :class:`StageExecution` and the join/split/synthetic enums."""

from stabilize_redis.models.stage.enums import JoinType, SplitType, SyntheticStageOwner
from stabilize_redis.models.stage.stage import OUTPUT_REDUCERS_KEY, PLANNING_FAILED, StageExecution

__all__ = [
    "OUTPUT_REDUCERS_KEY",
    "PLANNING_FAILED",
    "JoinType",
    "SplitType",
    "StageExecution",
    "SyntheticStageOwner",
]
