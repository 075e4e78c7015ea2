"""stabilize's control handlers at their import path (``stabilize.handlers.workflow_control``);
they live in ``handlers.control``."""

from stabilize_redis.handlers.control import CancelWorkflowHandler, PauseTaskHandler, ResumeStageHandler

__all__ = ["CancelWorkflowHandler", "PauseTaskHandler", "ResumeStageHandler"]
