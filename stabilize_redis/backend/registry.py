"""One backend per (url, namespace) in a process, so store, queue, processor and client built
from the same coordinates share connections, scripts and the embedded server."""

from __future__ import annotations

import threading

from stabilize_redis.backend.connection import resolve
from stabilize_redis.backend.redis_backend import RedisBackend

_lock = threading.Lock()
_backends: dict[tuple[str | None, str], RedisBackend] = {}


def backend_for(url: str | None = None, namespace: str | None = None,
                partitions: int | None = None) -> RedisBackend:
    target = resolve(url, namespace)
    key = (target.url, target.namespace)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = RedisBackend(target, partitions)
            _backends[key] = backend
        return backend


def forget_backends() -> None:
    """Drop cached backends (tests that reset the embedded server)."""
    with _lock:
        _backends.clear()
