"""Fixtures of the cluster tests: one real Redis Cluster per session (``nodes.start_cluster``),
a unique namespace on it per test whose keys are removed afterwards, PostgreSQL (the durability
tests' fixtures), and ``script_calls``: every Lua call's script and KEYS, recorded at two seams -
the script registry (``Scripts``: every named command, with its name) and the cluster client's
EVALSHA (which also sees scripts queued on a batch by SHA, ``durability.redis_ops.evalsha``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from redis.cluster import RedisCluster, key_slot
from redis.commands.core import Script

from stabilize_redis.backend import scripts as script_registry
from stabilize_redis.backend.connection import delete_namespace
from stabilize_redis.backend.registry import forget_backends
from tests.cluster.nodes import LocalCluster, start_cluster
from tests.durability.conftest import pg_dsn, pg_schema, snapshot_store  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """Three masters with one replica each on loopback; killed and removed at the end."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_target(redis_cluster: LocalCluster, namespace: str) -> Iterator[tuple[str, str]]:
    """(cluster URL, namespace)."""
    forget_backends()
    yield redis_cluster.url, namespace
    forget_backends()
    delete_namespace(redis_cluster.url, namespace)


Call = tuple[str, tuple[str, ...]]


class _Recording:
    """A registered script that records the KEYS of every call, then runs it."""

    def __init__(self, name: str, script: Script, calls: list[Call]) -> None:
        self._name, self._script, self._calls = name, script, calls

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        self._calls.append((self._name, tuple(_text(k) for k in keys)))
        return self._script(keys=keys, args=args, client=client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._script, name)


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    calls: list[Call] = []
    original = script_registry.Scripts.__getattr__
    evalsha = RedisCluster.evalsha

    def recording(self: script_registry.Scripts, name: str) -> Any:
        return _Recording(name, original(self, name), calls)

    by_sha = {hashlib.sha1(script_registry.script_source(n).encode()).hexdigest(): n
              for n in script_registry.SCRIPT_NAMES}

    def recorded_evalsha(self: RedisCluster, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        name = by_sha.get(sha, f"evalsha {sha[:8]}")  # an unnamed one: a partition life's own copy
        calls.append((name, tuple(_text(k) for k in keys_and_args[:numkeys])))
        return evalsha(self, sha, numkeys, *keys_and_args)

    monkeypatch.setattr(script_registry.Scripts, "__getattr__", recording)
    monkeypatch.setattr(RedisCluster, "evalsha", recorded_evalsha)
    yield calls


def spanning(calls: list[Call]) -> list[Call]:
    """The calls whose KEYS map to more than one slot."""
    return [(name, keys) for name, keys in calls if len({key_slot(k.encode()) for k in keys}) > 1]
