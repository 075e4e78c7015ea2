"""Resilience helpers: cooperative cancellation."""

from stabilize_redis.resilience.cancellation import (
    CancellationToken,
    TaskCancelledError,
    bind_token,
    current_token,
    is_cancellation_requested,
    raise_if_cancellation_requested,
)

__all__ = [
    "CancellationToken",
    "TaskCancelledError",
    "bind_token",
    "current_token",
    "is_cancellation_requested",
    "raise_if_cancellation_requested",
]
