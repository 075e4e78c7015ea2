"""Engine error hierarchy and the transient/permanent classification.

Every engine error takes ``(message, *, code=None, cause=None, error_code=None)``:
``code`` overrides the class's numeric code, ``cause`` records the wrapped exception and
``error_code`` a semantic code (any value; an ``ErrorCode`` member in practice).  When no
``error_code`` is given, the property returns the class default name as a string.

Classification (:func:`is_transient`, :func:`is_permanent`) decides whether the engine
retries a failure.  Permanent class-name patterns win over transient ones.
"""

from __future__ import annotations

import errno
import http.client
import socket
import urllib.error
from typing import Any

_PERMANENT_NAME_PATTERNS = (
    "validation",
    "authentication",
    "authorization",
    "forbidden",
    "notfound",
    "invalid",
)
_TRANSIENT_NAME_PATTERNS = (
    "timeout",
    "connection",
    "temporary",
    "unavailable",
    "retry",
    "throttl",
    "ratelimit",
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.timeout,
    socket.gaierror,
    http.client.RemoteDisconnected,
    urllib.error.URLError,
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
)


class StabilizeBaseException(Exception):  # noqa: N818 - public name kept from stabilize
    """Root of the engine hierarchy."""

    code: int = 0
    default_error_code: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.cause = cause
        self._error_code = error_code

    @property
    def error_code(self) -> Any:
        """The semantic error code given to the constructor, else the class default name."""
        return self._error_code if self._error_code is not None else self.default_error_code

    def __str__(self) -> str:
        """stabilize's text: the message, then ``(code=N)`` when the code is not 0, then
        ``caused by: <cause>`` when there is one, e.g. ``rate limited (code=101)``."""
        parts = [super().__str__()]
        if self.code:
            parts.append(f"(code={self.code})")
        if self.cause is not None:
            parts.append(f"caused by: {self.cause}")
        return " ".join(parts)


class StabilizeError(StabilizeBaseException):
    """Standard engine error (code 100)."""

    code = 100
    default_error_code = "SYSTEM_ERROR"


class TransientError(StabilizeError):
    """A failure worth retrying (code 101).

    ``retry_after`` (seconds) suggests a delay; ``context_update`` is merged into the stage
    context before the retry so progress survives across attempts.
    """

    code = 101
    default_error_code = "NETWORK_ERROR"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        context_update: dict[str, Any] | None = None,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        self.retry_after = retry_after
        self.context_update: dict[str, Any] = dict(context_update or {})


class ConcurrencyError(TransientError):
    """Optimistic-lock conflict: the row's version (or phase) changed underneath (code 105)."""

    code = 105
    default_error_code = "CONCURRENCY_CONFLICT"


class PermanentError(StabilizeError):
    """A failure that retrying cannot fix (code 102)."""

    code = 102
    default_error_code = "USER_CODE_ERROR"


class RecoveryError(StabilizeError):
    """Crash recovery of a workflow failed (code 103)."""

    code = 103
    default_error_code = "RECOVERY_FAILED"


class ConfigurationError(StabilizeError):
    """Invalid configuration (code 104)."""

    code = 104
    default_error_code = "CONFIGURATION_INVALID"


class TaskError(StabilizeError):
    """A task failed (code 200); carries ``task_name``, ``stage_id``, ``execution_id``, ``details``."""

    code = 200
    default_error_code = "USER_CODE_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
        task_name: str | None = None,
        stage_id: str | None = None,
        execution_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        self.task_name = task_name
        self.stage_id = stage_id
        self.execution_id = execution_id
        self.details: dict[str, Any] = dict(details or {})


class TaskTimeoutError(TaskError):
    """A task exceeded its timeout (code 201)."""

    code = 201
    default_error_code = "TASK_TIMEOUT"


class TaskNotFoundError(TaskError):
    """No implementation is registered for a task type (code 202)."""

    code = 202
    default_error_code = "TASK_NOT_FOUND"


class VerificationError(StabilizeError):
    """Output verification failed; treated as permanent (code 600). ``details`` holds specifics."""

    code = 600
    default_error_code = "VERIFICATION_FAILED"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        self.details: dict[str, Any] = dict(details or {})


