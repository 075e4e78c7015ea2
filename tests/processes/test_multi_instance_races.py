"""Multi-instance groups with two worker processes x four threads on real Redis: a hundred
AddMultiInstance messages racing each other all land in the join's count (each instance runs
once, the join waits for every one and runs once), and adds racing the join's release either
land before it (and are waited for) or are rejected with an event - none is lost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.client import Client
from stabilize_redis.stages.multi_instance_builder import MultiInstanceBuilder
from tests.integration.support import wait_until
from tests.processes import worker_pool

RealTarget = tuple[str, str]
ADDS = 100


def stage(ref: str, task: str, requires: tuple[str, ...] = ()) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires),
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def dynamic_group(parent_task: str) -> Workflow:
    """plan (``parent_task``) -> 2 seeded instances (+ those added) -> plan_mi_join (collects
    ``value``) -> after."""
    plan = stage("plan", parent_task)
    stages = MultiInstanceBuilder.create_dynamic(plan, initial_count=2)
    for s in stages[:-1]:
        s.tasks = stage(s.ref_id, "quick").tasks
    stages[-1].context["_output_reducers"] = {"value": "collect"}
    return Workflow.create(application="itest", name="mi race", stages=[plan, *stages,
                                                                        stage("after", "quick", ("plan_mi_join",))])


def events(client: Client, workflow_id: str, kind: str) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], e) for e in client.events(workflow_id) if e["event_type"] == kind]


def exec_counts(raw: redis.Redis, ns: str, workflow_id: str) -> dict[str, int]:
    found: dict[bytes, bytes] = raw.hgetall(f"{ns}:test:exec:{workflow_id}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in found.items()}


def add_all(client: Client, workflow_id: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.add_instance(workflow_id, "plan", {"item": f"extra-{i}"}), range(ADDS)))


def test_a_hundred_racing_adds_all_land_in_the_join_count(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    client = connect(url, ns)
    wf = dynamic_group("hold")
    with worker_pool.workers(url, ns, "tests.processes.mi_app:registry"):
        client.submit(wf)
        wait_until(lambda: raw.exists(f"{ns}:test:held:{wf.id}"), 30, "the parent to run")
        add_all(client, wf.id)  # the parent holds on: every add must land, racing only each other
        wait_until(lambda: len(events(client, wf.id, "mi.instance_added")) == ADDS, 60, "every add to commit")
        raw.set(f"{ns}:test:release:{wf.id}", 1)
        done = client.wait(wf.id, timeout=60)
    assert done.status == WorkflowStatus.SUCCEEDED
    instances = [s for s in done.stages if s.context.get("_mi_parent_ref_id") == "plan"]
    assert sorted(s.context["_mi_instance_index"] for s in instances) == list(range(ADDS + 2))
    runs = exec_counts(raw, ns, wf.id)
    assert {s.ref_id: runs.get(s.ref_id) for s in instances} == {s.ref_id: 1 for s in instances}
    join = done.stage_by_ref_id("plan_mi_join")
    assert join is not None and join.status == WorkflowStatus.SUCCEEDED
    assert sorted(join.context["value"], key=str) == sorted([0, 1, *(f"extra-{i}" for i in range(ADDS))], key=str)
    assert join.start_time is not None and all(join.start_time >= (s.end_time or 0) for s in instances)
    assert runs["after"] == 1 and events(client, wf.id, "mi.instance_rejected") == []
    assert done.stage_by_ref_id("plan").context["_mi_instance_count"] == ADDS + 2


def test_adds_racing_the_joins_release_are_waited_for_or_rejected_never_lost(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    client = connect(url, ns)
    wf = dynamic_group("quick")  # nothing holds the group open: the join may fire while adds arrive
    with worker_pool.workers(url, ns, "tests.processes.mi_app:registry"):
        client.submit(wf)
        add_all(client, wf.id)
        done = client.wait(wf.id, timeout=60)
        added = wait_until(lambda: (len(a := events(client, wf.id, "mi.instance_added"))
                                    + len(events(client, wf.id, "mi.instance_rejected")) == ADDS) and a,
                           30, "every add decided") or []
    assert done.status == WorkflowStatus.SUCCEEDED
    rejected = events(client, wf.id, "mi.instance_rejected")
    assert len(added) + len(rejected) == ADDS, (len(added), len(rejected))
    assert all("fired" in e["data"]["reason"] or "SUCCEEDED" in e["data"]["reason"] for e in rejected)
    instances = [s for s in done.stages if s.context.get("_mi_parent_ref_id") == "plan"]
    assert len(instances) == 2 + len(added)
    runs = exec_counts(raw, ns, wf.id)
    join = done.stage_by_ref_id("plan_mi_join")
    assert join is not None and runs.get("after") == 1
    assert all(runs.get(s.ref_id) == 1 for s in instances)  # every landed instance ran, once
    assert join.start_time is not None and all(join.start_time >= (s.end_time or 0) for s in instances)
    assert len(join.context["value"]) == len(instances)
