"""Mutex and deferred choice with two worker processes x four threads racing on real Redis:
mutex holders never overlap (the tasks check it in Redis, across processes), and exactly one
deferred-choice branch runs per workflow."""

from __future__ import annotations

from pathlib import Path

import redis

from stabilize_redis import JoinType, StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from tests.processes import worker_pool

RealTarget = tuple[str, str]


def workers(url: str, ns: str, count: int = 2):  # type: ignore[no-untyped-def]
    """Two CLI workers (four threads each) serving ``tests.processes.mutex_app:registry``."""
    return worker_pool.workers(url, ns, "tests.processes.mutex_app:registry", count)
ROOT = Path(__file__).resolve().parents[2]


def stage(ref: str, requires: tuple[str, ...] = (), **fields: object) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires),
                          context={"work_s": 0.01},
                          tasks=[TaskExecution.create(name=ref, implementing_class="critical", stage_start=True,
                                                      stage_end=True)], **fields)  # type: ignore[arg-type]


def exec_counts(raw: redis.Redis, ns: str, workflow_id: str) -> dict[str, int]:
    """How often each stage's task ran (``mutex_app``)."""
    found: dict[bytes, bytes] = raw.hgetall(f"{ns}:test:exec:{workflow_id}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in found.items()}


def run_all(url: str, ns: str, workflows: list[Workflow]) -> list[Workflow]:
    client = connect(url, ns)
    with workers(url, ns):
        for wf in workflows:
            client.submit(wf)
        return [client.wait(wf.id, timeout=120) for wf in workflows]


def test_mutex_holders_never_overlap_across_worker_processes(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    # six branches on one mutex, two on another, two free; initial and fused starts both race.
    workflows = [Workflow.create(application="itest", name="mutex race", stages=[
        stage("root"), *[stage(f"m{i}", ("root",), mutex_key="db") for i in range(4)],
        stage("m4", mutex_key="db"), stage("m5", mutex_key="db"),
        stage("n0", ("root",), mutex_key="net"), stage("n1", ("root",), mutex_key="net"),
        stage("f0", ("root",)), stage("f1", ("root",)),
    ]) for _ in range(24)]
    done = run_all(url, ns, workflows)
    for wf in done:
        assert wf.status == WorkflowStatus.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in wf.stages])
        runs = exec_counts(raw, ns, wf.id)
        assert runs == {s.ref_id: 1 for s in wf.stages}, (wf.id, runs)
    assert int(raw.get(f"{ns}:test:overlaps") or 0) == 0, "two holders of one mutex executed at once"


def test_exactly_one_deferred_choice_branch_runs_per_workflow(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    branches = ("r0", "r1", "r2", "r3")
    workflows = [Workflow.create(application="itest", name="choice race", stages=[
        stage("root"), *[stage(r, ("root",), deferred_choice_group="review") for r in branches],
        stage("late", deferred_choice_group="review"),  # an initial member racing the fused ones
        stage("after", (*branches, "late"), join_type=JoinType.DISCRIMINATOR),
    ]) for _ in range(40)]
    done = run_all(url, ns, workflows)
    for wf in done:
        assert wf.status.is_complete, wf.id
        members = [s for s in wf.stages if s.deferred_choice_group]
        ran = exec_counts(raw, ns, wf.id)
        winners = [s.ref_id for s in members if ran.get(s.ref_id)]
        assert len(winners) == 1 and ran[winners[0]] == 1, (wf.id, ran)
        assert sorted(s.status.name for s in members) == ["CANCELED"] * 4 + ["SUCCEEDED"], wf.id
        after = wf.stage_by_ref_id("after")
        assert after is not None and after.status == WorkflowStatus.SUCCEEDED and ran["after"] == 1
