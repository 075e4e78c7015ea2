"""The output-merge rule's ``dag`` import path; it lives in ``models.outputs``."""

from stabilize_redis.models.outputs import merge_outputs_in_order

__all__ = ["merge_outputs_in_order"]
