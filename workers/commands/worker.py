"""``stabilize-redis worker``: run supervised worker processes (exit codes: ``workers.supervisor``)."""

from __future__ import annotations

import argparse
import sys

from workers.app import AppLoadError
from workers.commands import add_checkpoint_arguments, add_postgres_arguments, add_target_arguments
from workers.process import WorkerSettings
from workers.supervisor import EXIT_USAGE, supervise

NAME = "worker"
HELP = "run worker processes"
EPILOG = ("exit codes: 0 stopped by SIGTERM/SIGINT; 1 the worker crashed (--processes 1); 2 bad arguments; "
          "3 the namespace lost its Redis data, run `stabilize-redis restore` (--processes 1); "
          "4 workers kept crashing, the supervisor gave up. A worker started while Redis is unreachable "
          "or full waits for it.")


def add_arguments(w: argparse.ArgumentParser) -> None:
    w.epilog = EPILOG
    w.add_argument("--app", required=True, help="MODULE:ATTR naming a TaskRegistry or a callable returning one")
    add_target_arguments(w)
    w.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    w.add_argument("--concurrency", type=int, default=4, help="handler threads per process (default 4)")
    w.add_argument("--visibility-timeout", type=float, default=30.0,
                   help="seconds an unacknowledged message stays owned without a heartbeat (default 30)")
    w.add_argument("--grace-period", type=float, default=30.0, help="seconds to finish in-flight work on SIGTERM")
    w.add_argument("--log-level", default="INFO")
    add_postgres_arguments(w)
    w.add_argument("--no-checkpointer", dest="checkpoint", action="store_false",
                   help="do not run a checkpointer in the worker processes even with a DSN")
    add_checkpoint_arguments(w)


def run(args: argparse.Namespace) -> int:
    settings = WorkerSettings(app=args.app, url=args.url, namespace=args.namespace,
                              concurrency=args.concurrency, visibility_timeout=args.visibility_timeout,
                              grace_period=args.grace_period, log_level=args.log_level,
                              dsn=args.dsn, schema=args.schema, checkpoint=args.checkpoint,
                              checkpoint_interval=args.interval, fsync_lag=args.fsync_lag,
                              retention=args.retention)
    try:
        return supervise(settings, args.processes)
    except AppLoadError as e:
        print(f"stabilize-redis worker: {e}", file=sys.stderr)
        return EXIT_USAGE
