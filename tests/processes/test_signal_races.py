"""Persistent signals racing the suspension, with 2 worker processes x 4 threads on real Redis.

Three groups of workflows, one suspending stage each: the signal is buffered while the task is
still executing and the suspension is decided after it (forced: the task waits for the buffer),
sent while the task executes with a random delay (either order), or sent once the stage shows
SUSPENDED. Whatever the order, each stage must resume exactly once with the signal's data:
two executions, one signal seen, the workflow SUCCEEDED.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from stabilize_redis import Client, StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from tests.processes import worker_pool

RealTarget = tuple[str, str]


def workers(url: str, ns: str, count: int = 2):  # type: ignore[no-untyped-def]
    """Two CLI workers (four threads each) serving ``tests.processes.signal_app:registry``."""
    return worker_pool.workers(url, ns, "tests.processes.signal_app:registry", count)


def gated(hold: str) -> Workflow:
    stage = StageExecution(ref_id="gate", type="gate", name="gate", context={"hold": hold}, tasks=[
        TaskExecution.create(name="gate", implementing_class="gate", stage_start=True, stage_end=True)])
    return Workflow.create(application="itest", name=f"signal race ({hold})", stages=[stage])


def signal_when_ready(client: Client, raw: Any, ns: str, batch: list[Workflow]) -> None:
    """Send each workflow's signal as soon as its group's condition holds."""
    pending = {wf.id: wf.stages[0].context["hold"] for wf in batch}
    deadline = time.monotonic() + 60
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} workflows never reached their signal point"
        started = {k.decode() for k in raw.hkeys(f"{ns}:test:started")}
        for wid, hold in list(pending.items()):
            if wid in started and (hold != "none" or client.status(wid) == "SUSPENDED"):
                client.signal(wid, "gate", "go", {"wf": wid})
                del pending[wid]
        time.sleep(0.002)


def test_persistent_signals_racing_the_suspension_resume_each_stage_exactly_once(real_target: RealTarget) -> None:
    url, ns = real_target
    client, raw = connect(url, ns), redis.Redis.from_url(url)
    holds = ["buffered", "jitter", "none"]
    done: list[Workflow] = []
    with workers(url, ns):
        for _ in range(5):  # nine at a time: the three blocked 'buffered' tasks leave threads free
            batch = [gated(holds[i % 3]) for i in range(9)]
            for wf in batch:
                client.submit(wf)
            signal_when_ready(client, raw, ns, batch)
            done += [client.wait(wf.id, timeout=60) for wf in batch]

    how: dict[str, int] = {}
    for wf in done:
        assert wf.status == WorkflowStatus.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in wf.stages])
        assert int(raw.hget(f"{ns}:test:exec:{wf.id}", "gate") or 0) == 2, wf.id
        seen = [json.loads(x) for x in raw.lrange(f"{ns}:test:seen:{wf.id}", 0, -1)]
        assert seen == [["go", {"wf": wf.id}]], (wf.id, seen)
        signaled = [e for e in client.events(wf.id) if e["event_type"] == "stage.signaled"]
        assert len(signaled) == 1, (wf.id, signaled)
        data: Any = signaled[0]["data"]
        how[data["how"]] = how.get(data["how"], 0) + 1
    assert how.get("consumed", 0) >= 15 and how.get("delivered", 0) >= 15, how  # both orders happened
