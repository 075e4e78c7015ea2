"""What the cross-partition steps cost: sub-workflows, concurrency limits and the global mutex,
each beside plain single-stage workflows, in one run.

    python -m tests.bench.bench_cross_partition [--count 200] [--processes 2] [--concurrency 4]

A private redis-server and a ``stabilize-redis worker`` group (``bench_redis``), the bench's
no-op task everywhere; each workload submits ``count`` workflows at once and waits for all:

* **plain** - one stage: the baseline.
* **sub-workflow** - ``call`` (SubWorkflowTask) over a one-stage child: the parent's suspend,
  StartSubWorkflow through the outbox, the child, its result signalled back, the parent's end.
* **limited** - one stage, ``max_concurrent_executions`` far above ``count`` (never binding):
  what LimitAcquire / LimitDecision / LimitRelease add to a workflow.
* **global mutex** - one stage holding ``mutex_scope="global"``: the workflows run one at a
  time, so wall per workflow is the lock's hand-over latency plus the stage.

Per workflow: wall time, worker CPU, redis-server CPU, and the ratio of wall to plain's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import stabilize_redis as api
from tests.bench.bench_redis import Meter, measured_workers
from tests.bench.workloads import TASK_NAME


def _stage(ref: str, task: str, **fields: Any) -> api.StageExecution:
    return api.StageExecution(ref_id=ref, type=ref, name=ref, **fields, tasks=[
        api.TaskExecution.create(name=ref, implementing_class=task, stage_start=True, stage_end=True)])


def plain() -> api.Workflow:
    return api.Workflow.create(application="bench-x", name="plain", stages=[_stage("one", TASK_NAME)])


def sub_workflow() -> api.Workflow:
    config = {"name": "child", "stages": [{"ref_id": "c", "tasks": [{"implementing_class": TASK_NAME}]}]}
    return api.Workflow.create(application="bench-x", name="parent", stages=[
        _stage("call", "subWorkflow", context={"_sub_workflow_config": config})])


def limited() -> api.Workflow:
    wf = plain()
    wf.pipeline_config_id, wf.is_limit_concurrent, wf.max_concurrent_executions = "bench", True, 1_000_000
    wf.keep_waiting_pipelines = True
    return wf


def global_mutex() -> api.Workflow:
    return api.Workflow.create(application="bench-x", name="locked", stages=[
        _stage("one", TASK_NAME, mutex_key="bench-lock", mutex_scope="global")])


WORKLOADS: dict[str, Callable[[], api.Workflow]] = {
    "plain": plain, "sub-workflow": sub_workflow, "limited": limited, "global mutex": global_mutex}


def run(client: Any, meter: Meter, make: Callable[[], api.Workflow], count: int) -> dict[str, float]:
    flows = [make() for _ in range(count)]
    meter.start()
    for wf in flows:
        client.submit(wf)
    for wf in flows:
        done = client.wait(wf.id, timeout=1800)
        assert done.status == api.WorkflowStatus.SUCCEEDED, (wf.name, done.status)
    wall, worker, server = meter.stop()
    return {"wall_us": wall / count * 1e6, "worker_us": worker / count * 1e6, "redis_us": server / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with measured_workers("bench-x", args.processes, args.concurrency) as (client, meter, _raw):
        rows = {name: run(client, meter, make, args.count) for name, make in WORKLOADS.items()}
    base = rows["plain"]["wall_us"]
    print(f"{args.count} workflows per workload; workers: {args.processes} processes x {args.concurrency} threads, "
          "private redis-server")
    print(f"{'workload':>14} {'wall us/wf':>12} {'worker CPU us':>14} {'redis CPU us':>13} {'x plain':>8}")
    for name, row in rows.items():
        print(f"{name:>14} {row['wall_us']:>12.0f} {row['worker_us']:>14.0f} {row['redis_us']:>13.0f} "
              f"{row['wall_us'] / base:>8.2f}")


if __name__ == "__main__":
    main()
