"""Resilience helpers: cooperative cancellation and stabilize's handler settings."""

from stabilize_redis.resilience.cancellation import (
    CancellationToken,
    TaskCancelledError,
    bind_current_token,
    bind_token,
    cancel_task,
    current_cancellation_token,
    current_token,
    get_token,
    is_cancellation_requested,
    raise_if_cancellation_requested,
    register_token,
    reset_cancellation_state,
    reset_current_token,
    unregister_token,
)
from stabilize_redis.resilience.config import HandlerConfig, get_handler_config, reset_handler_config

__all__ = [
    "CancellationToken",
    "HandlerConfig",
    "TaskCancelledError",
    "bind_current_token",
    "bind_token",
    "cancel_task",
    "current_cancellation_token",
    "current_token",
    "get_handler_config",
    "get_token",
    "is_cancellation_requested",
    "raise_if_cancellation_requested",
    "register_token",
    "reset_cancellation_state",
    "reset_current_token",
    "reset_handler_config",
    "unregister_token",
]
