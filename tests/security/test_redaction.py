"""Credentials never reach a log line or a terminal: every form of a Redis URL or PostgreSQL
DSN is masked by ``stabilize_redis.redaction.redact``, and the worker's start line, its
checkpointer line and ``stabilize-redis status`` print the masked form only."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stabilize_redis.backend.connection import resolve
from stabilize_redis.durability.pg import PgSettings
from stabilize_redis.redaction import redact
from tests.conftest import free_port, start_private_redis
from tests.integration.support import wait_until
from tests.security.support import cli_env, run_cli, start_worker, stop_worker

S = "s3cr3tVALUE"

MASKED = [
    ("redis://app:s3cr3tVALUE@cache:6379/0", "redis://app:***@cache:6379/0"),
    ("redis://:s3cr3tVALUE@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:s3cr3tVALUE@cache:6380/0?ssl_ca_certs=/etc/ca.pem",
     "rediss://app:***@cache:6380/0?ssl_ca_certs=/etc/ca.pem"),
    ("unix://app:s3cr3tVALUE@/run/redis.sock?db=2", "unix://app:***@/run/redis.sock?db=2"),
    ("redis://cache:6379/0?password=s3cr3tVALUE", "redis://cache:6379/0?password=***"),
    ("redis://cache/0?db=1&password=s3cr3tVALUE&socket_timeout=5", "redis://cache/0?db=1&password=***&socket_timeout=5"),
    ("redis://cache/0?PASSWORD=s3cr3tVALUE", "redis://cache/0?PASSWORD=***"),
    ("rediss://cache/0?ssl_certfile=/c.pem&ssl_password=s3cr3tVALUE", "rediss://cache/0?ssl_certfile=/c.pem&ssl_password=***"),
    ("rediss://cache/0?ssl_keyfile_password=s3cr3tVALUE", "rediss://cache/0?ssl_keyfile_password=***"),
    ("redis://cache/0?auth_token=s3cr3tVALUE&client_secret=s3cr3tVALUE", "redis://cache/0?auth_token=***&client_secret=***"),
    ("redis://cache/0?password=s3cr3t#VALUE", "redis://cache/0?password=***"),
    ("postgresql://app:s3cr3tVALUE@db:5432/app?sslmode=require", "postgresql://app:***@db:5432/app?sslmode=require"),
    ("postgresql://app:s3cr3tVALUE@db/app?sslpassword=s3cr3tVALUE", "postgresql://app:***@db/app?sslpassword=***"),
    ("postgresql://db/app?user=app&password=s3cr3tVALUE", "postgresql://db/app?user=app&password=***"),
    ("postgres://app:s3%40cr3t%2FVALUE@db/app", "postgres://app:***@db/app"),
    ("postgresql://app:s3@cr3tVALUE@db/app", "postgresql://app:***@db/app"),
    ("postgresql://app:s3?cr3tVALUE@db/app", "postgresql://app:***@db/app"),
    ("redis://app:s3/cr3tVALUE@cache/0", "redis://app:***@cache/0"),
    ("host=db user=app password=s3cr3tVALUE dbname=app", "host=db user=app password=*** dbname=app"),
    ("host=db password = s3cr3tVALUE dbname=app", "host=db password = *** dbname=app"),
    (r"host=db password='s3cr3t \' VALUE' dbname=app", "host=db password=*** dbname=app"),
    ("host=db sslpassword=s3cr3tVALUE sslkey=/k.pem", "host=db sslpassword=*** sslkey=/k.pem"),
    ("host=db PASSWORD=s3cr3tVALUE", "host=db PASSWORD=***"),
]

UNCHANGED = [
    "redis://cache:6379/0",
    "redis://app@cache:6379/0",
    "rediss://cache:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
    "unix:///run/redis.sock?db=2",
    "postgresql://app@db:5432/app?sslmode=verify-full&sslrootcert=/ca.pem",
    "host=db user=app dbname=app",
]


@pytest.mark.parametrize(("value", "expected"), MASKED)
def test_every_credential_form_is_masked(value: str, expected: str) -> None:
    assert redact(value) == expected


@pytest.mark.parametrize("value", UNCHANGED)
def test_strings_without_credentials_are_unchanged(value: str) -> None:
    assert redact(value) == value


def test_describe_and_repr_of_targets_and_pg_settings_mask_credentials() -> None:
    target = resolve(f"redis://app:{S}@cache:6379/0?password={S}", "ns")
    pg = PgSettings(f"postgresql://app:{S}@db/app?sslpassword={S}")
    for text in (target.describe(), repr(target), pg.describe()):
        assert S not in text and "***" in text
    assert "cache:6379" in target.describe() and "db/app" in pg.describe()


@pytest.fixture
def password_redis() -> Iterator[tuple[int, str]]:
    """A private redis-server that requires a password (set after start, so the fixture's
    start-up check needs none)."""
    port = free_port()
    proc = start_private_redis(port)
    password = f"{S}{secrets.token_hex(8)}"
    try:
        redis.Redis(host="127.0.0.1", port=port).config_set("requirepass", password)
        yield port, password
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_worker_start_line_checkpointer_line_and_status_never_show_the_password(
        password_redis: tuple[int, str], pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    port, password = password_redis
    ns = f"t{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{port}/0?password={password}"
    pg_password = f"pg{password}"
    dsn = pg_dsn.replace("://postgres@", f"://postgres:{pg_password}@")  # trust auth: never checked
    assert pg_password in dsn
    env = cli_env(url, ns)  # the task app reads it; the worker and status get --url
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "--url", url, "--namespace", ns, "--dsn", dsn, "--schema", pg_schema,
                          "--log-level", "INFO")
    try:
        wait_until(lambda: "checkpointer on" in log.read_text() and "serving" in log.read_text(), 30,
                   "the worker's start lines")
        status = run_cli("status", "--url", url, "--namespace", ns, env=env)
        table = run_cli("status", "--url", url, "--namespace", ns, "--table", env=env)
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-2000:]
    output = log.read_text()
    assert f"127.0.0.1:{port}/0?password=***" in output, output
    assert "postgres:***@" in output, output
    assert status.returncode == 0 and "password=***" in status.stdout, status.stderr
    assert table.returncode == 0 and "password=***" in table.stdout, table.stderr
    for text in (output, status.stdout, status.stderr, table.stdout, table.stderr):
        assert password not in text and pg_password not in text
