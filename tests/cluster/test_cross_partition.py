"""Cross-partition steps on the three-master cluster: sub-workflows, concurrency limits and a
global mutex go through the outbox (``handlers.relay``), each script on one slot; with two CLI
workers, one SIGKILLed mid-task, every parent succeeds with exactly one child, the limit is
never exceeded, the global mutex's holders never overlap, and no slot or lock leaks."""

from __future__ import annotations

import json
import signal
from typing import Any

from stabilize_redis import StageExecution, TaskExecution, TaskResult, Workflow, WorkflowStatus, connect
from stabilize_redis.backend.connection import Target, connect_redis
from stabilize_redis.decisions.concurrency import LimitState, limit_id
from stabilize_redis.decisions.global_mutex import GlobalMutexState
from stabilize_redis.decisions.sub_workflow import child_workflow_id
from stabilize_redis.keys import GLOBAL_MUTEX_STATE_FIELD, LIMIT_STATE_FIELD, global_mutex_routing_id
from tests.cluster.cluster_app import steps_key
from tests.cluster.conftest import Call, spanning
from tests.cluster.nodes import wait_for
from tests.integration.support import make_engine, stage_named
from tests.processes import worker_pool

APP = "tests.cluster.cluster_app:registry"
LIMIT, CONFIG = 2, "cluster-etl"


def _stage(ref: str, task: str, requires: tuple[str, ...] = (), **context: Any) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires), context=dict(context),
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def parent(work_s: float) -> Workflow:
    config = {"name": "child", "stages": [
        {"ref_id": "a", "context": {"work_s": work_s}, "tasks": [{"implementing_class": "step"}]},
        {"ref_id": "b", "requisite_stage_ref_ids": ["a"], "context": {"work_s": work_s},
         "tasks": [{"implementing_class": "step"}]}]}
    return Workflow.create(application="cross", name="parent", stages=[
        _stage("call", "subWorkflow", _sub_workflow_config=config), _stage("after", "noop", ("call",))])


def limited(work_s: float) -> Workflow:
    wf = Workflow.create(application="cross", name="limited", stages=[_stage("work", "step", work_s=work_s)])
    wf.pipeline_config_id, wf.is_limit_concurrent = CONFIG, True
    wf.max_concurrent_executions, wf.keep_waiting_pipelines = LIMIT, True
    return wf


def deploy(work_s: float) -> Workflow:
    return Workflow.create(application="cross", name="deploy", stages=[
        _stage("build", "noop"),
        StageExecution(ref_id="deploy", type="deploy", name="deploy", requisite_stage_ref_ids={"build"},
                       context={"work_s": work_s}, mutex_key="production", mutex_scope="global",
                       tasks=[TaskExecution.create(name="deploy", implementing_class="step", stage_start=True,
                                                   stage_end=True)])])


def peak(entries: list[list[Any]], ids: set[str]) -> int:
    """Most workflows of ``ids`` executing their task at once; a task re-run after its worker
    died keeps its workflow counted from the first start to the re-run's end."""
    open_: set[str] = set()
    most = 0
    for wid, _, event, _ in sorted(entries, key=lambda e: e[3]):
        if wid not in ids:
            continue
        if event == "start":
            open_.add(wid)
            most = max(most, len(open_))
        else:
            open_.discard(wid)
    return most


def test_sub_workflows_and_limits_touch_one_slot_per_script(cluster_target: tuple[str, str],
                                                             script_calls: list[Call]) -> None:
    eng = make_engine(cluster_target)
    eng.registry.register("step", _local_step)
    flows = [parent(0.0) for _ in range(3)] + [limited(0.0) for _ in range(4)] + [deploy(0.0) for _ in range(3)]
    with eng.threaded(concurrency=4):
        for wf in flows:
            eng.client.submit(wf)
        done = [eng.client.wait(wf.id, timeout=60) for wf in flows]
    assert [d.status for d in done] == [WorkflowStatus.SUCCEEDED] * len(flows)
    for wf in flows[:3]:
        call = stage_named(eng.store.retrieve(wf.id), "call")
        assert call.outputs["sub_workflow_outputs"] == {"a": call.outputs["sub_workflow_id"],
                                                        "b": call.outputs["sub_workflow_id"]}
    named = {name for name, _ in script_calls}
    assert {"relay_deliver", "commit", "submit"} <= named, named
    lock = GlobalMutexState.decode(eng.client.backend.client.hget(
        eng.client.backend.part(global_mutex_routing_id("production")).global_mutex("production"),
        GLOBAL_MUTEX_STATE_FIELD))
    assert lock.holder is None and lock.waiters == [] and lock.fence == 3
    assert spanning(script_calls) == []


def _local_step(stage: StageExecution) -> TaskResult:
    return TaskResult.success(outputs={stage.ref_id: stage.execution.id})


def test_cli_workers_run_children_and_limits_exactly_once_with_one_killed(cluster_target: tuple[str, str]) -> None:
    url, ns = cluster_target
    client = connect(url, ns)
    raw = connect_redis(Target(url, ns))
    parents = [parent(0.1) for _ in range(4)]
    flows = [limited(0.3) for _ in range(8)]
    deploys = [deploy(0.2) for _ in range(4)]

    def entries() -> list[list[Any]]:
        return [json.loads(x) for x in raw.lrange(steps_key(ns), 0, -1)]

    with worker_pool.workers(url, ns, APP, count=2, visibility=2.0) as procs:
        for wf in parents + flows + deploys:
            client.submit(wf)
        wait_for(lambda: any(e[1] == procs[0].pid and e[2] == "start" for e in entries()), 60,
                 "worker 0 to run a task")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        results = [client.wait(wf.id, timeout=120) for wf in parents + flows + deploys]
    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(results)
    limited_ids = {wf.id for wf in flows}
    assert peak(entries(), limited_ids) <= LIMIT
    assert {e[0] for e in entries() if e[2] == "end"} >= limited_ids
    assert peak(entries(), {wf.id for wf in deploys}) == 1  # the global mutex's holders never overlap
    for wf in parents:
        child = child_workflow_id(wf.id, wf.stages[0].id, 0)
        assert client.get(wf.id).stages[0].outputs["sub_workflow_id"] == child
        assert client.get(child).status == WorkflowStatus.SUCCEEDED
        assert [e["event_type"] for e in client.events(wf.id)].count("sub_workflow.started") == 1
    key = client.backend.part(limit_id(CONFIG)).limit(CONFIG)
    wait_for(lambda: LimitState.decode(raw.hget(key, LIMIT_STATE_FIELD)) == LimitState(LIMIT, [], []), 20,
             "the limit record to empty")
