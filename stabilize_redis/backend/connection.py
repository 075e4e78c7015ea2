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

``redis+cluster://[user:password@]host:port[,host:port...]/`` (``rediss+cluster://`` for TLS,
with the same query parameters as ``rediss://``) selects a Redis Cluster: redis-py's
``RedisCluster`` with every ``host:port`` given as a startup node (``parse_cluster_url``).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

from stabilize_redis.keys import DEFAULT_NAMESPACE, namespace_glob
from stabilize_redis.redaction import redact

log = logging.getLogger("stabilize_redis.connection")

URL_ENV = "STABILIZE_REDIS_URL"
NAMESPACE_ENV = "STABILIZE_NAMESPACE"

_embedded_lock = threading.Lock()
_embedded: dict[str, redis.Redis] = {}
_warn_lock = threading.Lock()
_insecure_tls_warned = False

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Cluster URL schemes and the single-node scheme whose query parameters each takes."""
TLS_SCHEMES = ("rediss", "rediss+cluster")


@dataclass(frozen=True, repr=False)
class Target:
    """Where a namespace lives: ``url`` None means the embedded in-process server. Its ``repr``
    masks credentials like ``describe`` does."""

    url: str | None
    namespace: str

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def cluster(self) -> bool:
        """True for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
        return self.url is not None and is_cluster_url(self.url)

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


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def verifies_server(url: str) -> bool:
    """False for a ``rediss://`` (or ``rediss+cluster://``) URL whose ``ssl_cert_reqs`` is
    ``none`` (the server's certificate is not checked); True otherwise."""
    scheme, query = _query(url)
    return scheme not in TLS_SCHEMES or not any(v.strip().lower() == "none" for v in query.get("ssl_cert_reqs", []))


def check_tls_parameters(url: str) -> None:
    """Raise ValueError when a URL that is not ``rediss://`` (or ``rediss+cluster://``) carries
    ``ssl_*`` parameters (redis-py would fail later with an obscure TypeError, or the user
    meant TLS)."""
    scheme, query = _query(url)
    tls = sorted(name for name in query if name.startswith("ssl_"))
    if tls and scheme not in TLS_SCHEMES:
        wanted = "rediss+cluster://" if scheme in CLUSTER_SCHEMES else "rediss://"
        raise ValueError(f"{', '.join(tls)} in {redact(url)} are TLS settings: use a {wanted} URL")


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed cluster URL: the startup nodes and the connection options of every node."""

    nodes: tuple[tuple[str, int], ...]
    options: dict[str, Any] = field(default_factory=dict)


def parse_cluster_url(url: str) -> ClusterSpec:
    """Parse ``redis+cluster://[user:password@]host:port[,host:port...][/[0]][?options]``.

    Options are those of a ``redis://`` URL (``rediss://`` for ``rediss+cluster://``), with
    redis-py's conversions. Raises ValueError, naming the URL with its secrets masked, for no
    node, a node without a port or with a bad one, or a database other than 0 (a cluster has
    only database 0)."""
    scheme, rest = url.split("://", 1)
    single = CLUSTER_SCHEMES.get(scheme.lower())
    if single is None:
        raise ValueError(f"{redact(url)} is not a cluster URL (redis+cluster:// or rediss+cluster://)")
    check_tls_parameters(url)
    slash = rest.find("/")
    at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    query_at = rest.find("?")
    end = min(i for i in (slash, query_at, len(rest)) if i >= 0)
    userinfo, hosts, tail = rest[:at + 1], rest[at + 1:end], rest[end:]
    path = tail.split("?", 1)[0]
    if path not in ("", "/", "/0"):
        raise ValueError(f"{redact(url)}: a Redis Cluster has database 0 only; drop {path!r} from the URL")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not item.strip() or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{redact(url)}: every cluster node must be host:port, got {item.strip()!r}")
        nodes.append((host.strip("[]"), int(port)))
    query = tail.split("?", 1)[1] if "?" in tail else ""
    options = parse_url(f"{single}://{userinfo}{nodes[0][0]}:{nodes[0][1]}/0" + (f"?{query}" if query else ""))
    for name in ("host", "port", "db", "connection_class"):
        options.pop(name, None)
    if single == "rediss":
        options["ssl"] = True
    return ClusterSpec(tuple(nodes), options)


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


class EngineCluster(RedisCluster):
    """redis-py's cluster client, finding the keys of XREAD and XREADGROUP itself (the first
    half of the arguments after STREAMS), as redis-py does for EVALSHA: its generic path asks a
    node with COMMAND GETKEYS, an extra round trip (two, in fact) before every read."""

    def determine_slot(self, *args: Any) -> int | None:
        command = args[0].upper() if isinstance(args[0], str) else args[0]
        if command not in ("XREAD", "XREADGROUP"):
            return super().determine_slot(*args)
        start = 4 if command == "XREADGROUP" else 1  # after GROUP <group> <consumer>
        words = [a.upper() if isinstance(a, str) else a.decode(errors="replace").upper() if isinstance(a, bytes)
                 else a for a in args]  # redis-py sends the keywords as bytes
        if "STREAMS" not in words[start:]:
            return super().determine_slot(*args)
        rest = args[words.index("STREAMS", start) + 1:]
        slots = {self.keyslot(key) for key in rest[:len(rest) // 2]}
        if len(slots) != 1:
            raise redis.exceptions.RedisClusterException(f"{command} - all keys must map to the same key slot")
        return slots.pop()


def connect_redis(target: Target) -> Any:
    """A client for the target: ``redis.Redis`` (no round trip yet), or for a cluster URL
    ``redis.cluster.RedisCluster`` (which asks the startup nodes for the slot map at once).
    Embedded clients of one namespace share one server. Raises ValueError for ``ssl_*``
    parameters on a URL that is not ``rediss://`` and for a malformed cluster URL."""
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
    if target.cluster:
        spec = parse_cluster_url(target.url)
        options = {"socket_keepalive": True, **spec.options}  # timeouts are retried by default
        return EngineCluster(startup_nodes=[ClusterNode(h, p) for h, p in spec.nodes], decode_responses=False,
                             **options)
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
    client = connect_redis(Target(url, namespace))
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=namespace_glob(namespace), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += _delete(client, batch)
            batch.clear()
    if batch:
        deleted += _delete(client, batch)
    return deleted


def _delete(client: Any, keys: list[bytes]) -> int:
    if isinstance(client, RedisCluster):  # a DEL may not span slots: one key at a time
        return sum(int(client.delete(key)) for key in keys)
    return int(client.delete(*keys))
