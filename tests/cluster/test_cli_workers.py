"""CLI worker processes on the cluster (``stabilize-redis worker --url redis+cluster://...``):
two workers share the workflows; one killed with SIGKILL mid-task loses nothing and repeats no
transition (its entries are reclaimed by the others after the visibility timeout)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.backend.connection import Target, connect_redis
from tests.cluster.cluster_app import exec_key, running_key
from tests.cluster.nodes import wait_for
from tests.processes import worker_pool

APP = "tests.cluster.cluster_app:registry"


def _stage(ref: str, requires: set[str] | None = None) -> StageExecution:
    return StageExecution(
        ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=requires or set(), context={"work_s": 0.02},
        tasks=[TaskExecution.create(name=ref, implementing_class="work", stage_start=True, stage_end=True)])


def chain(n: int) -> Workflow:
    stages = [_stage("s0")] + [_stage(f"s{i}", {f"s{i - 1}"}) for i in range(1, n)]
    return Workflow.create(application="cluster-test", name="chain", stages=stages)


def fan(width: int) -> Workflow:
    mids = [_stage(f"m{i}", {"start"}) for i in range(width)]
    return Workflow.create(application="cluster-test", name="fan", stages=[
        _stage("start"), *mids, _stage("end", {m.ref_id for m in mids})])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_two_cli_workers_run_every_workflow_once_and_survive_one_killed_mid_task(
        cluster_target: tuple[str, str]) -> None:
    url, ns = cluster_target
    client = connect(url, ns)
    raw = connect_redis(Target(url, ns))
    procs = [worker_pool.start_worker(url, ns, app=APP, visibility=2.0) for _ in range(2)]
    try:
        workflows = [chain(3) if i % 2 else fan(3) for i in range(80)]
        for wf in workflows:
            client.submit(wf)

        def worker_busy(pid: int) -> bool:
            return int(raw.hget(running_key(ns), str(pid)) or 0) > 0

        wait_for(lambda: sum(client.status(wf.id) == "SUCCEEDED" for wf in workflows[:40]) >= 10, 60,
                 "10 finished workflows")
        assert all(raw.hget(running_key(ns), str(p.pid)) is not None for p in procs), "both workers ran tasks"
        wait_for(lambda: worker_busy(procs[0].pid), 30, "worker 0 to be running a task")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        started = time.monotonic()
        results = [client.wait(wf.id, timeout=120) for wf in workflows]
        assert time.monotonic() - started < 60
    finally:
        _stop(procs)

    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(workflows)
    repeats = 0
    for wf in workflows:
        events = client.events(wf.id)
        stage_ids = Counter(s.id for s in wf.stages)
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.started") == stage_ids
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.completed") == stage_ids
        assert [e["event_type"] for e in events].count("workflow.completed") == 1
        runs = {k.decode(): int(v) for k, v in raw.hgetall(exec_key(ns, wf.id)).items()}
        assert set(runs) == {s.ref_id for s in wf.stages}
        repeats += sum(n - 1 for n in runs.values())
    assert repeats <= 4  # only tasks in flight on the killed worker (its concurrency) may run twice
    counts = client.queue.counts()
    assert counts["dead"] == 0 and counts["delayed"] == 0