class TransientVerificationError(VerificationError, TransientError):
    """Verification could not complete yet and should be retried (code 601)."""

    code = 601

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
        context_update: dict[str, Any] | None = None,
    ) -> None:
        VerificationError.__init__(
            self, message, code=code, cause=cause, error_code=error_code, details=details
        )
        self.retry_after = retry_after
        self.context_update = dict(context_update or {})


class WorkflowError(StabilizeError):
    """Workflow-level error (code 300); ``execution_id`` identifies the workflow."""

    code = 300

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        self.execution_id = execution_id


class WorkflowNotFoundError(WorkflowError):
    """The workflow does not exist (code 301)."""

    code = 301


class StageError(StabilizeError):
    """Stage-level error (code 400); ``stage_id`` and ``execution_id`` identify the stage."""

    code = 400

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: Any = None,
        stage_id: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        self.stage_id = stage_id
        self.execution_id = execution_id


class QueueError(StabilizeError):
    """Queue operation failed (code 500)."""

    code = 500


class DeadLetterError(QueueError):
    """A message was moved to the dead-letter queue (code 501)."""

    code = 501


def _cause_of(error: BaseException) -> BaseException | None:
    cause = error.__cause__
    return cause if cause is not None and cause is not error else None


def _name_matches(error: BaseException, patterns: tuple[str, ...]) -> bool:
    name = type(error).__name__.lower()
    return any(p in name for p in patterns)


def is_transient(error: BaseException) -> bool:
    """True if ``error`` should be retried.

    In order: a :class:`TransientError` -> True; a :class:`PermanentError` -> False;
    ConnectionError, TimeoutError, socket.timeout, socket.gaierror, RemoteDisconnected,
    URLError -> True; an OSError whose errno is ECONNREFUSED, ECONNRESET, ECONNABORTED,
    ETIMEDOUT, EHOSTUNREACH or ENETUNREACH -> True; a class name containing a permanent
    pattern (validation, authentication, authorization, forbidden, notfound, invalid)
    -> False; one containing timeout, connection, temporary, unavailable, retry, throttl
    or ratelimit -> True; otherwise the verdict for ``__cause__`` (False if none).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError):
            return True
        if isinstance(current, PermanentError):
            return False
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        if _name_matches(current, _PERMANENT_NAME_PATTERNS):
            return False
        if _name_matches(current, _TRANSIENT_NAME_PATTERNS):
            return True
        current = _cause_of(current)
    return False


def is_permanent(error: BaseException) -> bool:
    """True if ``error`` must not be retried.

    In order: a :class:`PermanentError` -> True; a :class:`TransientError` -> False;
    ValueError, TypeError, AttributeError, KeyError, IndexError -> True; a permanent
    class-name pattern -> True; a transient class-name pattern -> False; otherwise the
    verdict for ``__cause__`` (False if none).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PermanentError):
            return True
        if isinstance(current, TransientError):
            return False
        if isinstance(current, _PERMANENT_TYPES):
            return True
        if _name_matches(current, _PERMANENT_NAME_PATTERNS):
            return True
        if _name_matches(current, _TRANSIENT_NAME_PATTERNS):
            return False
        current = _cause_of(current)
    return False


_TRUNCATION_MARKER = " [TRUNCATED]"


def truncate_error(message: str, max_bytes: int = 102400) -> str:
    """Return ``message`` unchanged if its UTF-8 form fits in ``max_bytes``; otherwise cut it
    on a character boundary and append ``" [TRUNCATED]"`` so the result fits in ``max_bytes``."""
    if not message:
        return message
    encoded = message.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return message
    budget = max_bytes - len(_TRUNCATION_MARKER.encode("utf-8"))
    if budget <= 0:
        return _TRUNCATION_MARKER.strip()[:max_bytes]
    return encoded[:budget].decode("utf-8", errors="ignore") + _TRUNCATION_MARKER


__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "DeadLetterError",
    "PermanentError",
    "QueueError",
    "RecoveryError",
    "StabilizeBaseException",
    "StabilizeError",
    "StageError",
    "TaskError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TransientError",
    "TransientVerificationError",
    "VerificationError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "is_permanent",
    "is_transient",
    "truncate_error",
]
