"""``stabilize-redis signal WORKFLOW STAGE NAME [--data JSON] [--transient]``: signal a stage.

STAGE is the stage's id or the ref id of a top-level stage. The command enqueues a SignalStage
(``Client.signal``) and prints the stage id; a worker then resumes the stage if it is SUSPENDED,
or buffers the signal until it suspends (discards it, with ``--transient``). Exit codes: 0
enqueued; 1 no such workflow in Redis or no such stage; 2 ``--data`` is not a JSON object.
"""

from __future__ import annotations

import argparse

from workers.commands import add_target_arguments, json_object_argument

NAME = "signal"
HELP = "send a signal to a stage (SignalStage): resumes a SUSPENDED stage, e.g. an approval gate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("workflow", help="workflow id")
    p.add_argument("stage", help="stage id, or the ref id of a top-level stage")
    p.add_argument("name", help="signal name (the task reads it as _signal_name; e.g. approve, reject)")
    p.add_argument("--data", default=None, help="signal data: a JSON object (the task reads it as _signal_data)")
    p.add_argument("--transient", action="store_true",
                   help="discard the signal unless the stage is SUSPENDED now (default: buffer it until it is)")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.client import Client
    from stabilize_redis.errors import StageError, WorkflowNotFoundError

    data = json_object_argument("signal", "--data", args.data)
    if data is None:
        return 2
    client = Client(args.url, args.namespace, dsn="")
    try:
        stage_id = client.signal(args.workflow, args.stage, args.name, data, persistent=not args.transient)
    except (WorkflowNotFoundError, StageError) as e:
        print(f"signal refused: {e}")
        return 1
    except ValueError as e:
        print(f"signal refused: {e}")
        return 2
    kind = "transient" if args.transient else "persistent"
    print(f"{kind} signal {args.name!r} to stage {stage_id} of workflow {args.workflow} enqueued")
    return 0
