"""Cooperative cancellation of running tasks.

Python cannot kill a thread, so a task that wants to stop early when its stage is
canceled checks the token the engine binds to the task's thread while it executes::

    if is_cancellation_requested():
        return TaskResult.canceled()

Binding is thread-local: a token bound in one worker thread is invisible to others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TaskCancelledError(Exception):
    """Raised by ``raise_if_cancelled`` / ``raise_if_cancellation_requested`` after cancellation."""


class CancellationToken:
    """A one-shot, thread-safe cancellation flag. ``cancel()`` is idempotent."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Request cancellation (safe from any thread, any number of times)."""
        self._event.set()

    @property
    def is_cancelled(self) -> bool:
        """True once :meth:`cancel` has been called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelledError if cancellation was requested."""
        if self._event.is_set():
            raise TaskCancelledError("Task execution was cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds for cancellation; return whether it happened."""
        return self._event.wait(timeout)


_local = threading.local()


def current_token() -> CancellationToken | None:
    """The token bound to the calling thread, or None."""
    token: CancellationToken | None = getattr(_local, "token", None)
    return token


@contextmanager
def bind_token(token: CancellationToken | None) -> Iterator[CancellationToken | None]:
    """Bind ``token`` to the calling thread for the ``with`` block, restoring the previous
    binding afterwards (bindings nest)."""
    previous = current_token()
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def is_cancellation_requested() -> bool:
    """True if the calling thread's bound token was cancelled; False when none is bound."""
    token = current_token()
    return token is not None and token.is_cancelled


def raise_if_cancellation_requested() -> None:
    """Raise TaskCancelledError if the calling thread's bound token was cancelled."""
    token = current_token()
    if token is not None:
        token.raise_if_cancelled()


__all__ = [
    "CancellationToken",
    "TaskCancelledError",
    "bind_token",
    "current_token",
    "is_cancellation_requested",
    "raise_if_cancellation_requested",
]
