"""Several worker processes, one killed with SIGKILL mid-task: nothing is lost, no transition
repeats, and every task sees its ancestors' outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter

import pytest
import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from tests.processes import worker_pool


def _stage(ref: str, requires: set[str] | None = None) -> StageExecution:
    return StageExecution(
        ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=requires or set(), context={"work_s": 0.02},
        tasks=[TaskExecution.create(name=ref, implementing_class="work", stage_start=True, stage_end=True)])


def chain(n: int) -> Workflow:
    stages = [_stage("s0")] + [_stage(f"s{i}", {f"s{i - 1}"}) for i in range(1, n)]
    return Workflow.create(application="kill-test", name="chain", stages=stages)


def fan(width: int) -> Workflow:
    mids = [_stage(f"m{i}", {"start"}) for i in range(width)]
    return Workflow.create(application="kill-test", name="fan", stages=[
        _stage("start"), *mids, _stage("end", {m.ref_id for m in mids})])


def start_worker(url: str, ns: str, visibility: float) -> subprocess.Popen[bytes]:
    """A CLI worker (four threads) serving ``tests.processes.app``."""
    return worker_pool.start_worker(url, ns, visibility=visibility)


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.slow
def test_workflows_survive_a_worker_killed_mid_task(real_target: tuple[str, str]) -> None:
    url, ns = real_target
    client = connect(url, ns)
    raw = redis.Redis.from_url(url)
    workers = [start_worker(url, ns, visibility=2.0) for _ in range(3)]
    try:
        workflows = [chain(3) if i % 2 else fan(3) for i in range(200)]
        for wf in workflows:
            client.submit(wf)

        def one_busy_worker() -> bool:
            running = raw.hgetall(f"{ns}:test:running")
            return any(int(v) > 0 and int(k) == workers[0].pid for k, v in running.items())

        def some_done() -> bool:
            return sum(1 for wf in workflows[:60] if client.status(wf.id) == "SUCCEEDED") >= 20

        wait_for(some_done, 60, "20 finished workflows")
        wait_for(one_busy_worker, 30, "worker 0 to be running a task")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        workers.append(start_worker(url, ns, visibility=2.0))

        results = [client.wait(wf.id, timeout=120) for wf in workflows]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(workflows)
    repeats = 0
    for wf in workflows:
        events = client.events(wf.id)
        started = Counter(e["entity_id"] for e in events if e["event_type"] == "stage.started")
        completed = Counter(e["entity_id"] for e in events if e["event_type"] == "stage.completed")
        stage_ids = {s.id for s in wf.stages}
        assert started == Counter(stage_ids), f"{wf.id}: stage.started {started}"
        assert completed == Counter(stage_ids), f"{wf.id}: stage.completed {completed}"
        assert [e["event_type"] for e in events].count("workflow.completed") == 1
        runs = {k.decode(): int(v) for k, v in raw.hgetall(f"{ns}:test:exec:{wf.id}").items()}
        assert set(runs) == {s.ref_id for s in wf.stages}
        repeats += sum(n - 1 for n in runs.values())
        # every task read its ancestors' outputs, merged in rank order, whichever process ran them
        trails = {k.decode(): json.loads(v) for k, v in raw.hgetall(f"{ns}:test:trail:{wf.id}").items()}
        if wf.name == "chain":
            assert trails == {"s0": [], "s1": ["s0"], "s2": ["s0", "s1"]}, f"{wf.id}: {trails}"
        else:
            assert trails == {"start": [], "m0": ["start"], "m1": ["start"], "m2": ["start"],
                              "end": ["start", "m0", "m1", "m2"]}, f"{wf.id}: {trails}"
    # Only tasks in flight on the killed worker (at most its concurrency) may have run twice.
    assert repeats <= 4
    counts = client.queue.counts()
    assert counts["dead"] == 0
    assert counts["delayed"] == 0
    wait_for(lambda: client.queue.size() == 0, 10, "an empty queue")
