"""One Redis vs a three-master Redis Cluster, in one run: the same workloads (trivial tasks,
``tests.bench.workloads``) on a private ``redis-server`` and on a private cluster of three
masters (no replicas: the cluster's own replication would only add load on this machine), each
with the same CLI worker group, rounds alternating between the two; prints one table of wall
seconds and stages/s (the median round and the range).

    python -m tests.bench.bench_cluster [--workloads W3,W1] [--workers 2] [--rounds 3] [--scale 1]

On a machine with few cores the cluster's three servers compete with the workers for CPU, so
the figures compare the per-operation cost of the cluster path (slot routing, one blocking
read per partition, serial batches) rather than what a cluster of real machines adds.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.bench.bench_redis import _run_workload, _warm_up, private_redis, worker_group
from tests.bench.workloads import SHAPES, workflow_count
from tests.cluster.nodes import start_cluster


@contextmanager
def private_cluster() -> Iterator[str]:
    cluster = start_cluster(masters=3, replicas=0)
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _round(url: str, workloads: list[str], processes: int, concurrency: int, scale: float,
           timeout: float) -> dict[str, tuple[float, int, int]]:
    """One worker group on ``url``: per workload (wall s, stages, failed workflows)."""
    import stabilize_redis as api

    namespace = f"bench{secrets.token_hex(4)}"
    out: dict[str, tuple[float, int, int]] = {}
    with worker_group(url, namespace, processes, concurrency) as (proc, _log):
        client = api.connect(url, namespace)
        _warm_up(client, api, proc)
        for name in workloads:
            wall, _t0, _submit, finals = _run_workload(client, api, name, scale, timeout)
            failed = sum(1 for f in finals if f is None or f.status.name != "SUCCEEDED")
            out[name] = (wall, workflow_count(name, scale) * SHAPES[name].stages, failed)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W3,W1")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    results: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    started = time.monotonic()
    with private_redis() as single, private_cluster() as cluster:
        for r in range(args.rounds):
            for label, url in (("one Redis", single), ("3-master cluster", cluster)):
                for name, row in _round(url, workloads, args.workers, args.concurrency, args.scale,
                                        args.timeout).items():
                    results.setdefault((name, label), []).append(row)
                    print(f"round {r + 1} {label} {name}: {row[1] / row[0]:.0f} stages/s", file=sys.stderr)
    print(f"\n{args.workers} worker processes x {args.concurrency} threads, {args.rounds} rounds, "
          f"{time.monotonic() - started:.0f} s in all\n")
    print("| workload | backend | median wall s | stages/s (median) | stages/s (range) | failed | vs one Redis |")
    print("|---|---|---|---|---|---|---|")
    for name in workloads:
        base: float | None = None
        for label in ("one Redis", "3-master cluster"):
            rows = results[(name, label)]
            rates = sorted(stages / wall for wall, stages, _ in rows)
            median = statistics.median(rates)
            base = base or median
            failed = sum(f for _, _, f in rows)
            print(f"| {name} | {label} | {statistics.median(w for w, _, _ in rows):.2f} | {median:.0f} | "
                  f"{rates[0]:.0f}-{rates[-1]:.0f} | {failed} | {median / base:.2f}x |")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
