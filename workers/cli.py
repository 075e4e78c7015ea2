"""``stabilize-redis``: worker, demo and operator commands.

Every command that touches Redis takes ``--url`` and ``--namespace`` (defaults from
STABILIZE_REDIS_URL / STABILIZE_NAMESPACE; no URL means the embedded in-process default).
"""

from __future__ import annotations

import argparse
import json
import sys

from workers.app import AppLoadError
from workers.process import WorkerSettings
from workers.supervisor import supervise


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="Redis URL (redis://, rediss://, unix://); env STABILIZE_REDIS_URL")
    p.add_argument("--namespace", default=None, help="key prefix; env STABILIZE_NAMESPACE (default stz)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stabilize-redis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run worker processes")
    w.add_argument("--app", required=True, help="MODULE:ATTR naming a TaskRegistry or a callable returning one")
    _target_args(w)
    w.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    w.add_argument("--concurrency", type=int, default=4, help="handler threads per process (default 4)")
    w.add_argument("--visibility-timeout", type=float, default=30.0,
                   help="seconds an unacknowledged message stays owned without a heartbeat (default 30)")
    w.add_argument("--grace-period", type=float, default=30.0, help="seconds to finish in-flight work on SIGTERM")
    w.add_argument("--log-level", default="INFO")

    sub.add_parser("demo", help="run the demo workflow (embedded unless STABILIZE_REDIS_URL is set)")

    s = sub.add_parser("status", help="queue counts of a namespace")
    _target_args(s)

    d = sub.add_parser("dlq", help="inspect and replay dead letters")
    _target_args(d)
    dsub = d.add_subparsers(dest="action", required=True)
    ls = dsub.add_parser("list")
    ls.add_argument("--limit", type=int, default=50)
    rp = dsub.add_parser("replay")
    rp.add_argument("id", help="PARTITION/ENTRY_ID as shown by `dlq list`")
    dsub.add_parser("purge")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        settings = WorkerSettings(app=args.app, url=args.url, namespace=args.namespace,
                                  concurrency=args.concurrency, visibility_timeout=args.visibility_timeout,
                                  grace_period=args.grace_period, log_level=args.log_level)
        try:
            return supervise(settings, args.processes)
        except AppLoadError as e:
            print(f"stabilize-redis worker: {e}", file=sys.stderr)
            return 2
    if args.command == "demo":
        from stabilize_redis.demo import main as demo_main

        return demo_main()

    from stabilize_redis.queue.redis_queue import RedisQueue

    queue = RedisQueue(args.url, args.namespace)
    if args.command == "status":
        print(json.dumps({"target": queue.backend.target.describe(),
                          "partitions": queue.backend.keys.partitions, **queue.counts()}, indent=2))
        return 0
    if args.action == "list":
        for row in queue.list_dlq(args.limit):
            print(json.dumps({k: row[k] for k in ("id", "type", "reason", "attempts", "error", "payload")}))
        return 0
    if args.action == "replay":
        ok = queue.replay_dlq(args.id)
        print("replayed" if ok else "not found")
        return 0 if ok else 1
    print(f"purged {queue.clear_dlq()} dead letters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
