"""Redis connections: a real server from a URL, or the embedded in-process default.

``url=None`` (and no ``STABILIZE_REDIS_URL``) selects the embedded default: one fakeredis
server per namespace, shared by every store, queue and client of this process, so a store and a
queue built with the same namespace pair the way stabilize's SQLite store and queue do.
URLs may be ``redis://``, ``rediss://`` (TLS) or ``unix://``, with ``user:password@`` for ACL
users; secrets come only from the URL or the environment.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from stabilize_redis.keys import DEFAULT_NAMESPACE

URL_ENV = "STABILIZE_REDIS_URL"
NAMESPACE_ENV = "STABILIZE_NAMESPACE"

_embedded_lock = threading.Lock()
_embedded: dict[str, redis.Redis] = {}


@dataclass(frozen=True)
class Target:
    """Where a namespace lives: ``url`` None means the embedded in-process server."""

    url: str | None
    namespace: str

    @property
    def embedded(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        return f"embedded fakeredis, namespace {self.namespace!r}" if self.url is None else (
            f"{redact(self.url)}, namespace {self.namespace!r}"
        )


def resolve(url: str | None = None, namespace: str | None = None) -> Target:
    """Arguments win over ``STABILIZE_REDIS_URL`` / ``STABILIZE_NAMESPACE``; empty means unset."""
    url = url or os.environ.get(URL_ENV) or None
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    if ":" in namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace {namespace!r} must not contain ':', '{{' or '}}'")
    return Target(url, namespace)


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else f"{scheme}://{user}@{host}"


def connect_redis(target: Target) -> redis.Redis:
    """A client for the target. Embedded clients of one namespace share one server."""
    if target.url is None:
        with _embedded_lock:
            client = _embedded.get(target.namespace)
            if client is None:
                import fakeredis

                client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=False)
                _embedded[target.namespace] = client
            return client
    return redis.Redis.from_url(
        target.url,
        decode_responses=False,
        health_check_interval=30,
        socket_keepalive=True,
        retry_on_timeout=True,
    )


def reset_embedded(namespace: str | None = None) -> None:
    """Forget embedded servers (all, or one namespace's). For tests and scripts."""
    with _embedded_lock:
        if namespace is None:
            _embedded.clear()
        else:
            _embedded.pop(namespace, None)
