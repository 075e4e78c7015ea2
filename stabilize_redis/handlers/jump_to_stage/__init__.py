"""JumpToStage (stabilize's ``handlers.jump_to_stage`` package): the handler, and the graph
walks of a jump over a whole Workflow (``traversal``)."""

from stabilize_redis.handlers.jump_to_stage.handler import (
    DEFAULT_MAX_JUMPS,
    JUMP_ERROR,
    JumpToStageHandler,
    max_jumps,
)

__all__ = ["DEFAULT_MAX_JUMPS", "JUMP_ERROR", "JumpToStageHandler", "max_jumps"]
