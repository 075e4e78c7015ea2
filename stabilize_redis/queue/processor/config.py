"""``QueueProcessorConfig``: stabilize's processor settings (same names and defaults).

What each does here:

* ``max_workers``: handler threads in background mode (when ``QueueProcessor`` is not given
  ``concurrency``);
* ``recover_on_start``: ``start()`` runs one ``run_recovery()`` first;
  ``recovery_interval_seconds`` > 0: a daemon thread runs it every N seconds;
  ``recovery_application`` / ``recovery_max_age_hours``: its filter and age window
  (``stabilize_redis.recovery``);
* ``shutdown_timeout_seconds``: the default bound of ``stop(wait=True)``.

The others are accepted and have nothing to tune in this engine: ``poll_frequency_ms`` (workers
block on the streams instead of polling), ``retry_delay`` (handler retries back off per
``EngineConfig``), ``enable_deduplication`` and ``dedup_trust_negative_cache`` (every commit
checks the dedup record), ``enable_lock_heartbeat``/``lock_heartbeat_interval_seconds``
(in-flight entries are always heartbeated), ``dlq_check_interval_seconds`` (messages are
dead-lettered when they fail, not by a sweep), ``retention_sweep_interval_seconds`` /
``processed_messages_max_age_hours`` (a workflow's dedup record leaves with the workflow; the
windowed record is trimmed after ``MemoryPolicy.dedup_window_s``, and
``store.cleanup_old_processed_messages`` shortens that), ``stop_on_error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from stabilize_redis.resilience.config import HandlerConfig, get_handler_config


@dataclass
class QueueProcessorConfig:
    poll_frequency_ms: int = 50
    max_workers: int = 10
    retry_delay: timedelta = field(default_factory=lambda: timedelta(seconds=15))
    stop_on_error: bool = False
    enable_deduplication: bool = True
    dedup_trust_negative_cache: bool = False
    enable_lock_heartbeat: bool = True
    lock_heartbeat_interval_seconds: float | None = None
    dlq_check_interval_seconds: float = 30.0
    retention_sweep_interval_seconds: float = 0.0
    processed_messages_max_age_hours: float = 24.0
    shutdown_timeout_seconds: float | None = 60.0
    recover_on_start: bool = False
    recovery_interval_seconds: float = 0.0
    recovery_application: str | None = None
    recovery_max_age_hours: float = 24.0

    @classmethod
    def from_handler_config(cls, handler_config: HandlerConfig | None = None) -> QueueProcessorConfig:
        """Poll frequency, workers and retry delay from ``handler_config`` (default: the
        environment); recovery stays off."""
        config = handler_config or get_handler_config()
        return cls(poll_frequency_ms=config.poll_frequency_ms, max_workers=config.max_workers,
                   retry_delay=timedelta(seconds=config.handler_retry_delay_seconds))


__all__ = ["QueueProcessorConfig"]
