"""PostgreSQL settings and connections of the durability layer.

The DSN comes from ``--dsn`` or ``STABILIZE_POSTGRES_DSN`` (a libpq URL or key=value string;
the password belongs in it, in ``PGPASSWORD`` or in a ``.pgpass`` file, never in code). Every
table lives in one schema, from ``--schema`` or ``STABILIZE_POSTGRES_SCHEMA`` (default
``stabilize_redis``), so several deployments can share one database.

This module imports psycopg only when a pool is made, so callers can resolve settings (and
learn that none are configured) without the ``postgres`` extra installed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from stabilize_redis.durability.snapshots import SnapshotStore

DSN_ENV = "STABILIZE_POSTGRES_DSN"
SCHEMA_ENV = "STABILIZE_POSTGRES_SCHEMA"
DEFAULT_SCHEMA = "stabilize_redis"

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_URL_PASSWORD = re.compile(r"^(?P<head>[a-z][a-z0-9+.-]*://[^:@/]*:)(?P<pw>[^@]*)(?P<tail>@.*)$", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class PostgresNotConfigured(RuntimeError):
    """An operation needs Postgres but no DSN was given (``--dsn`` / STABILIZE_POSTGRES_DSN)."""


def validate_schema(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier (letters, digits, ``_``; at most
    63 characters; not starting with a digit or ``pg_``); raise ValueError otherwise."""
    if not _SCHEMA.match(name) or name.startswith("pg_"):
        raise ValueError(
            f"schema {name!r} must be a lower-case identifier: [a-z_][a-z0-9_]*, at most 63 "
            "characters, not starting with 'pg_'")
    return name


def resolve_dsn(dsn: str | None = None) -> str | None:
    """The argument, else ``STABILIZE_POSTGRES_DSN``; an empty string means not configured."""
    value = dsn if dsn is not None else os.environ.get(DSN_ENV)
    return value or None


def resolve_schema(schema: str | None = None) -> str:
    """The argument, else ``STABILIZE_POSTGRES_SCHEMA``, else ``stabilize_redis``; validated."""
    return validate_schema(schema or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)


@dataclass(frozen=True)
class PgSettings:
    """Where the durable record lives: a DSN and a schema name (validated)."""

    dsn: str
    schema: str = DEFAULT_SCHEMA

    def __post_init__(self) -> None:
        validate_schema(self.schema)

    def describe(self) -> str:
        """The DSN with any password hidden, and the schema, for logs."""
        return f"{redact_dsn(self.dsn)}, schema {self.schema!r}"


def pg_settings(dsn: str | None = None, schema: str | None = None) -> PgSettings | None:
    """Settings from arguments or the environment; None when no DSN is configured."""
    resolved = resolve_dsn(dsn)
    return PgSettings(resolved, resolve_schema(schema)) if resolved else None


def require_settings(dsn: str | None = None, schema: str | None = None) -> PgSettings:
    """Like ``pg_settings`` but raise PostgresNotConfigured when there is no DSN."""
    settings = pg_settings(dsn, schema)
    if settings is None:
        raise PostgresNotConfigured(f"no PostgreSQL DSN: pass --dsn or set {DSN_ENV}")
    return settings


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (URL and key=value forms)."""
    match = _URL_PASSWORD.match(dsn)
    if match:
        return f"{match.group('head')}***{match.group('tail')}"
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}***", dsn)


def make_pool(dsn: str, *, name: str = "stabilize-redis", min_size: int = 1, max_size: int = 4,
              timeout: float = 5.0, reconnect_timeout: float = 5.0) -> ConnectionPool:
    """An opened psycopg 3 ``ConnectionPool`` that does not wait for Postgres to answer.

    Connections are checked when taken (a connection broken by a Postgres restart is replaced),
    ``timeout`` bounds how long ``pool.connection()`` waits before raising ``PoolTimeout``, and
    a short ``reconnect_timeout`` makes the pool start a fresh connection attempt soon after an
    outage ends. The pool's own per-attempt warnings are lowered to ERROR when the
    ``psycopg.pool`` logger has no level set: callers report outages themselves, once.
    """
    from psycopg_pool import ConnectionPool

    pool_log = logging.getLogger("psycopg.pool")
    if pool_log.level == logging.NOTSET:
        pool_log.setLevel(logging.ERROR)
    pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, timeout=timeout, name=name,
                          reconnect_timeout=reconnect_timeout, open=False,
                          check=ConnectionPool.check_connection,
                          kwargs={"connect_timeout": max(1, int(timeout)), "application_name": name})
    pool.open(wait=False)
    return pool


def configured_snapshot_store(dsn: str | None, schema: str | None, namespace: str) -> SnapshotStore | None:
    """The process-wide SnapshotStore for ``namespace`` when a DSN is given or set in
    STABILIZE_POSTGRES_DSN (``dsn=""`` disables), else None. Opens no connection."""
    settings = pg_settings(dsn, schema)
    if settings is None:
        return None
    try:
        from stabilize_redis.durability.snapshots import snapshot_store_for
    except ImportError as e:
        raise ImportError(f"a PostgreSQL DSN is configured but psycopg is missing ({e}): install "
                          f"stabilize-redis[postgres], or unset {DSN_ENV} / pass dsn=''") from e
    return snapshot_store_for(settings.dsn, settings.schema, namespace)
