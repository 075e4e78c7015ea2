"""Versioned schema migrations: the ``NNNN_name.sql`` files shipped in
``stabilize_redis/migrations`` (the repository's ``deploy/migrations``).

``migrate(dsn, schema)`` creates the schema if needed and applies, in name order, every
migration not yet recorded in ``<schema>.schema_migrations (name, checksum, applied_at)``. It
runs in one transaction under an advisory lock per schema, so concurrent runs are safe and a
failing migration leaves nothing half-applied. A recorded migration whose file changed since
(checksum mismatch) stops the run with MigrationError: migrations are append-only.

Migration files use unqualified names; they run with ``search_path`` set to the target schema.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
from psycopg import sql

from stabilize_redis.durability.pg import validate_schema

MIGRATIONS_TABLE = "schema_migrations"


class MigrationError(RuntimeError):
    """A recorded migration differs from the shipped file, or the files are malformed."""


@dataclass(frozen=True)
class Migration:
    """One shipped migration file: its name (file name without ``.sql``), text and checksum."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    """A migration as seen by ``status``: ``state`` is 'applied', 'pending' (shipped, not yet
    applied), 'changed' (applied, but the shipped file differs) or 'unknown' (applied, no longer
    shipped)."""

    name: str
    state: str
    checksum: str
    applied_at: datetime | None


def available() -> list[Migration]:
    """The shipped migrations, ordered by name."""
    root = resources.files("stabilize_redis").joinpath("migrations")
    found = [Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
             for entry in root.iterdir() if entry.name.endswith(".sql")]
    found.sort(key=lambda m: m.name)
    if not found:
        raise MigrationError("no migrations shipped: stabilize_redis/migrations is empty or missing")
    return found


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE))


def _prepare(conn: psycopg.Connection, schema: str) -> None:
    """Inside the caller's transaction: lock the schema's migrations, create schema and table."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"stabilize_redis.migrate:{schema}",))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, checksum text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())").format(_table(schema)))


def _recorded(conn: psycopg.Connection, schema: str) -> dict[str, tuple[str, datetime]]:
    rows = conn.execute(sql.SQL("SELECT name, checksum, applied_at FROM {} ORDER BY name")
                        .format(_table(schema))).fetchall()
    return {name: (checksum, applied_at) for name, checksum, applied_at in rows}


def _check_unchanged(shipped: list[Migration], recorded: dict[str, tuple[str, datetime]]) -> None:
    for m in shipped:
        if m.name in recorded and recorded[m.name][0] != m.checksum:
            raise MigrationError(
                f"migration {m.name} was applied with checksum {recorded[m.name][0][:12]}… but the "
                f"shipped file has {m.checksum[:12]}…; applied migrations must not change")


def migrate(dsn: str, schema: str) -> list[str]:
    """Apply every pending migration into ``schema``; returns the names applied (empty when
    already up to date). Idempotent; raises MigrationError on a changed applied migration."""
    validate_schema(schema)
    shipped = available()
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn, conn.transaction():
        _prepare(conn, schema)
        recorded = _recorded(conn, schema)
        _check_unchanged(shipped, recorded)
        for m in shipped:
            if m.name in recorded:
                continue
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(m.sql.encode("utf-8"))
            conn.execute(sql.SQL("INSERT INTO {} (name, checksum) VALUES (%s, %s)").format(_table(schema)),
                         (m.name, m.checksum))
            applied.append(m.name)
    return applied


def status(dsn: str, schema: str) -> list[MigrationStatus]:
    """Every shipped or recorded migration with its state; reads only (creates nothing)."""
    validate_schema(schema)
    shipped = {m.name: m for m in available()}
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              (f'"{schema}"."{MIGRATIONS_TABLE}"',)).fetchone()
        recorded = _recorded(conn, schema) if exists and exists[0] else {}
    out: list[MigrationStatus] = []
    for name in sorted(set(shipped) | set(recorded)):
        if name not in recorded:
            out.append(MigrationStatus(name, "pending", shipped[name].checksum, None))
            continue
        checksum, applied_at = recorded[name]
        if name not in shipped:
            state = "unknown"
        else:
            state = "applied" if shipped[name].checksum == checksum else "changed"
        out.append(MigrationStatus(name, state, checksum, applied_at))
    return out
