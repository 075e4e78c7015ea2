"""Engine error hierarchy and is_transient / is_permanent."""

from __future__ import annotations

import errno
import socket
import urllib.error

import pytest

from stabilize_redis.errors import (
    ConcurrencyError,
    ConfigurationError,
    DeadLetterError,
    PermanentError,
    QueueError,
    RecoveryError,
    StabilizeError,
    StageError,
    TaskError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransientError,
    TransientVerificationError,
    VerificationError,
    WorkflowError,
    WorkflowNotFoundError,
    is_permanent,
    is_transient,
    truncate_error,
)


def test_hierarchy_matches_stabilize() -> None:
    assert issubclass(ConcurrencyError, TransientError)
    for cls in (
        TransientError,
        PermanentError,
        RecoveryError,
        ConfigurationError,
        TaskError,
        VerificationError,
        WorkflowError,
        StageError,
        QueueError,
    ):
        assert issubclass(cls, StabilizeError)
    assert issubclass(TaskTimeoutError, TaskError) and issubclass(TaskNotFoundError, TaskError)
    assert issubclass(WorkflowNotFoundError, WorkflowError) and issubclass(DeadLetterError, QueueError)
    assert issubclass(TransientVerificationError, VerificationError)
    assert issubclass(TransientVerificationError, TransientError)


def test_numeric_codes() -> None:
    assert [
        c.code
        for c in (
            StabilizeError,
            TransientError,
            PermanentError,
            RecoveryError,
            ConfigurationError,
            ConcurrencyError,
            TaskError,
            VerificationError,
            TransientVerificationError,
        )
    ] == [100, 101, 102, 103, 104, 105, 200, 600, 601]
    assert PermanentError("x", code=7).code == 7


def test_transient_error_carries_retry_hints() -> None:
    cause = OSError("down")
    err = TransientError(
        "rate limited", retry_after=30, context_update={"done": 50}, cause=cause, error_code="X"
    )
    assert (err.retry_after, err.context_update, err.cause, err.error_code) == (30, {"done": 50}, cause, "X")
    assert TransientError("x").context_update == {}
    tv = TransientVerificationError("not yet", details={"k": 1}, retry_after=2, context_update={"n": 1})
    assert (tv.details, tv.retry_after, tv.context_update) == ({"k": 1}, 2, {"n": 1})
    assert is_transient(tv)


class ServiceUnavailable(Exception):
    pass


class ConnectionValidationError(Exception):
    pass


class RateLimitExceeded(Exception):
    pass


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        ConcurrencyError("version changed"),
        ConnectionResetError(),
        TimeoutError(),
        socket.gaierror(),
        urllib.error.URLError("x"),
        OSError(errno.ECONNREFUSED, "refused"),
        ServiceUnavailable(),
        RateLimitExceeded(),
    ],
)
def test_retryable_failures_are_transient(error: Exception) -> None:
    assert is_transient(error)
    assert not is_permanent(error)


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("x"),
        ValueError(),
        TypeError(),
        KeyError("k"),
        IndexError(),
        AttributeError(),
        ConnectionValidationError(),
    ],
)
def test_programming_and_validation_failures_are_permanent(error: Exception) -> None:
    assert is_permanent(error)
    assert not is_transient(error)


def test_permanent_name_patterns_beat_transient_ones() -> None:
    assert not is_transient(ConnectionValidationError())


def test_classification_follows_the_cause_chain() -> None:
    class Wrapper(Exception):
        pass

    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise Wrapper("task failed") from inner
    except Wrapper as outer:
        assert is_transient(outer)
    wrapped_permanent = Wrapper("bad")
    wrapped_permanent.__cause__ = ValueError("bad input")
    assert is_permanent(wrapped_permanent) and not is_transient(wrapped_permanent)
    assert not is_transient(Wrapper("plain")) and not is_permanent(Wrapper("plain"))


def test_truncate_error_keeps_short_messages_and_caps_long_ones_in_bytes() -> None:
    assert truncate_error("short") == "short"
    long = "é" * 100_000  # 200,000 bytes
    cut = truncate_error(long)
    assert cut.endswith("[TRUNCATED]") and len(cut.encode("utf-8")) <= 102400
    assert len(truncate_error("x" * 50, max_bytes=20).encode()) <= 20
