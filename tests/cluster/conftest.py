"""Fixtures of the cluster tests: one real Redis Cluster per session (``nodes.start_cluster``)
and a unique namespace on it per test whose keys are removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stabilize_redis.backend.connection import delete_namespace
from stabilize_redis.backend.registry import forget_backends
from tests.cluster.nodes import LocalCluster, start_cluster


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
