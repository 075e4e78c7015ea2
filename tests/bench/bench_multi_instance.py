"""Multi-instance groups at growing size: what one instance costs as a group grows to 10,000.

    python -m tests.bench.bench_multi_instance [--sizes 100,1000,10000] [--adds 100,1000,3000]
                                               [--processes 2] [--concurrency 4]

A private redis-server and a ``stabilize-redis worker`` group (``bench_redis``), then:

* **fixed** - ``MultiInstanceBuilder.create_fixed(parent, N)``: parent -> N instances (a no-op
  task each) -> the group's join. Per instance: wall time, worker CPU and redis-server CPU from
  submit to the workflow's end; and how long after the last instance ended the join started.
  Cost per instance O(1) means these columns stay flat as N grows.
* **dynamic** - ``create_dynamic(parent, initial_count=1)`` with the parent held RUNNING while
  N ``AddMultiInstance`` messages (pushed at once) are committed; per add: wall time and worker
  CPU until the last ``mi.instance_added`` event, then the release and the run of the N
  instances. Each add rewrites the parent's and the join's records (their lists of N ids), so
  this cost grows with N: the table shows by how much.

No stabilize column: stabilize's AddMultiInstance never makes the join wait for an added instance
and its fixed groups run on the same plain DAG path the main benchmark (``bench.py``) compares.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis

import stabilize_redis as api
from stabilize_redis.stages.multi_instance_builder import MultiInstanceBuilder
from tests.bench.bench_redis import Meter, measured_workers
from tests.bench.bench_tasks import HOLD_TASK_NAME
from tests.bench.workloads import TASK_NAME


def _task(name: str) -> list[Any]:
    return [api.TaskExecution.create(name=name, implementing_class=name, stage_start=True, stage_end=True)]


def fixed_group(n: int) -> api.Workflow:
    parent = api.StageExecution.create(type="fan", name="parent", ref_id="parent")
    parent.tasks = _task(TASK_NAME)
    stages = MultiInstanceBuilder.create_fixed(parent, n)
    for s in stages[:-1]:
        s.tasks = _task(TASK_NAME)
    return api.Workflow.create(application="bench-mi", name=f"fixed {n}", stages=[parent, *stages])


def dynamic_group() -> api.Workflow:
    parent = api.StageExecution.create(type="fan", name="parent", ref_id="parent")
    parent.tasks = _task(HOLD_TASK_NAME)
    stages = MultiInstanceBuilder.create_dynamic(parent, initial_count=1)
    for s in stages[:-1]:
        s.tasks = _task(TASK_NAME)
    return api.Workflow.create(application="bench-mi", name="dynamic", stages=[parent, *stages])


def run_fixed(client: Any, meter: Meter, n: int) -> dict[str, Any]:
    wf = fixed_group(n)
    meter.start()
    client.submit(wf)
    done = client.wait(wf.id, timeout=1800)
    wall, worker, server = meter.stop()
    assert done.status == api.WorkflowStatus.SUCCEEDED, done.status
    instances = [s for s in done.stages if "_instance_" in s.ref_id]
    join = done.stage_by_ref_id("parent_mi_join")
    lag = (join.start_time - max(s.end_time for s in instances)) if join and join.start_time else float("nan")
    return {"n": n, "wall_us": wall / n * 1e6, "worker_us": worker / n * 1e6, "redis_us": server / n * 1e6,
            "join_ms": lag}


def run_dynamic(client: Any, meter: Meter, raw: redis.Redis, n: int) -> dict[str, Any]:
    wf = dynamic_group()
    client.submit(wf)
    key = client.backend.part(wf.id).events(wf.id)
    deadline = time.monotonic() + 60
    while client.store.retrieve(wf.id).stage_by_ref_id("parent").status != api.WorkflowStatus.RUNNING:
        if time.monotonic() > deadline:
            raise TimeoutError("the parent never started")
        time.sleep(0.01)
    meter.start()
    for i in range(n):
        client.add_instance(wf.id, "parent", {"item": i})
    while sum(1 for _, e in raw.xrange(key) if b"mi.instance_added" in e[b"e"]) < n:
        time.sleep(0.01)
    wall, worker, server = meter.stop()
    raw.set(f"bench:release:{wf.id}", 1)
    done = client.wait(wf.id, timeout=1800)
    assert done.status == api.WorkflowStatus.SUCCEEDED, done.status
    assert sum(1 for s in done.stages if "_instance_" in s.ref_id) == n + 1
    return {"n": n, "wall_us": wall / n * 1e6, "worker_us": worker / n * 1e6, "redis_us": server / n * 1e6}


def table(title: str, rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    base = rows[0]
    lines = [title, " ".join(f"{h:>14}" for _, h in cols) + f"{'x vs first':>12}"]
    for row in rows:
        cells = [f"{row[k]:>14.1f}" if isinstance(row[k], float) else f"{row[k]:>14}" for k, _ in cols]
        lines.append(" ".join(cells) + f"{row['wall_us'] / base['wall_us']:>12.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--adds", default="100,1000,3000")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with measured_workers("bench-mi", args.processes, args.concurrency) as (client, meter, raw):
        fixed = [run_fixed(client, meter, int(n)) for n in args.sizes.split(",")]
        dynamic = [run_dynamic(client, meter, raw, int(n)) for n in args.adds.split(",")]
    cols = [("n", "instances"), ("wall_us", "wall us/inst"), ("worker_us", "worker CPU us"),
            ("redis_us", "redis CPU us")]
    print(f"workers: {args.processes} processes x {args.concurrency} threads, private redis-server")
    print(table("fixed group: parent -> N instances -> join (per instance)", fixed,
                [*cols, ("join_ms", "join lag ms")]))
    print()
    print(table("dynamic group: N AddMultiInstance committed while the parent runs (per add)", dynamic,
                [("n", "adds"), *cols[1:]]))


if __name__ == "__main__":
    main()
