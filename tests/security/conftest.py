"""Fixtures of the security tests: the PostgreSQL fixtures of the durability tests (a schema
private to the run), reused as they are, and no backend cached across tests (each test talks to
its own private redis-server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stabilize_redis.backend.registry import forget_backends
from tests.durability.conftest import pg_dsn, pg_schema, snapshot_store

__all__ = ["pg_dsn", "pg_schema", "snapshot_store"]


@pytest.fixture(autouse=True)
def _fresh_backends() -> Iterator[None]:
    forget_backends()
    yield
    forget_backends()
