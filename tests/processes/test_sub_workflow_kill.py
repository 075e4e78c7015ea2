"""Sub-workflows across CLI worker processes, one SIGKILLed while a child's task runs.

Four parents, each ``call`` (SubWorkflowTask) -> ``after`` (noop); each child has one stage ``h``
that blocks (``tests.processes.reclaim_app``'s ``hold``) until the test releases it. Two worker
processes serve them. Once every child's ``h`` has started, the worker running the first one is
killed with SIGKILL; every hold is released; the dead worker's entry is reclaimed after the
visibility timeout and its ``h`` runs again. Then every parent must SUCCEED with its child's
result, each parent having started exactly one child (the child's id is derived from the parent
stage, so a redelivered start makes none), each child's ``h`` finished exactly once, and the
parent's wake-up having come from the child's final commit (no poll: the stage was SUSPENDED).
"""

from __future__ import annotations

import json
import signal

import pytest
import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.decisions.sub_workflow import child_workflow_id
from tests.processes import worker_pool
from tests.processes.reclaim_app import log_key, release_key
from tests.processes.worker_pool import wait_for

APP = "tests.processes.reclaim_app:registry"
VISIBILITY_S = 2.0
PARENTS = 4


def _stage(ref: str, task: str, requires: tuple[str, ...] = (), **context: object) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires), context=dict(context),
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def _parent(i: int) -> Workflow:
    config = {"name": f"child-{i}", "stages": [{"ref_id": "h", "tasks": [{"implementing_class": "hold"}]}]}
    return Workflow.create(application="sub-kill", name=f"parent-{i}", stages=[
        _stage("call", "subWorkflow", _sub_workflow_config=config), _stage("after", "noop", ("call",))])


@pytest.mark.slow
def test_every_parent_succeeds_with_one_child_when_a_worker_is_killed_mid_child(real_target: tuple[str, str]) -> None:
    url, ns = real_target
    client = connect(url, ns)
    raw = redis.Redis.from_url(url)
    parents = [_parent(i) for i in range(PARENTS)]
    children = {wf.id: child_workflow_id(wf.id, wf.stages[0].id, 0) for wf in parents}

    def holds(child: str, event: str) -> list[int]:
        return [p for r, p, e, _ in (json.loads(x) for x in raw.lrange(log_key(ns, child), 0, -1)) if e == event]

    with worker_pool.workers(url, ns, APP, count=2, visibility=VISIBILITY_S) as procs:
        for wf in parents:
            client.submit(wf)
        wait_for(lambda: all(holds(c, "start") for c in children.values()), 30, "every child's hold to start")
        for wf in parents:
            now = client.get(wf.id)
            assert now.status == WorkflowStatus.RUNNING  # waiting on a workflow, not on a person
            assert now.stages[0].status == WorkflowStatus.SUSPENDED
        first = children[parents[0].id]
        [victim_pid] = holds(first, "start")
        victim = next(p for p in procs if p.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        for child in children.values():
            raw.set(release_key(ns, child, "h"), 1)
        wait_for(lambda: all(client.get(wf.id).status.is_complete for wf in parents), 60, "every parent to finish")
        for wf in parents:
            done = client.get(wf.id)
            child = children[wf.id]
            assert done.status == WorkflowStatus.SUCCEEDED, (wf.id, done.status)
            assert done.stages[0].outputs["sub_workflow_id"] == child
            assert done.stages[0].outputs["sub_workflow_status"] == "SUCCEEDED"
            assert client.get(child).status == WorkflowStatus.SUCCEEDED
            assert len(holds(child, "done")) == 1
            started = [e for e in client.store.events(wf.id) if e["event_type"] == "sub_workflow.started"]
            assert [e["data"]["sub_workflow_id"] for e in started] == [child]
            assert len([e for e in client.store.events(child) if e["event_type"] == "workflow.created"]) == 1
        assert len(holds(first, "start")) == 2  # the killed run, then the reclaimed one
