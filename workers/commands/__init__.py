"""Subcommands of ``stabilize-redis``: one module each, exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. List a new module in ``COMMANDS``."""

from __future__ import annotations

import argparse
import json

COMMANDS = ("worker", "demo", "status", "dlq", "migrate", "checkpointer", "restore", "quarantine", "restart", "signal", "cancel_region",
            "add_instance")


def json_object_argument(command: str, flag: str, text: str | None) -> dict[str, object] | None:
    """``text`` (a ``flag`` value) as a JSON object ({} when not given), or None after printing
    ``<command> refused: ...`` when it is not JSON or not an object (the caller exits 2)."""
    if text is None:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as e:
        print(f"{command} refused: {flag} is not JSON: {e}")
        return None
    if not isinstance(parsed, dict):
        print(f"{command} refused: {flag} must be a JSON object")
        return None
    return parsed


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """``--url``/``--namespace`` for every command that touches Redis."""
    p.add_argument("--url", default=None, help="Redis URL (redis://, rediss://, unix://); env STABILIZE_REDIS_URL")
    p.add_argument("--namespace", default=None, help="key prefix; env STABILIZE_NAMESPACE (default stz)")


def add_postgres_arguments(p: argparse.ArgumentParser) -> None:
    """``--dsn``/``--schema`` for every command that touches PostgreSQL."""
    p.add_argument("--dsn", default=None,
                   help="PostgreSQL DSN (URL or key=value); env STABILIZE_POSTGRES_DSN")
    p.add_argument("--schema", default=None,
                   help="PostgreSQL schema; env STABILIZE_POSTGRES_SCHEMA (default stabilize_redis)")


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """Checkpointer timings (defaults from the environment, see CheckpointSettings.from_env)."""
    p.add_argument("--interval", type=float, default=None,
                   help="seconds a running workflow may stay unsaved; env STABILIZE_CHECKPOINT_INTERVAL (default 1)")
    p.add_argument("--fsync-lag", type=float, default=None,
                   help="write only state read at least this many seconds ago, so a Redis crash under AOF "
                        "everysec cannot un-happen what Postgres holds; env STABILIZE_CHECKPOINT_FSYNC_LAG "
                        "(default 0; use ~1.5 with appendfsync everysec)")
    p.add_argument("--retention", type=float, default=None,
                   help="seconds a finished, checkpointed workflow stays in Redis (<= 0: forever); "
                        "env STABILIZE_RETENTION (default 3600)")
