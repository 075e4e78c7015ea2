"""``CancelStageHandler`` at stabilize's import path (``stabilize.handlers.cancel_stage``); it
lives in ``handlers.control``."""

from stabilize_redis.handlers.control import CancelStageHandler

__all__ = ["CancelStageHandler"]
