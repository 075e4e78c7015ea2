"""Cooperative cancellation of running tasks.

Python cannot kill a thread, so a task that wants to stop early when its stage is
canceled checks the token the engine binds to the task's thread while it executes::

    if is_cancellation_requested():
        return TaskResult.canceled()

Binding is thread-local: a token bound in one worker thread is invisible to others.

stabilize's module-level helpers are here too: a process-wide registry of tokens by task id
(``register_token``, ``get_token``, ``cancel_task``, ``unregister_token``,
``reset_cancellation_state``) and explicit binding (``bind_current_token`` returns the handle
``reset_current_token`` takes; ``current_cancellation_token``). The engine's workers keep their
own registry per processor and signal it from CancelStage; the module registry is for code that
runs tasks itself.
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


class TokenBinding:
    """What ``bind_current_token`` returns: restores the binding it replaced."""

    __slots__ = ("previous", "thread_id")

    def __init__(self, previous: CancellationToken | None) -> None:
        self.previous = previous
        self.thread_id = threading.get_ident()


def bind_current_token(token: CancellationToken | None) -> TokenBinding:
    """Bind ``token`` to the calling thread; pass the result to ``reset_current_token``."""
    binding = TokenBinding(current_token())
    _local.token = token
    return binding


def reset_current_token(binding: TokenBinding) -> None:
    """Restore the binding ``bind_current_token`` replaced. ValueError when called from
    another thread than the one that bound it (bindings are per thread)."""
    if binding.thread_id != threading.get_ident():
        raise ValueError("a token binding can only be reset by the thread that made it")
    _local.token = binding.previous


def current_cancellation_token() -> CancellationToken | None:
    """The token bound to the calling thread, or None (stabilize's name for ``current_token``)."""
    return current_token()


_registry: dict[str, CancellationToken] = {}
_registry_lock = threading.Lock()


def register_token(task_id: str) -> CancellationToken:
    """A fresh token for ``task_id`` in the process-wide registry (replacing any earlier one)."""
    token = CancellationToken()
    with _registry_lock:
        _registry[task_id] = token
    return token


def get_token(task_id: str) -> CancellationToken | None:
    """The registered token of ``task_id``, or None."""
    with _registry_lock:
        return _registry.get(task_id)


def cancel_task(task_id: str) -> bool:
    """Cancel the registered token of ``task_id``; False when none is registered."""
    token = get_token(task_id)
    if token is None:
        return False
    token.cancel()
    return True


def unregister_token(task_id: str) -> None:
    """Drop the registered token of ``task_id`` (nothing happens when there is none)."""
    with _registry_lock:
        _registry.pop(task_id, None)


def reset_cancellation_state() -> None:
    """Drop every registered token (for tests)."""
    with _registry_lock:
        _registry.clear()


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
    "TokenBinding",
    "bind_current_token",
    "bind_token",
    "cancel_task",
    "current_cancellation_token",
    "current_token",
    "get_token",
    "is_cancellation_requested",
    "raise_if_cancellation_requested",
    "register_token",
    "reset_cancellation_state",
    "reset_current_token",
    "unregister_token",
]
