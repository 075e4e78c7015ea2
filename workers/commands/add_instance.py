"""``stabilize-redis add-instance WORKFLOW STAGE [--context JSON]``: add an instance to a dynamic
multi-instance group.

STAGE is the multi-instance parent's stage id, or its ref id when it is a top-level stage. The
command enqueues an AddMultiInstance (``Client.add_instance``) and prints the stage id; a worker
then adds the instance, ``--context`` in its context, and the group's join waits for it - or,
when the group does not allow_dynamic, its join has fired, the parent halted or the workflow
finished, records a ``mi.instance_rejected`` event saying why (an added one: ``mi.instance_added``).
Exit codes, as ``signal``'s: 0 enqueued; 1 no such workflow in Redis or no such stage; 2
``--context`` is not a JSON object, or holds a value that cannot be sent (NaN, an integer out of
the 64-bit range, ...).
"""

from __future__ import annotations

import argparse
import json

from workers.commands import add_target_arguments, json_object_argument

NAME = "add-instance"
HELP = "add an instance to a dynamic multi-instance group (AddMultiInstance, WCP-15); its join waits for it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("workflow", help="workflow id")
    p.add_argument("stage", help="the multi-instance parent: its stage id, or the ref id of a top-level stage")
    p.add_argument("--context", default=None,
                   help="the new instance's context: a JSON object (default {}); the instance keys "
                        "(_mi_parent_ref_id, _mi_instance_index) are set over it")


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.client import Client
    from stabilize_redis.errors import StageError, WorkflowNotFoundError

    context = json_object_argument("add-instance", "--context", args.context)
    if context is None:
        return 2
    client = Client(args.url, args.namespace, dsn="")
    try:
        stage_id = client.add_instance(args.workflow, args.stage, context)
    except (WorkflowNotFoundError, StageError) as e:
        print(f"add-instance refused: {e}")
        return 1
    except ValueError as e:
        print(f"add-instance refused: {e}")
        return 2
    print(f"AddMultiInstance to stage {stage_id} of workflow {args.workflow} enqueued, instance context "
          f"{json.dumps(context, sort_keys=True)}; its events say whether it was added (mi.instance_added) "
          f"or rejected (mi.instance_rejected)")
    return 0
