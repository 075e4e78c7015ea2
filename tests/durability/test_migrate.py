"""Migrations: applied into a chosen schema, idempotent, listed by ``migrate --status``, and
append-only (a changed applied migration stops the run)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from stabilize_redis.durability.migrate import MigrationError, available, migrate, status
from stabilize_redis.durability.pg import validate_schema
from tests.durability.conftest import drop_schema
from workers.cli import main


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    schema = f"stz_t{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_schema(pg_dsn, schema)


def _tables(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                            (schema,)).fetchall()
    return {r[0] for r in rows}


def test_migrate_creates_the_schema_and_is_idempotent(pg_dsn: str, fresh_schema: str) -> None:
    names = [m.name for m in available()]
    assert names and names[0] == "0001_initial"
    assert migrate(pg_dsn, fresh_schema) == names
    assert migrate(pg_dsn, fresh_schema) == []
    assert migrate(pg_dsn, fresh_schema) == []
    assert {"workflow_snapshots", "workflow_events", "namespaces", "schema_migrations"} <= _tables(pg_dsn, fresh_schema)
    rows = status(pg_dsn, fresh_schema)
    assert [(r.name, r.state) for r in rows] == [(n, "applied") for n in names]
    assert all(r.applied_at is not None for r in rows)


def test_migrate_status_lists_pending_then_applied(pg_dsn: str, fresh_schema: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--dsn", pg_dsn, "--schema", fresh_schema, "--status"]) == 1
    out = capsys.readouterr().out
    assert "0001_initial" in out and "pending" in out
    assert _tables(pg_dsn, fresh_schema) == set(), "--status must not create anything"

    assert main(["migrate", "--dsn", pg_dsn, "--schema", fresh_schema]) == 0
    assert "0001_initial" in capsys.readouterr().out
    assert main(["migrate", "--dsn", pg_dsn, "--schema", fresh_schema]) == 0
    assert "up to date" in capsys.readouterr().out

    assert main(["migrate", "--dsn", pg_dsn, "--schema", fresh_schema, "--status"]) == 0
    out = capsys.readouterr().out
    assert "0001_initial" in out and "applied" in out and "pending" not in out


def test_a_changed_applied_migration_stops_the_run(pg_dsn: str, fresh_schema: str) -> None:
    migrate(pg_dsn, fresh_schema)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(psycopg.sql.SQL("UPDATE {}.schema_migrations SET checksum = 'x'")
                     .format(psycopg.sql.Identifier(fresh_schema)))
    with pytest.raises(MigrationError, match="0001_initial"):
        migrate(pg_dsn, fresh_schema)
    assert [r.state for r in status(pg_dsn, fresh_schema)] == ["changed"] * len(available())


def test_concurrent_migrations_apply_once(pg_dsn: str, fresh_schema: str) -> None:
    import threading

    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(pg_dsn, fresh_schema))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, len(available())]


@pytest.mark.parametrize("name", ["", "Public", "a-b", "x;drop", "pg_temp", "1abc", "a" * 64])
def test_schema_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        validate_schema(name)


def test_missing_dsn_is_an_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("STABILIZE_POSTGRES_DSN", raising=False)
    assert main(["migrate"]) == 2
    assert "STABILIZE_POSTGRES_DSN" in capsys.readouterr().err
