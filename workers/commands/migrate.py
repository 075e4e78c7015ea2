"""``stabilize-redis migrate``: apply the schema migrations to PostgreSQL, or list them."""

from __future__ import annotations

import argparse
import sys

from workers.commands import add_postgres_arguments

NAME = "migrate"
HELP = "apply PostgreSQL schema migrations (--status: list them)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_postgres_arguments(p)
    p.add_argument("--status", action="store_true", help="list migrations and whether each is applied; change nothing")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.durability.pg import PostgresNotConfigured, require_settings

    try:
        pg = require_settings(args.dsn, args.schema)
    except (PostgresNotConfigured, ValueError) as e:
        print(f"stabilize-redis migrate: {e}", file=sys.stderr)
        return 2
    import psycopg

    from stabilize_redis.durability.migrate import MigrationError, migrate, status

    try:
        if args.status:
            rows = status(pg.dsn, pg.schema)
            print(f"migrations of {pg.describe()}:")
            for m in rows:
                when = m.applied_at.isoformat(timespec="seconds") if m.applied_at else "-"
                print(f"  {m.name:<32} {m.state:<8} {when}")
            return 0 if all(m.state == "applied" for m in rows) else 1
        applied = migrate(pg.dsn, pg.schema)
    except MigrationError as e:
        print(f"stabilize-redis migrate: {e}", file=sys.stderr)
        return 1
    except psycopg.Error as e:
        print(f"stabilize-redis migrate: PostgreSQL error: {e}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied to {pg.describe()}: {', '.join(applied)}")
    else:
        print(f"{pg.describe()} is up to date")
    return 0
