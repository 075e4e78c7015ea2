"""``stabilize-redis status``: queue counts of a namespace."""

from __future__ import annotations

import argparse
import json

from stabilize_redis.queue.redis_queue import RedisQueue
from workers.commands import add_target_arguments

NAME = "status"
HELP = "queue counts of a namespace"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)


def run(args: argparse.Namespace) -> int:
    queue = RedisQueue(args.url, args.namespace)
    print(json.dumps({"target": queue.backend.target.describe(),
                      "partitions": queue.backend.keys.partitions, **queue.counts()}, indent=2))
    return 0
