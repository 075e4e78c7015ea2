"""The seed README's research-analyst workflow end to end on CLI workers, one SIGKILLed mid-task.

plan -> researcher_0..2 -> synthesize (N_OF_M 2 of 3, ``finding`` collected) -> review_a | review_b
-> router (DISCRIMINATOR; loops back to plan once) -> approval (human) -> publish, served by three
CLI worker processes (``tests/processes/research_app.py``) on real Redis.

The interleavings are forced by conditions the test controls, never by sleeps:

* researcher_2 blocks in both passes until the test releases it, and is released only once
  ``synthesize`` of that pass has started - so each quorum fires on researcher_0 and researcher_1.
* In the first pass the worker executing researcher_2 is SIGKILLed while the task blocks (it
  recorded its pid first). The workers have one handler thread each, so the killed worker was
  executing nothing else. Its entry is reclaimed after the visibility timeout (3 s) by a live
  worker, which runs researcher_2 again: the killed work is **redelivered and finished** - not
  superseded by the loop, because the router decides each pass only when the test lets it, and
  the test does so once researcher_2 and both reviews of that pass have SUCCEEDED. (That also keeps
  every stage finished before the approval suspends, so the workflow can show SUSPENDED.)
* The approval is given only once the approval stage and the workflow show SUSPENDED.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis

from stabilize_redis import Client, JoinType, StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.hitl import approve
from tests.processes import worker_pool

RealTarget = tuple[str, str]
APP = "tests.processes.research_app:registry"
VISIBILITY_S = 3.0
RESEARCHERS = ("researcher_0", "researcher_1", "researcher_2")
T = TypeVar("T")


def stage(ref: str, task: str, requires: tuple[str, ...] = (), context: dict[str, Any] | None = None,
          **fields: Any) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires),
                          context=dict(context or {}), **fields,
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def research_analyst() -> Workflow:
    """The seed README's shape; researcher_2 is the one that blocks (``hold``)."""
    researchers = [stage(ref, "researcher", ("plan",), {"index": i, "hold": ref == "researcher_2"})
                   for i, ref in enumerate(RESEARCHERS)]
    return Workflow.create(application="research-analyst", name="research analyst", stages=[
        stage("plan", "planner", context={"question": "how big is the market"}),
        *researchers,
        stage("synthesize", "synthesize", RESEARCHERS, join_type=JoinType.N_OF_M, join_threshold=2,
              output_reducers={"finding": "collect"}),
        stage("review_a", "reviewer", ("synthesize",)),
        stage("review_b", "reviewer", ("synthesize",)),
        stage("router", "router", ("review_a", "review_b"), join_type=JoinType.DISCRIMINATOR),
        stage("approval", "approval", ("router",)),
        stage("publish", "publish", ("approval",)),
    ])


