"""stabilize's ``handlers.jump_to_stage.traversal`` import path for ``dag.traversal``."""

from stabilize_redis.dag.traversal import (
    get_downstream_stages,
    get_resettable_downstream_stages,
    get_skippable_downstream_stages,
    get_skipped_stages,
)

__all__ = ["get_downstream_stages", "get_resettable_downstream_stages", "get_skippable_downstream_stages",
           "get_skipped_stages"]
