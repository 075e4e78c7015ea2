"""Fixtures of the durability tests: a real PostgreSQL with a schema private to this test run
(migrated once, dropped at the end), snapshot stores on it, and real Redis namespaces.

A missing PostgreSQL is a failure, never a skip: set STABILIZE_TEST_POSTGRES_DSN to point
elsewhere (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.durability.migrate import migrate
from stabilize_redis.durability.snapshots import SnapshotStore, forget_snapshot_stores
from tests.chaos.harness import PrivateRedis
from tests.durability.support import TcpProxy

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of a real PostgreSQL that answers (fails the session otherwise)."""
    dsn = os.environ.get("STABILIZE_TEST_POSTGRES_DSN") or DEFAULT_DSN
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        pytest.fail(f"PostgreSQL at {dsn} is required by the durability tests and did not answer: {e}")
    return dsn


def drop_schema(dsn: str, schema: str) -> None:
    """DROP a schema this test run created (CASCADE)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


@pytest.fixture(scope="session")
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema named ``stz_t<random>``, migrated, private to this run; dropped afterwards."""
    schema = f"stz_t{uuid.uuid4().hex[:12]}"
    migrate(pg_dsn, schema)
    try:
        yield schema
    finally:
        forget_snapshot_stores()
        drop_schema(pg_dsn, schema)


@pytest.fixture
def snapshot_store(pg_dsn: str, pg_schema: str, namespace: str) -> Iterator[SnapshotStore]:
    """A SnapshotStore for the test's namespace in the run's schema."""
    store = SnapshotStore(pg_dsn, pg_schema, namespace)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def proxy(pg_dsn: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test PostgreSQL (``proxy.dsn(pg_dsn)``), to cut or stall it."""
    p = TcpProxy("127.0.0.1", 5432)
    p.up()
    try:
        yield p
    finally:
        p.down()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server with AOF (``appendfsync everysec``) that a test may kill, restart
    or roll back (``copy_aof`` / ``restart_from``)."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    srv = PrivateRedis(redis_dir)
    srv.start()
    forget_backends()
    try:
        yield srv
    finally:
        forget_backends()
        srv.stop()