class Run:
    """One workflow's view for the test: the tasks' records and the stored stage statuses."""

    def __init__(self, client: Client, raw: redis.Redis, ns: str, wf: Workflow) -> None:
        self.client, self.raw, self.ns, self.wf = client, raw, ns, wf

    def records(self, ref: str | None = None, event: str | None = None, pass_no: int | None = None
                ) -> list[dict[str, Any]]:
        found = [json.loads(x) for x in self.raw.lrange(f"{self.ns}:test:runs:{self.wf.id}", 0, -1)]
        return [r for r in found if (ref is None or r["ref"] == ref) and (event is None or r["event"] == event)
                and (pass_no is None or r["pass"] == pass_no)]

    def statuses(self) -> dict[str, str]:
        return {s.ref_id: s.status.name for s in self.client.get(self.wf.id).stages}

    def all_succeeded(self, *refs: str) -> bool:
        now = self.statuses()
        return all(now[r] == "SUCCEEDED" for r in refs)

    def allow(self, what: str, pass_no: int) -> None:
        """Create the key a blocked researcher (``release``) or the router (``route``) waits for."""
        self.raw.set(f"{self.ns}:test:{what}:{self.wf.id}:{pass_no}", 1)

    def diagnostics(self) -> str:
        events = [(e["event_type"], e.get("entity_id")) for e in self.client.events(self.wf.id)]
        return (f"workflow {self.client.status(self.wf.id)}; stages {self.statuses()}; "
                f"queue {self.client.queue.counts()}; records {self.records()}; events {events}")

    def wait_for(self, condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
        """Poll ``condition`` until it returns something truthy; fail with the workflow's state."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.diagnostics()}")
            time.sleep(0.02)
        return value


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_the_research_analyst_finishes_after_approval_with_a_worker_killed_mid_research(
        real_target: RealTarget) -> None:
    url, ns = real_target
    client, raw = connect(url, ns), redis.Redis.from_url(url)
    procs = [worker_pool.start_worker(url, ns, APP, visibility=VISIBILITY_S, concurrency=1) for _ in range(3)]
    wf = research_analyst()
    run = Run(client, raw, ns, wf)
    approval_data = {"by": "analyst@example.com", "note": "numbers check out"}
    try:
        client.submit(wf)

        # Pass 1: kill the worker blocked in researcher_2, start a replacement.
        held = run.wait_for(lambda: run.records("researcher_2", "start", 1), "researcher_2 to block")[0]
        victim = next(p for p in procs if p.pid == held["pid"])
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        procs.append(worker_pool.start_worker(url, ns, APP, visibility=VISIBILITY_S, concurrency=1))
        run.wait_for(lambda: run.records("synthesize", "start", 1), "the first quorum")
        run.allow("release", 1)
        run.wait_for(lambda: run.records("researcher_2", "done", 1), "researcher_2 redelivered", timeout=30)
        run.wait_for(lambda: run.all_succeeded("researcher_2", "review_a", "review_b"), "pass 1 to settle")
        run.allow("route", 1)

        # Pass 2 (after the loop-back): the quorum again fires on researcher_0 and researcher_1.
        run.wait_for(lambda: run.records("synthesize", "start", 2), "the second quorum")
        run.allow("release", 2)
        run.wait_for(lambda: run.records("researcher_2", "done", 2), "researcher_2 in pass 2")
        run.wait_for(lambda: run.all_succeeded("researcher_2", "review_a", "review_b"), "pass 2 to settle")
        run.allow("route", 2)

        run.wait_for(lambda: run.statuses()["approval"] == "SUSPENDED", "the approval stage to suspend")
        run.wait_for(lambda: client.status(wf.id) == "SUSPENDED", "the workflow to show SUSPENDED")
        approval_id = next(s.id for s in wf.stages if s.ref_id == "approval")
        approve(client.queue, wf.id, approval_id, approval_data, store=client.store)
        done = client.wait(wf.id, timeout=20)
        run.wait_for(lambda: client.queue.size() == 0, "an empty queue", timeout=10)
    finally:
        stop(procs)

    assert done.status == WorkflowStatus.SUCCEEDED, run.diagnostics()
    assert {s.ref_id: s.status for s in done.stages} == {s.ref_id: WorkflowStatus.SUCCEEDED for s in wf.stages}
    by_ref = {s.ref_id: s for s in done.stages}

    # The quorum: once per pass, exactly the two findings that released it, fresh in pass 2.
    def finding(i: int, pass_no: int) -> str:
        return f"how big is the market / part {i}: answered in pass {pass_no}"

    quorums = [(r["pass"], r["findings"]) for r in run.records("synthesize", "done")]
    assert quorums == [(1, [finding(0, 1), finding(1, 1)]), (2, [finding(0, 2), finding(1, 2)])]
    assert len(run.records("synthesize", "start")) == 2
    assert by_ref["synthesize"].context["finding"] == [finding(0, 2), finding(1, 2)]
    assert by_ref["synthesize"].outputs["findings"] == [finding(0, 2), finding(1, 2)]
    assert by_ref["researcher_2"].outputs == {"finding": finding(2, 2)}, "the late researcher finished each pass"

    # The router looped back exactly once, with feedback the planner answered in pass 2.
    decisions = [(r["pass"], r["decision"]) for r in run.records("router", "done")]
    assert decisions == [(1, "loop"), (2, "accept")]
    feedback = run.records("router", "done", 1)[0]["feedback"]
    jumps = [e for e in client.events(wf.id) if e["event_type"] == "stage.jumped"]
    assert len(jumps) == 1 and jumps[0]["entity_id"] == by_ref["router"].id, jumps
    assert by_ref["router"].context["_jump_count"] == 1 and by_ref["plan"].context["_jump_count"] == 1
    assert by_ref["plan"].outputs["pass"] == 2 and by_ref["plan"].outputs["addressed_feedback"] == feedback
    assert by_ref["router"].context["confidence"] == 0.92

    # The approval and what was published with it.
    assert by_ref["approval"].outputs == {"approved": True, "approval": approval_data}
    published = run.records("publish", "done")
    assert [r["result"] for r in published] == [
        {"approved": True, "approval": approval_data, "findings": [finding(0, 2), finding(1, 2)]}]

    # The killed researcher: its first-pass execution died (no 'done'), a live worker re-ran it
    # after the visibility timeout, and that run finished; every other task ran once per pass.
    killed = run.records("researcher_2", pass_no=1)
    assert [(r["n"], r["event"]) for r in killed] == [(1, "start"), (2, "start"), (2, "done")], killed
    assert killed[0]["pid"] == victim.pid and killed[1]["pid"] != victim.pid
    starts = sorted((r["ref"], r["pass"]) for r in run.records(event="start") if r["ref"] != "researcher_2")
    per_pass = ["plan", "researcher_0", "researcher_1", "synthesize", "review_a", "review_b", "router"]
    assert starts == sorted([(ref, p) for ref in per_pass for p in (1, 2)] + [("publish", 2)])
    assert [(r["n"], r["event"]) for r in run.records("researcher_2", pass_no=2)] == [(1, "start"), (1, "done")]
    assert not run.records(event="canceled")

    events = client.events(wf.id)
    assert sum(1 for e in events if e["event_type"] == "workflow.completed") == 1
    counts = client.queue.counts()
    assert counts["dead"] == 0 and counts["delayed"] == 0, counts
