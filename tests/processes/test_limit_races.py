"""Concurrency limits across CLI worker processes, one SIGKILLed mid-run.

Twelve workflows of one pipeline config with a limit of 3 are served by two worker processes of
four handler threads each; every workflow's single task blocks (``reclaim_app``'s ``hold``)
until the test releases it. The test releases the running ones one at a time and, at every
step, checks that no more than 3 of the config's tasks are executing and that the limit record
holds at most 3. Once the first three run, the worker executing one of them is SIGKILLed; its
entry is reclaimed after the visibility timeout and that task runs again. In the end every
workflow SUCCEEDED, each task finished exactly once, they started in the order they reached the
limit, and the limit record is empty: no slot leaked.
"""

from __future__ import annotations

import json
import signal

import pytest
import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.decisions.concurrency import LimitState, limit_id
from stabilize_redis.keys import LIMIT_STATE_FIELD
from tests.processes import worker_pool
from tests.processes.reclaim_app import log_key, release_key
from tests.processes.worker_pool import wait_for

APP = "tests.processes.reclaim_app:registry"
VISIBILITY_S = 2.0
LIMIT, FLOWS, CONFIG = 3, 12, "nightly-etl"


def _workflow(i: int) -> Workflow:
    wf = Workflow.create(application="limits", name=f"etl-{i}", stages=[StageExecution(
        ref_id="work", type="work", name="work", tasks=[
            TaskExecution.create(name="work", implementing_class="hold", stage_start=True, stage_end=True)])])
    wf.pipeline_config_id, wf.is_limit_concurrent = CONFIG, True
    wf.max_concurrent_executions, wf.keep_waiting_pipelines = LIMIT, True
    return wf


@pytest.mark.slow
def test_a_limit_of_three_holds_across_processes_and_a_kill(real_target: tuple[str, str]) -> None:
    url, ns = real_target
    client = connect(url, ns)
    raw = redis.Redis.from_url(url)
    flows = [_workflow(i) for i in range(FLOWS)]
    limit_key = client.backend.part(limit_id(CONFIG)).limit(CONFIG)

    def events(wid: str) -> list[tuple[int, str]]:
        return [(p, e) for _, p, e, _ in (json.loads(x) for x in raw.lrange(log_key(ns, wid), 0, -1))]

    def executing() -> list[str]:
        return [w.id for w in flows if any(e == "start" for _, e in events(w.id))
                and not any(e == "done" for _, e in events(w.id))]

    def check() -> None:
        now = executing()
        assert len(now) <= LIMIT, f"{len(now)} tasks of {CONFIG} executing at once"
        assert len(LimitState.decode(raw.hget(limit_key, LIMIT_STATE_FIELD)).holders) <= LIMIT

    with worker_pool.workers(url, ns, APP, count=2, visibility=VISIBILITY_S) as procs:
        for wf in flows:  # one after the other, each once the one before was answered: arrival order
            client.submit(wf)
            wait_for(lambda wf=wf: client.get(wf.id).status in (WorkflowStatus.RUNNING, WorkflowStatus.BUFFERED),
                     20, f"{wf.id} to be answered")
        wait_for(lambda: len(executing()) == LIMIT, 20, "three tasks to execute")
        check()
        assert [client.get(w.id).status for w in flows].count(WorkflowStatus.BUFFERED) == FLOWS - LIMIT
        victim_pid = events(executing()[0])[0][0]
        victim = next(p for p in procs if p.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        released: list[str] = []
        while len(released) < FLOWS:
            wait_for(lambda: bool(set(executing()) - set(released)) or len(released) == FLOWS, 30,
                     "a task to execute")
            check()
            nxt = next(w for w in executing() if w not in released)
            released.append(nxt)
            raw.set(release_key(ns, nxt, "work"), 1)
            wait_for(lambda nxt=nxt: client.get(nxt).status.is_complete, 30, f"{nxt} to finish")
            check()
        for wf in flows:
            assert client.get(wf.id).status == WorkflowStatus.SUCCEEDED
            assert [e for _, e in events(wf.id)].count("done") == 1
        assert released == [w.id for w in flows]  # started in the order they reached the limit
        wait_for(lambda: LimitState.decode(raw.hget(limit_key, LIMIT_STATE_FIELD)) == LimitState(LIMIT, [], []),
                 10, "the limit record to empty")
