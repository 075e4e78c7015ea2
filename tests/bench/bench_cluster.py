"""One Redis vs a three-master Redis Cluster, in one run: the same workloads (trivial tasks,
``tests.bench.workloads``) on a private ``redis-server`` and on a private cluster of three
masters (no replicas: the cluster's own replication would only add load on this machine), each
with the same CLI worker group, rounds alternating between the two; prints one table of wall
seconds, stages/s (the median round and the range) and the worker group's CPU per stage.

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
from tests.bench.cpu import SessionCPU
from tests.bench.workloads import SHAPES, workflow_count
from tests.cluster.nodes import start_cluster


@contextmanager
def private_cluster() -> Iterator[str]:
    cluster = start_cluster(masters=3, replicas=0)
    try:
        yield cluster.url
    finally:
        cluster.stop()


Row = tuple[float, int, int, float]
"""wall seconds, stages, failed workflows, worker CPU seconds"""


def _round(url: str, workloads: list[str], processes: int, concurrency: int, scale: float,
           timeout: float) -> dict[str, Row]:
    """One worker group on ``url``: a Row per workload."""
    import stabilize_redis as api

    namespace = f"bench{secrets.token_hex(4)}"
    out: dict[str, Row] = {}
    with worker_group(url, namespace, processes, concurrency) as (proc, _log):
        client = api.connect(url, namespace)
        _warm_up(client, api, proc)
        cpu = SessionCPU(proc.pid)
        for name in workloads:
            cpu.wait_idle()
            before = cpu.sample()
            wall, _t0, _submit, finals = _run_workload(client, api, name, scale, timeout)
            spent = cpu.delta(before, cpu.sample()).seconds
            failed = sum(1 for f in finals if f is None or f.status.name != "SUCCEEDED")
            out[name] = (wall, workflow_count(name, scale) * SHAPES[name].stages, failed, spent)
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
    results: dict[tuple[str, str], list[Row]] = {}
    started = time.monotonic()
    with private_redis() as single, private_cluster() as cluster:
        for r in range(args.rounds):
            for label, url in (("one Redis", single), ("3-master cluster", cluster)):
                for name, row in _round(url, workloads, args.workers, args.concurrency, args.scale,
                                        args.timeout).items():
                    results.setdefault((name, label), []).append(row)
                    print(f"round {r + 1} {label} {name}: {row[1] / row[0]:.0f} stages/s, "
                          f"{row[3] / row[1] * 1e6:.0f} µs worker CPU/stage", file=sys.stderr)
    print(f"\n{args.workers} worker processes x {args.concurrency} threads, {args.rounds} rounds, "
          f"{time.monotonic() - started:.0f} s in all\n")
    print("| workload | backend | median wall s | stages/s (median) | stages/s (range) | worker CPU µs/stage "
          "(median) | failed | vs one Redis |")
    print("|---|---|---|---|---|---|---|---|")
    for name in workloads:
        base: float | None = None
        for label in ("one Redis", "3-master cluster"):
            rows = results[(name, label)]
            rates = sorted(stages / wall for wall, stages, _, _ in rows)
            median = statistics.median(rates)
            base = base or median
            failed = sum(f for _, _, f, _ in rows)
            cpu_us = statistics.median(spent / stages * 1e6 for _, stages, _, spent in rows)
            print(f"| {name} | {label} | {statistics.median(w for w, _, _, _ in rows):.2f} | {median:.0f} | "
                  f"{rates[0]:.0f}-{rates[-1]:.0f} | {cpu_us:.0f} | {failed} | {median / base:.2f}x |")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
