"""``stabilize-redis restart WORKFLOW STAGE``: run a finished stage of a workflow again.

STAGE is the stage's id or the ref id of a top-level stage. The command enqueues a RestartStage
(``Client.restart``) and prints the stage id; a worker then resets the stage and its downstream
scope and reopens the workflow. Exit codes: 0 enqueued; 1 no such workflow in Redis (never
submitted, or finished and evicted) or no such stage.
"""

from __future__ import annotations

import argparse

from workers.commands import add_target_arguments

NAME = "restart"
HELP = "run a finished stage of a workflow again (RestartStage), with everything downstream of it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("workflow", help="workflow id")
    p.add_argument("stage", help="stage id, or the ref id of a top-level stage")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.client import Client
    from stabilize_redis.errors import StageError, WorkflowNotFoundError

    client = Client(args.url, args.namespace, dsn="")
    try:
        stage_id = client.restart(args.workflow, args.stage)
    except (WorkflowNotFoundError, StageError) as e:
        print(f"restart refused: {e}")
        return 1
    print(f"restart of stage {stage_id} of workflow {args.workflow} enqueued")
    return 0
