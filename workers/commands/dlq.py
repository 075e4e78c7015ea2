"""``stabilize-redis dlq list|replay|purge``: the dead-letter streams."""

from __future__ import annotations

import argparse
import json

from stabilize_redis.queue.redis_queue import RedisQueue
from workers.commands import add_target_arguments

NAME = "dlq"
HELP = "inspect and replay dead letters"


def add_arguments(d: argparse.ArgumentParser) -> None:
    add_target_arguments(d)
    dsub = d.add_subparsers(dest="action", required=True)
    ls = dsub.add_parser("list")
    ls.add_argument("--limit", type=int, default=50)
    rp = dsub.add_parser("replay")
    rp.add_argument("id", help="PARTITION/ENTRY_ID as shown by `dlq list`")
    dsub.add_parser("purge")


def run(args: argparse.Namespace) -> int:
    queue = RedisQueue(args.url, args.namespace)
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
