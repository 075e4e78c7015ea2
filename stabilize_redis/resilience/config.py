"""``HandlerConfig``: stabilize's handler retry and timing settings, with its environment names.

The engine's own settings are ``EngineConfig`` (``stabilize_redis.config``); a HandlerConfig
given to ``QueueProcessor(handler_config=...)`` is translated by ``to_engine_config`` (the
fields that have an engine counterpart). ``concurrency_*`` drive
``StabilizeHandler.retry_on_concurrency_error``. ``poll_frequency_ms`` has no effect here:
workers block on the streams instead of polling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stabilize_redis.config import EngineConfig, env_float, env_int


@dataclass
class BackoffConfig:
    """Exponential backoff: ``min_delay_ms`` doubling (``factor``) up to ``max_delay_ms``,
    each delay moved by up to ``jitter`` of itself either way."""

    min_delay_ms: int = 100
    max_delay_ms: int = 1000
    factor: float = 2.0
    jitter: float = 0.25

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        base = min(self.min_delay_ms * (self.factor ** min(attempt, 30)), self.max_delay_ms)
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread)) / 1000.0


@dataclass
class HandlerConfig:
    """Handler retry and backoff settings (defaults and environment variables as stabilize's:
    ``STABILIZE_HANDLER_MAX_RETRIES``, ``_MIN_DELAY_MS``, ``_MAX_DELAY_MS``, ``_BACKOFF_FACTOR``,
    ``_JITTER``, ``STABILIZE_MAX_STAGE_WAIT_RETRIES``, ``STABILIZE_DEFAULT_TASK_TIMEOUT_S``,
    ``STABILIZE_TASK_BACKOFF_MIN_MS``/``_MAX_MS``, ``STABILIZE_HANDLER_RETRY_DELAY_S``,
    ``STABILIZE_PROCESSOR_POLL_MS``, ``STABILIZE_PROCESSOR_MAX_WORKERS``,
    ``STABILIZE_DEFAULT_PAGE_SIZE``)."""

    concurrency_max_retries: int = 3
    concurrency_min_delay_ms: int = 100
    concurrency_max_delay_ms: int = 1000
    concurrency_backoff_factor: float = 2.0
    concurrency_jitter: float = 0.25
    max_stage_wait_retries: int = 240
    default_task_timeout_seconds: float = 300.0
    task_backoff_min_delay_ms: int = 1000
    task_backoff_max_delay_ms: int = 60000
    handler_retry_delay_seconds: float = 15.0
    poll_frequency_ms: int = 50
    max_workers: int = 10
    default_page_size: int = 100

    @classmethod
    def from_env(cls) -> HandlerConfig:
        d = cls()
        return cls(
            concurrency_max_retries=env_int("STABILIZE_HANDLER_MAX_RETRIES", d.concurrency_max_retries),
            concurrency_min_delay_ms=env_int("STABILIZE_HANDLER_MIN_DELAY_MS", d.concurrency_min_delay_ms),
            concurrency_max_delay_ms=env_int("STABILIZE_HANDLER_MAX_DELAY_MS", d.concurrency_max_delay_ms),
            concurrency_backoff_factor=env_float("STABILIZE_HANDLER_BACKOFF_FACTOR", d.concurrency_backoff_factor),
            concurrency_jitter=env_float("STABILIZE_HANDLER_JITTER", d.concurrency_jitter),
            max_stage_wait_retries=env_int("STABILIZE_MAX_STAGE_WAIT_RETRIES", d.max_stage_wait_retries),
            default_task_timeout_seconds=env_float("STABILIZE_DEFAULT_TASK_TIMEOUT_S", d.default_task_timeout_seconds),
            task_backoff_min_delay_ms=env_int("STABILIZE_TASK_BACKOFF_MIN_MS", d.task_backoff_min_delay_ms),
            task_backoff_max_delay_ms=env_int("STABILIZE_TASK_BACKOFF_MAX_MS", d.task_backoff_max_delay_ms),
            handler_retry_delay_seconds=env_float("STABILIZE_HANDLER_RETRY_DELAY_S", d.handler_retry_delay_seconds),
            poll_frequency_ms=env_int("STABILIZE_PROCESSOR_POLL_MS", d.poll_frequency_ms),
            max_workers=env_int("STABILIZE_PROCESSOR_MAX_WORKERS", d.max_workers),
            default_page_size=env_int("STABILIZE_DEFAULT_PAGE_SIZE", d.default_page_size),
        )

    def get_backoff_config(self) -> BackoffConfig:
        """The backoff of concurrency retries."""
        return BackoffConfig(self.concurrency_min_delay_ms, self.concurrency_max_delay_ms,
                             self.concurrency_backoff_factor, self.concurrency_jitter)

    def to_engine_config(self, base: EngineConfig | None = None) -> EngineConfig:
        """``base`` (default: ``EngineConfig.from_env()``) with this config's task backoff,
        task timeout, stage-wait retries and handler retry delay."""
        values = dict((base or EngineConfig.from_env()).__dict__)
        values.update(
            task_backoff_min_ms=self.task_backoff_min_delay_ms,
            task_backoff_max_ms=self.task_backoff_max_delay_ms,
            default_task_timeout_s=self.default_task_timeout_seconds,
            handler_retry_delay_s=self.handler_retry_delay_seconds,
            max_stage_wait_retries=self.max_stage_wait_retries,
        )
        return EngineConfig(**values)


_default: HandlerConfig | None = None


def get_handler_config() -> HandlerConfig:
    """The process-wide HandlerConfig, read from the environment on first use."""
    global _default
    if _default is None:
        _default = HandlerConfig.from_env()
    return _default


def reset_handler_config() -> None:
    """Forget the process-wide HandlerConfig (the next ``get_handler_config`` reads the
    environment again)."""
    global _default
    _default = None


__all__ = ["BackoffConfig", "HandlerConfig", "get_handler_config", "reset_handler_config"]
