"""Wide fans: what a parallel stage costs and how late the join starts as the fan widens.

    python -m tests.bench.bench_fans [--sizes 100,1000,5000,10000] [--processes 2] [--concurrency 4]

A private redis-server and a ``stabilize-redis worker`` group (``bench_redis``). For each width
N, one workflow start -> N parallel stages -> join (AND), every stage the bench's no-op task.
Per fan: wall time and worker / redis-server CPU per stage, throughput relative to the first
(narrowest) fan (issue 9 asks a 5,000-wide fan at >= 80% of a 100-wide fan's), and the join's
lag: from the last parallel stage's end to the join's start (issue 9 asks <= 10 ms).
"""

from __future__ import annotations

import argparse
from typing import Any

import stabilize_redis as api
from tests.bench.bench_redis import Meter, measured_workers
from tests.bench.workloads import TASK_NAME


def _stage(ref: str, requires: set[str]) -> api.StageExecution:
    return api.StageExecution(ref_id=ref, type="s", name=ref, requisite_stage_ref_ids=requires, tasks=[
        api.TaskExecution.create(name=ref, implementing_class=TASK_NAME, stage_start=True, stage_end=True)])


def fan(n: int) -> api.Workflow:
    mids = [_stage(f"m{i}", {"start"}) for i in range(n)]
    return api.Workflow.create(application="bench-fan", name=f"fan {n}", stages=[
        _stage("start", set()), *mids, _stage("join", {m.ref_id for m in mids})])


def run(client: Any, meter: Meter, n: int) -> dict[str, float]:
    wf = fan(n)
    meter.start()
    client.submit(wf)
    done = client.wait(wf.id, timeout=3600)
    wall, worker, server = meter.stop()
    assert done.status == api.WorkflowStatus.SUCCEEDED, done.status
    last = max(s.end_time for s in done.stages if s.ref_id.startswith("m"))
    join = done.stage_by_ref_id("join")
    stages = n + 2
    return {"n": n, "per_stage_us": wall / stages * 1e6, "worker_us": worker / stages * 1e6,
            "redis_us": server / stages * 1e6, "join_ms": float(join.start_time - last)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with measured_workers("bench-fan", args.processes, args.concurrency) as (client, meter, _raw):
        rows = [run(client, meter, int(n)) for n in args.sizes.split(",")]
    base = rows[0]["per_stage_us"]
    print(f"workers: {args.processes} processes x {args.concurrency} threads, private redis-server")
    print(f"{'width':>7} {'wall us/stage':>14} {'worker us/stage':>16} {'redis us/stage':>15} "
          f"{'throughput vs first':>20} {'join lag ms':>12}")
    for r in rows:
        print(f"{r['n']:>7} {r['per_stage_us']:>14.0f} {r['worker_us']:>16.0f} {r['redis_us']:>15.0f} "
              f"{base / r['per_stage_us']:>20.2f} {r['join_ms']:>12.0f}")


if __name__ == "__main__":
    main()
