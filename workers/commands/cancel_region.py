"""``stabilize-redis cancel_region WORKFLOW REGION``: cancel a workflow's cancel region.

The command enqueues a CancelRegion (``Client.cancel_region``); a worker then cancels, in one
commit, every unfinished stage tagged with that ``cancel_region`` (and their synthetic
children) and the running tasks' tokens. Exit codes: 0 enqueued; 1 no such workflow in Redis.
"""

from __future__ import annotations

import argparse

from workers.commands import add_target_arguments

NAME = "cancel_region"
HELP = "cancel every unfinished stage of a cancel_region (CancelRegion, WCP-25)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("workflow", help="workflow id")
    p.add_argument("region", help="the cancel_region the stages are tagged with")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.client import Client
    from stabilize_redis.keys import META_FIELD

    client = Client(args.url, args.namespace, dsn="")
    key = client.backend.part(args.workflow).workflow(args.workflow)
    if not client.backend.client.hexists(key, META_FIELD):
        print(f"cancel_region refused: workflow {args.workflow} is not in Redis")
        return 1
    client.cancel_region(args.workflow, args.region)
    print(f"CancelRegion {args.region!r} of workflow {args.workflow} enqueued")
    return 0
