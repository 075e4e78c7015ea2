"""``stabilize-redis status``: per-partition queue and checkpoint state of a namespace.

Per partition: ``ready`` (waiting for delivery), ``in_flight`` (delivered, not yet acknowledged),
``delayed``, ``dead`` (dead letters), ``dirty`` (changed since the last checkpoint) and
``oldest_dirty_s`` (age of the oldest unsaved change, by the Redis clock), ``last_checkpoint``
(when the checkpointer last wrote a batch of this partition, from its ``ckpt:info`` hash),
``last_checkpoint_age_s``, ``quarantined`` (workflows PostgreSQL refused, left unsaved until
they change again) and ``dirty_trimmed`` (true while dirty marks dropped when no checkpointer
ran await re-marking by one; ``stabilize_redis.durability.dirty_cap``). Totals sum the rows
(``oldest_dirty_s``: the maximum).

It reads with a plain client and never creates anything, so it shows a namespace that lost its
data as such (``marker: missing``, exit code 3) instead of re-creating its marker.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from stabilize_redis.backend.batch import pipeline
from workers.commands import add_target_arguments

NAME = "status"
HELP = "per-partition queue, dead-letter and checkpoint state of a namespace"

EXIT_MARKER_MISSING = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p)
    p.add_argument("--table", action="store_true", help="print a table instead of JSON")


def _iso(ms: int | None) -> str | None:
    return None if ms is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def partition_rows(client: Any, namespace: str, partitions: int, layout: int | None = None) -> list[dict[str, Any]]:
    """One row per partition (see the module docstring); two round trips. ``layout``: the
    namespace's key layout (default: the current one)."""
    from stabilize_redis.keys import CONSUMER_GROUP, CURRENT_LAYOUT, NamespaceKeys

    keys = NamespaceKeys(namespace, partitions, layout or CURRENT_LAYOUT)
    secs, micros = client.time()
    now = int(secs) * 1000 + int(micros) // 1000
    pipe = pipeline(client)
    parts = keys.all_partitions()
    for part in parts:
        pipe.xlen(part.ready)
        pipe.xpending(part.ready, CONSUMER_GROUP)
        pipe.zcard(part.delayed)
        pipe.xlen(part.dead)
        pipe.zcard(part.dirty)
        pipe.zrange(part.dirty, 0, 0, withscores=True)
        pipe.hget(part.checkpoint_info, "at")
        pipe.hlen(part.quarantine)
        pipe.exists(part.dirty_trimmed)
    res = pipe.execute(raise_on_error=False)
    rows: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        xlen, pending, delayed, dead, dirty, oldest, at, quarantined, trimmed = res[9 * k: 9 * k + 9]
        in_flight = 0
        if isinstance(pending, dict):
            in_flight = int(pending.get("pending") or 0)
        elif isinstance(pending, list | tuple) and pending:
            in_flight = int(pending[0] or 0)
        last = int(at) if isinstance(at, bytes | str | int) and at not in (b"", "") else None
        rows.append({
            "partition": part.index,
            "ready": max(0, int(xlen if isinstance(xlen, int) else 0) - in_flight),
            "in_flight": in_flight,
            "delayed": int(delayed if isinstance(delayed, int) else 0),
            "dead": int(dead if isinstance(dead, int) else 0),
            "dirty": int(dirty if isinstance(dirty, int) else 0),
            "oldest_dirty_s": round((now - int(oldest[0][1])) / 1000, 3) if isinstance(oldest, list) and oldest
            else None,
            "last_checkpoint": _iso(last),
            "last_checkpoint_age_s": round((now - last) / 1000, 3) if last is not None else None,
            "quarantined": int(quarantined if isinstance(quarantined, int) else 0),
            "dirty_trimmed": trimmed == 1,
        })
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(r[k] for r in rows)
                           for k in ("ready", "in_flight", "delayed", "dead", "dirty", "quarantined")}
    ages = [r["oldest_dirty_s"] for r in rows if r["oldest_dirty_s"] is not None]
    out["oldest_dirty_s"] = max(ages) if ages else None
    stamps = [r["last_checkpoint"] for r in rows if r["last_checkpoint"] is not None]
    out["last_checkpoint"] = max(stamps) if stamps else None
    return out


def _table(report: dict[str, Any]) -> str:
    cols = ("partition", "ready", "in_flight", "delayed", "dead", "dirty", "oldest_dirty_s", "last_checkpoint_age_s",
            "quarantined")
    lines = [f"{report['target']}  partitions={report['partitions']}  marker={report['marker']}",
             "  ".join(f"{c:>14}" for c in cols)]
    for row in [*report["rows"], {"partition": "total", **report["totals"],
                                  "last_checkpoint_age_s": ""}]:
        lines.append("  ".join(f"{'-' if row.get(c) is None else row.get(c)!s:>14}" for c in cols))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Exit code 0, or 3 when the namespace has no marker in Redis (lost, or never created)."""
    from stabilize_redis.backend.connection import connect_redis, resolve
    from stabilize_redis.keys import LAYOUT_FIELD, PARTITIONS_FIELD, NamespaceKeys, layout_of

    target = resolve(args.url, args.namespace)
    client = connect_redis(target)
    meta = client.hgetall(NamespaceKeys(target.namespace, 0).meta)
    if not meta:
        print(json.dumps({"target": target.describe(), "marker": "missing",
                          "hint": "the namespace has no data in Redis: never used, or lost "
                                  "(run `stabilize-redis restore` to reload it from PostgreSQL)"}, indent=2))
        return EXIT_MARKER_MISSING
    partitions = int(meta.get(PARTITIONS_FIELD.encode()) or 0)
    layout = layout_of(target.namespace, meta.get(LAYOUT_FIELD.encode()))
    rows = partition_rows(client, target.namespace, partitions, layout)
    report = {"target": target.describe(), "partitions": partitions, "key_layout": layout,
              "marker": "restored" if b"restored_at" in meta else "present",
              "totals": totals(rows), "rows": rows}
    print(_table(report) if args.table else json.dumps(report, indent=2))
    return 0
