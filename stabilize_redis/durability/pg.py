"""PostgreSQL settings and connections of the durability layer.

The DSN comes from ``--dsn`` or ``STABILIZE_POSTGRES_DSN`` (a libpq URL or key=value string;
the password belongs in it, in ``PGPASSWORD`` or in a ``.pgpass`` file, never in code). Every
table lives in one schema, from ``--schema`` or ``STABILIZE_POSTGRES_SCHEMA`` (default
``stabilize_redis``), so several deployments can share one database.

**No connection can hang for ever** (``PgTimeouts``; seconds, from the environment; 0 turns
one off; a parameter the DSN itself sets wins, and ``options`` from the DSN or ``PGOPTIONS``
are kept after ours):

=========================================  =======  =============================================
``STABILIZE_POSTGRES_CONNECT_TIMEOUT``     5        connection attempt (and never longer than the
                                                    pool timeout of the caller)
``STABILIZE_POSTGRES_STATEMENT_TIMEOUT``   30       server-side ``statement_timeout``
``STABILIZE_POSTGRES_IDLE_TX_TIMEOUT``     60       server-side
                                                    ``idle_in_transaction_session_timeout``
``STABILIZE_POSTGRES_KEEPALIVES_IDLE``     10       TCP keepalives: first probe after this idle
``STABILIZE_POSTGRES_KEEPALIVES_INTERVAL`` 5        ... then one probe every this many seconds
``STABILIZE_POSTGRES_KEEPALIVES_COUNT``    3        ... the connection is dead after this many
``STABILIZE_POSTGRES_TCP_USER_TIMEOUT``    30       unacknowledged data for this long kills the
                                                    connection (``tcp_user_timeout``)
``STABILIZE_POSTGRES_CHECK_TIMEOUT``       2        the check of a connection taken from the
                                                    pool (one empty query) must answer in time
=========================================  =======  =============================================

So a black-holed socket errors out client-side: a query whose bytes are not acknowledged after
``tcp_user_timeout``, a query waiting on a silent peer after ``idle + interval * count`` (25 s),
and a statement the server runs too long after ``statement_timeout``. A hang the kernel cannot
see (a proxy that accepts bytes and forwards nothing) is the checkpointer watchdog's job
(``durability.watchdog``). The pool (``durability.pool.FencedPool``) checks connections with a
bounded round trip.

This module imports psycopg only when a pool is made, so callers can resolve settings (and
learn that none are configured) without the ``postgres`` extra installed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stabilize_redis.config import env_float, env_int
from stabilize_redis.redaction import redact

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from stabilize_redis.durability.snapshots import SnapshotStore

DSN_ENV = "STABILIZE_POSTGRES_DSN"
SCHEMA_ENV = "STABILIZE_POSTGRES_SCHEMA"
DEFAULT_SCHEMA = "stabilize_redis"

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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
    """The DSN with every credential replaced by ``***`` (``stabilize_redis.redaction``)."""
    return redact(dsn)


CONNECT_TIMEOUT_ENV = "STABILIZE_POSTGRES_CONNECT_TIMEOUT"
STATEMENT_TIMEOUT_ENV = "STABILIZE_POSTGRES_STATEMENT_TIMEOUT"
IDLE_TX_TIMEOUT_ENV = "STABILIZE_POSTGRES_IDLE_TX_TIMEOUT"
KEEPALIVES_IDLE_ENV = "STABILIZE_POSTGRES_KEEPALIVES_IDLE"
KEEPALIVES_INTERVAL_ENV = "STABILIZE_POSTGRES_KEEPALIVES_INTERVAL"
KEEPALIVES_COUNT_ENV = "STABILIZE_POSTGRES_KEEPALIVES_COUNT"
TCP_USER_TIMEOUT_ENV = "STABILIZE_POSTGRES_TCP_USER_TIMEOUT"
CHECK_TIMEOUT_ENV = "STABILIZE_POSTGRES_CHECK_TIMEOUT"


@dataclass(frozen=True)
class PgTimeouts:
    """Bounds on every PostgreSQL connection of a pool (seconds; 0 turns one off; see the module
    docstring for what each one bounds and its environment variable)."""

    connect: float = 5.0
    statement: float = 30.0
    idle_in_transaction: float = 60.0
    keepalives_idle: float = 10.0
    keepalives_interval: float = 5.0
    keepalives_count: int = 3
    tcp_user_timeout: float = 30.0
    check: float = 2.0

    @classmethod
    def from_env(cls) -> PgTimeouts:
        d = cls()
        return cls(
            connect=env_float(CONNECT_TIMEOUT_ENV, d.connect),
            statement=env_float(STATEMENT_TIMEOUT_ENV, d.statement),
            idle_in_transaction=env_float(IDLE_TX_TIMEOUT_ENV, d.idle_in_transaction),
            keepalives_idle=env_float(KEEPALIVES_IDLE_ENV, d.keepalives_idle),
            keepalives_interval=env_float(KEEPALIVES_INTERVAL_ENV, d.keepalives_interval),
            keepalives_count=env_int(KEEPALIVES_COUNT_ENV, d.keepalives_count),
            tcp_user_timeout=env_float(TCP_USER_TIMEOUT_ENV, d.tcp_user_timeout),
            check=env_float(CHECK_TIMEOUT_ENV, d.check),
        )

    def connection_kwargs(self, dsn: str, pool_timeout: float) -> dict[str, Any]:
        """libpq parameters to add to ``dsn``: those it does not set itself, and ``options``
        holding the server-side timeouts followed by the DSN's (or ``PGOPTIONS``') own."""
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(dsn)
        wanted: dict[str, Any] = {}
        connect = [x for x in (self.connect, pool_timeout) if x > 0]
        if connect:
            wanted["connect_timeout"] = max(1, round(min(connect)))
        if self.keepalives_idle > 0:
            wanted.update(keepalives=1, keepalives_idle=max(1, round(self.keepalives_idle)),
                          keepalives_interval=max(1, round(self.keepalives_interval)),
                          keepalives_count=max(1, self.keepalives_count))
        if self.tcp_user_timeout > 0:
            wanted["tcp_user_timeout"] = round(self.tcp_user_timeout * 1000)
        out = {k: v for k, v in wanted.items() if k not in given}
        server = [f"-c {name}={round(seconds * 1000)}"
                  for name, seconds in (("statement_timeout", self.statement),
                                        ("idle_in_transaction_session_timeout", self.idle_in_transaction))
                  if seconds > 0]
        theirs = str(given.get("options") or os.environ.get("PGOPTIONS") or "")
        if server:
            out["options"] = " ".join([*server, theirs]).strip()
        return out


def make_pool(dsn: str, *, name: str = "stabilize-redis", min_size: int = 1, max_size: int = 4,
              timeout: float = 5.0, reconnect_timeout: float = 5.0,
              timeouts: PgTimeouts | None = None) -> ConnectionPool:
    """An opened ``durability.pool.FencedPool`` that does not wait for Postgres to answer.

    Connections carry the bounds of ``timeouts`` (default ``PgTimeouts.from_env()``) and are
    checked when taken by a bounded round trip (a connection broken by a Postgres restart, or
    gone silent, is replaced); ``timeout`` bounds how long ``pool.connection()`` waits before
    raising ``PoolTimeout``, and a short ``reconnect_timeout`` makes the pool start a fresh
    connection attempt soon after an outage ends. The pool's own per-attempt warnings are
    lowered to ERROR when the ``psycopg.pool`` logger has no level set: callers report outages
    themselves, once.
    """
    from stabilize_redis.durability.pool import FencedPool

    bounds = timeouts or PgTimeouts.from_env()
    pool_log = logging.getLogger("psycopg.pool")
    if pool_log.level == logging.NOTSET:
        pool_log.setLevel(logging.ERROR)
    check = bounds.check if bounds.check > 0 else timeout
    pool = FencedPool(dsn, check_timeout=check, min_size=min_size, max_size=max_size, timeout=timeout,
                      name=name, reconnect_timeout=reconnect_timeout, open=False,
                      kwargs={**bounds.connection_kwargs(dsn, timeout), "application_name": name})
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
