"""``stabilize-redis quarantine list|retry``: workflows the checkpointer set aside because
PostgreSQL refused them or their hash could not be read (``stabilize_redis.durability.quarantine``).

``list`` prints one JSON object per quarantined workflow (partition, id, reason, version, stage,
at in epoch ms), oldest first. ``retry ID`` marks the workflow dirty so the next checkpoint pass
tries it again (after its data was repaired, say); its entry goes once a write succeeds.
Both read with a plain client and create nothing (exit code 3 when the namespace has no marker).
"""

from __future__ import annotations

import argparse
import json

from workers.commands import add_target_arguments

NAME = "quarantine"
HELP = "list or retry workflows the checkpointer could not save to PostgreSQL"

EXIT_MARKER_MISSING = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="print every quarantined workflow with its reason (JSON lines)")
    add_target_arguments(ls)
    rt = sub.add_parser("retry", help="mark a quarantined workflow dirty so it is checkpointed again")
    add_target_arguments(rt)
    rt.add_argument("id", help="workflow id, as shown by `quarantine list`")


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 done, 1 ``retry`` of a workflow that is not quarantined (or gone), 3 no
    namespace marker."""
    from stabilize_redis.backend.connection import connect_redis, resolve
    from stabilize_redis.durability import quarantine
    from stabilize_redis.keys import LAYOUT_FIELD, PARTITIONS_FIELD, NamespaceKeys, layout_of

    target = resolve(args.url, args.namespace)
    client = connect_redis(target)
    partitions, layout = client.hmget(NamespaceKeys(target.namespace, 0).meta, [PARTITIONS_FIELD, LAYOUT_FIELD])
    if partitions is None:
        print(f"stabilize-redis quarantine: namespace {target.namespace!r} has no data in Redis")
        return EXIT_MARKER_MISSING
    keys = NamespaceKeys(target.namespace, int(partitions), layout_of(target.namespace, layout))
    if args.action == "list":
        for entry in quarantine.entries(client, keys):
            print(json.dumps(entry.to_dict()))
        return 0
    ok = quarantine.retry(client, keys, args.id)
    print("marked for retry" if ok else "not quarantined (or gone)")
    return 0 if ok else 1
