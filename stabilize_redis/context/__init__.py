"""Stage context with ancestor-output lookup (stabilize's ``stabilize.context``)."""

from stabilize_redis.context.stage_context import StageContext, create_merged_context

__all__ = ["StageContext", "create_merged_context"]
