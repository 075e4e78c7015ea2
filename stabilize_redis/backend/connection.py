"""Redis connections: a real server from a URL, or the embedded in-process default.

``url=None`` (and no ``STABILIZE_REDIS_URL``) selects the embedded default: one fakeredis
server per namespace, shared by every store, queue and client of this process, so a store and a
queue built with the same namespace pair the way stabilize's SQLite store and queue do.
URLs may be ``redis://``, ``rediss://`` (TLS) or ``unix://``, with ``user:password@`` for ACL
users; secrets come only from the URL or the environment and are masked wherever a URL is shown
(``Target.describe``, ``repr``: ``stabilize_redis.redaction``). Query parameters go to redis-py
as they are: ``rediss://host:6380/0?ssl_ca_certs=/etc/ssl/redis-ca.pem`` verifies the server
against that CA, ``ssl_certfile``/``ssl_keyfile`` present a client certificate. A URL with
``ssl_cert_reqs=none`` (no verification of the server) logs one loud WARNING per process.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import redis

from stabilize_redis.keys import DEFAULT_NAMESPACE, namespace_glob
from stabilize_redis.redaction import redact

log = logging.getLogger("stabilize_redis.connection")

URL_ENV = "STABILIZE_REDIS_URL"
NAMESPACE_ENV = "STABILIZE_NAMESPACE"

_embedded_lock = threading.Lock()
_embedded: dict[str, redis.Redis] = {}
_warn_lock = threading.Lock()
_insecure_tls_warned = False


@dataclass(frozen=True, repr=False)
class Target:
    """Where a namespace lives: ``url`` None means the embedded in-process server. Its ``repr``
    masks credentials like ``describe`` does."""

    url: str | None
    namespace: str

    @property
    def embedded(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        return f"embedded fakeredis, namespace {self.namespace!r}" if self.url is None else (
            f"{redact(self.url)}, namespace {self.namespace!r}"
        )

    def __repr__(self) -> str:
        url = None if self.url is None else redact(self.url)
        return f"Target(url={url!r}, namespace={self.namespace!r})"


def resolve(url: str | None = None, namespace: str | None = None) -> Target:
    """Arguments win over ``STABILIZE_REDIS_URL`` / ``STABILIZE_NAMESPACE``; empty means unset."""
    url = url or os.environ.get(URL_ENV) or None
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    if ":" in namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace {namespace!r} must not contain ':', '{{' or '}}'")
    return Target(url, namespace)


def _query(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parse_qs(parts.query)


def verifies_server(url: str) -> bool:
    """False for a ``rediss://`` URL whose ``ssl_cert_reqs`` is ``none`` (the server's
    certificate is not checked); True otherwise."""
    scheme, query = _query(url)
    return scheme != "rediss" or not any(v.strip().lower() == "none" for v in query.get("ssl_cert_reqs", []))


def check_tls_parameters(url: str) -> None:
    """Raise ValueError when a URL that is not ``rediss://`` carries ``ssl_*`` parameters
    (redis-py would fail later with an obscure TypeError, or the user meant TLS)."""
    scheme, query = _query(url)
    tls = sorted(name for name in query if name.startswith("ssl_"))
    if tls and scheme != "rediss":
        raise ValueError(f"{', '.join(tls)} in {redact(url)} are TLS settings: use a rediss:// URL")


def _warn_if_unverified(url: str) -> None:
    global _insecure_tls_warned
    with _warn_lock:
        if verifies_server(url) or _insecure_tls_warned:
            return
        _insecure_tls_warned = True
    log.warning(
        "INSECURE TLS: %s has ssl_cert_reqs=none, so the Redis server's certificate is NOT "
        "verified: the traffic is encrypted, but anyone on the network path can impersonate the "
        "server and read or change every workflow and the password sent to it. Pass "
        "ssl_ca_certs=<CA file> (and drop ssl_cert_reqs=none) instead; see deploy/README.md "
        "(this warning is logged once per process)", redact(url))


def connect_redis(target: Target) -> redis.Redis:
    """A client for the target (no round trip yet). Embedded clients of one namespace share one
    server. Raises ValueError for ``ssl_*`` parameters on a URL that is not ``rediss://``."""
    if target.url is None:
        with _embedded_lock:
            client = _embedded.get(target.namespace)
            if client is None:
                import fakeredis

                client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=False)
                _embedded[target.namespace] = client
            return client
    check_tls_parameters(target.url)
    _warn_if_unverified(target.url)
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


def delete_namespace(url: str, namespace: str) -> int:
    """Delete every key of ``namespace`` on the Redis at ``url`` - and nothing else (the keys
    ``keys.namespace_glob`` matches), in batches; returns how many. Destructive: for tests and
    for an operator dropping a namespace no worker uses any more."""
    client = redis.Redis.from_url(url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=namespace_glob(namespace), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(client.delete(*batch))
    return deleted
