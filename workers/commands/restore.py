"""``stabilize-redis restore``: reload a namespace's unfinished workflows from PostgreSQL after
Redis lost them, enqueue what each needs to continue, and re-create the namespace marker so
workers start again. Safe to run twice (see ``stabilize_redis.durability.restore``)."""

from __future__ import annotations

import argparse
import json
import sys

from workers.commands import add_postgres_arguments, add_target_arguments
from workers.process import configure_logging

NAME = "restore"
HELP = "reload unfinished workflows from PostgreSQL into Redis after a data loss"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    add_postgres_arguments(p)
    p.add_argument("--batch-size", type=int, default=200, help="workflows per Redis round trip (default 200)")
    p.add_argument("--log-level", default="WARNING")


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 restored (or nothing to do), 1 some snapshots could not be decoded or the
    namespace cannot be restored, 2 no DSN / bad arguments / embedded Redis."""
    from stabilize_redis.backend.connection import connect_redis, resolve
    from stabilize_redis.durability.pg import PostgresNotConfigured, require_settings

    configure_logging(args.log_level)
    try:
        pg = require_settings(args.dsn, args.schema)
        target = resolve(args.url, args.namespace)
    except (PostgresNotConfigured, ValueError) as e:
        print(f"stabilize-redis restore: {e}", file=sys.stderr)
        return 2
    if target.embedded:
        print("stabilize-redis restore: needs a Redis URL (--url or STABILIZE_REDIS_URL); the embedded "
              "server lives inside one process", file=sys.stderr)
        return 2
    from stabilize_redis.durability.restore import RestoreError, restore_namespace
    from stabilize_redis.durability.snapshots import SnapshotStore

    store = SnapshotStore(pg.dsn, pg.schema, target.namespace)
    try:
        report = restore_namespace(connect_redis(target), store, batch_size=args.batch_size)
    except RestoreError as e:
        print(f"stabilize-redis restore: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(report.to_dict()))
    return 1 if report.failed else 0
