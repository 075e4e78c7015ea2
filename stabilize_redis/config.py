"""Engine settings, from arguments or the environment (names as stabilize's HandlerConfig)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name``; ``default`` when unset or empty."""
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name``; ``default`` when unset or empty."""
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class EngineConfig:
    """Timing and retry settings of the handlers.

    ``task_backoff_*``: exponential backoff of ``running()`` polls and transient retries
    (a TransientError's ``retry_after`` wins). ``task_max_attempts``: executions of a task that
    keeps raising transient errors before it fails (counted in the stage record, apart from
    message deliveries). ``default_task_timeout_s``: how long a task that is not a RetryableTask
    (and has no ``stageTimeoutMs``) may stay RUNNING, from its start, before it fails TERMINAL
    as timed out; checked before each execution and when one returns ``running()`` (0: no
    limit). ``handler_retry_delay_s``: delay before a message whose handler raised is delivered
    again (bounded by ``message_max_attempts``, then the dead-letter stream).
    ``stage_wait_retry_s``/``max_stage_wait_retries``: unused, kept so that stabilize's
    HandlerConfig maps onto this class - no handler re-checks or waits: a workflow completes
    when the commit that settles its last top-level stage releases CompleteWorkflow.
    """

    task_backoff_min_ms: int = 1000
    task_backoff_max_ms: int = 60000
    task_max_attempts: int = 10
    default_task_timeout_s: float = 14400.0
    handler_retry_delay_s: float = 1.0
    handler_retry_max_delay_s: float = 30.0
    message_max_attempts: int = 10
    stage_wait_retry_s: float = 1.0
    max_stage_wait_retries: int = 240
    conflict_retries: int = 8

    @classmethod
    def from_env(cls) -> EngineConfig:
        d = cls()
        return cls(
            task_backoff_min_ms=env_int("STABILIZE_TASK_BACKOFF_MIN_MS", d.task_backoff_min_ms),
            task_backoff_max_ms=env_int("STABILIZE_TASK_BACKOFF_MAX_MS", d.task_backoff_max_ms),
            task_max_attempts=env_int("STABILIZE_TASK_MAX_ATTEMPTS", d.task_max_attempts),
            default_task_timeout_s=env_float("STABILIZE_DEFAULT_TASK_TIMEOUT_S", d.default_task_timeout_s),
            handler_retry_delay_s=env_float("STABILIZE_HANDLER_RETRY_DELAY_S", d.handler_retry_delay_s),
            message_max_attempts=env_int("STABILIZE_MESSAGE_MAX_ATTEMPTS", d.message_max_attempts),
            stage_wait_retry_s=env_float("STABILIZE_STAGE_WAIT_RETRY_S", d.stage_wait_retry_s),
            max_stage_wait_retries=env_int("STABILIZE_MAX_STAGE_WAIT_RETRIES", d.max_stage_wait_retries),
        )

    def task_backoff(self, attempt: int) -> float:
        """Seconds before retry/poll number ``attempt`` (0-based): min * 2**attempt, capped."""
        ms = min(self.task_backoff_min_ms * (2 ** min(attempt, 30)), self.task_backoff_max_ms)
        return ms / 1000.0


DEDUP_WINDOW_ENV = "STABILIZE_DEDUP_WINDOW_S"
EVENT_MAXLEN_ENV = "STABILIZE_EVENT_STREAM_MAXLEN"
FINISHED_TTL_ENV = "STABILIZE_FINISHED_TTL_S"
DEFAULT_EVENT_MAXLEN = 1000
DEFAULT_FINISHED_TTL_S = 24 * 3600.0


@dataclass(frozen=True)
class MemoryPolicy:
    """What bounds the memory a namespace keeps in Redis (``RedisBackend.memory``).

    ``dedup_window_s``: how long the partition's *windowed* dedup record keeps a message id.
    Only messages processed while no workflow hash exists (and marks of the store API) go
    there; every message committed against a workflow is recorded with the workflow and leaves
    with it, whatever this says. Must exceed the longest a copy of such a message can come back
    (handler retries: ``message_max_attempts`` x ``handler_retry_max_delay_s``; a zombie worker:
    the task timeout). ``event_stream_maxlen``: about how many entries a workflow's event
    stream keeps (``XADD MAXLEN ~``; 0: uncapped). ``finished_ttl_s``: a finished workflow
    (hash, events, dedup record) expires this long after it ended (0: kept). The two caps are
    for deployments without PostgreSQL; with a DSN the archive and retention bound the memory,
    so both default to 0 there (a cap would drop events not archived yet).
    """

    dedup_window_s: float = 86400.0
    event_stream_maxlen: int = DEFAULT_EVENT_MAXLEN
    finished_ttl_s: float = DEFAULT_FINISHED_TTL_S

    def __post_init__(self) -> None:
        for name in ("dedup_window_s", "event_stream_maxlen", "finished_ttl_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"MemoryPolicy.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, durable: bool | None = None) -> MemoryPolicy:
        """From ``STABILIZE_DEDUP_WINDOW_S``, ``STABILIZE_EVENT_STREAM_MAXLEN`` and
        ``STABILIZE_FINISHED_TTL_S``; the caps default to 0 when ``durable`` (default: whether
        ``STABILIZE_POSTGRES_DSN`` is set)."""
        if durable is None:
            durable = bool(os.environ.get("STABILIZE_POSTGRES_DSN"))
        d = cls()
        return cls(
            dedup_window_s=env_float(DEDUP_WINDOW_ENV, d.dedup_window_s),
            event_stream_maxlen=env_int(EVENT_MAXLEN_ENV, 0 if durable else d.event_stream_maxlen),
            finished_ttl_s=env_float(FINISHED_TTL_ENV, 0.0 if durable else d.finished_ttl_s),
        )
