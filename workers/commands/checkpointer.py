"""``stabilize-redis checkpointer``: run the checkpointer standalone (workers run one inside
each process by default; run this when workers use ``--no-checkpointer`` or have no DSN).

Started after workers ran without one, it also re-marks the unsaved workflows of partitions
whose dirty sets those workers trimmed (``stabilize_redis.durability.dirty_cap``)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from workers.commands import add_checkpoint_arguments, add_postgres_arguments, add_target_arguments
from workers.process import configure_logging

NAME = "checkpointer"
HELP = "copy workflow snapshots and events to PostgreSQL; evict old finished workflows"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    add_postgres_arguments(p)
    add_checkpoint_arguments(p)
    p.add_argument("--batch-size", type=int, default=200, help="workflows per round trip / transaction (default 200)")
    p.add_argument("--once", action="store_true",
                   help="checkpoint everything dirty now (ignoring the interval and leases), print totals, exit")
    p.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.durability.pg import PostgresNotConfigured, require_settings

    configure_logging(args.log_level)
    try:
        pg = require_settings(args.dsn, args.schema)
    except (PostgresNotConfigured, ValueError) as e:
        print(f"stabilize-redis checkpointer: {e}", file=sys.stderr)
        return 2
    from stabilize_redis.backend.registry import backend_for
    from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings
    from stabilize_redis.durability.snapshots import SnapshotStore

    backend = backend_for(args.url, args.namespace)
    settings = CheckpointSettings.from_env(args.interval, args.fsync_lag, args.retention,
                                           batch_size=args.batch_size)
    checkpointer = Checkpointer(backend, SnapshotStore(pg.dsn, pg.schema, backend.keys.namespace), settings)
    if args.once:
        totals = checkpointer.drain_all()
        print(json.dumps({"read": totals.read, "written": totals.written, "events": totals.events,
                          "cleared": totals.cleared}))
        return 0
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.getLogger("stabilize_redis.checkpointer").info(
        "checkpointer for %s -> %s: interval %.1fs, fsync lag %.1fs, retention %.0fs, stall timeout %.0fs",
        backend.target.describe(), pg.describe(), settings.interval, settings.fsync_lag, settings.retention,
        settings.stall_timeout)
    checkpointer.run(stop)  # supervises the loop thread: a stuck pass is abandoned and replaced
    checkpointer.stop()
    return 0
