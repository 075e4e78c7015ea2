"""One backend per (url, namespace) in a process, so store, queue, processor and client built
from the same coordinates share connections, scripts and the embedded server."""

from __future__ import annotations

import os
import threading

from stabilize_redis.backend.connection import resolve
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.keys import KEY_LAYOUTS

KEY_LAYOUT_ENV = "STABILIZE_KEY_LAYOUT"
"""Key layout version for new namespaces (default: the current one). Set to 1 while workers of
a version without layouts share the namespace; on an existing namespace of another layout the
backend refuses to start (``keys.KeyLayoutError``)."""

_lock = threading.Lock()
_backends: dict[tuple[str | None, str], RedisBackend] = {}


def backend_for(url: str | None = None, namespace: str | None = None,
                partitions: int | None = None) -> RedisBackend:
    target = resolve(url, namespace)
    key = (target.url, target.namespace)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = RedisBackend(target, partitions, key_layout=key_layout_from_env())
            _backends[key] = backend
        return backend


def key_layout_from_env() -> int | None:
    """``STABILIZE_KEY_LAYOUT`` as a layout version, None when unset; ValueError naming the
    variable for anything else than a known version."""
    raw = (os.environ.get(KEY_LAYOUT_ENV) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) not in KEY_LAYOUTS:
        raise ValueError(f"{KEY_LAYOUT_ENV}={raw!r}: must be one of {', '.join(map(str, KEY_LAYOUTS))}")
    return int(raw)


def forget_backends() -> None:
    """Drop cached backends (tests that reset the embedded server)."""
    with _lock:
        _backends.clear()
