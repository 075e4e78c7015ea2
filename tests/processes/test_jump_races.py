"""Jumps with several worker processes racing (2 processes x 4 threads, real Redis).

The interleaving that matters is forced, not hoped for: the fan-out branches of the first pass
keep executing until the loop has reset them and their upstream has run again, so every jump
lands while they run and every first-pass branch result arrives as a stale attempt.
"""

from __future__ import annotations

import redis

from stabilize_redis import JoinType, StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from tests.processes.worker_pool import workers

RealTarget = tuple[str, str]


def stage(ref: str, task: str, requires: tuple[str, ...] = (), **context: object) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires), context=dict(context),
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def run_all(url: str, ns: str, workflows: list[Workflow]) -> list[Workflow]:
    """Submit ``workflows`` to two worker processes and wait until each has finished."""
    client = connect(url, ns)
    with workers(url, ns):
        for wf in workflows:
            client.submit(wf)
        return [client.wait(wf.id, timeout=90) for wf in workflows]


def fan_out_loop() -> Workflow:
    # T -> (S, R1, R2) -> J; S jumps back to T once, after R1 and R2 have started.
    return Workflow.create(application="itest", name="jump in a fan-out", stages=[
        stage("T", "numbered"),
        stage("S", "loop_back", ("T",), target="T", loops=1, wait_for=["R1", "R2"]),
        stage("R1", "branch", ("T",), upstream="T"),
        stage("R2", "branch", ("T",), upstream="T"),
        stage("J", "record", ("S", "R1", "R2")),
    ])


def test_a_jump_inside_a_fan_out_discards_the_branches_still_running(real_target: RealTarget) -> None:
    url, ns = real_target
    client, raw = connect(url, ns), redis.Redis.from_url(url)
    with workers(url, ns):
        done: list[Workflow] = []
        for _ in range(4):  # two workflows at a time: six blocked tasks fit in eight threads
            batch = [fan_out_loop(), fan_out_loop()]
            for wf in batch:
                client.submit(wf)
            done += [client.wait(wf.id, timeout=60) for wf in batch]
    for wf in done:
        assert wf.status == WorkflowStatus.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in wf.stages])
        runs = {k.decode(): int(v) for k, v in raw.hgetall(f"{ns}:test:exec:{wf.id}").items()}
        assert runs == {"T": 2, "S": 2, "R1": 2, "R2": 2, "J": 1}, (wf.id, runs)
        seen = {k.decode(): v.decode() for k, v in raw.hgetall(f"{ns}:test:seen:{wf.id}").items()}
        assert seen == {"seen_R1": "2", "seen_R2": "2", "pass": "2"}, (wf.id, seen)
        for ref in ("R1", "R2"):
            branch = wf.stage_by_ref_id(ref)
            assert branch is not None and branch.outputs == {f"seen_{ref}": 2}
        events = client.events(wf.id)
        join_id = next(s.id for s in wf.stages if s.ref_id == "J")
        assert sum(1 for e in events if e["event_type"] == "stage.started" and e["entity_id"] == join_id) == 1
        assert sum(1 for e in events if e["event_type"] == "workflow.completed") == 1


def chain_loop(length: int, loops: int) -> Workflow:
    stages = [stage("s0", "numbered")]
    for i in range(1, length - 1):
        stages.append(stage(f"s{i}", "numbered", (f"s{i - 1}",)))
    stages.append(stage(f"s{length - 1}", "loop_back", (f"s{length - 2}",), target="s0", loops=loops))
    return Workflow.create(application="itest", name="chain loop", stages=stages)


def test_many_loops_racing_across_processes_each_run_every_pass_exactly_once(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    workflows = [chain_loop(5, 3) for _ in range(30)]
    done = run_all(url, ns, workflows)
    for wf in done:
        assert wf.status == WorkflowStatus.SUCCEEDED, wf.id
        runs = {k.decode(): int(v) for k, v in raw.hgetall(f"{ns}:test:exec:{wf.id}").items()}
        assert runs == {f"s{i}": 4 for i in range(5)}, (wf.id, runs)
        last = wf.stage_by_ref_id("s4")
        assert last is not None and last.context["_jump_count"] == 3
        first = wf.stage_by_ref_id("s0")
        assert first is not None and first.outputs == {"pass": 4}


def merge_fan_in(width: int) -> Workflow:
    ups = [stage(f"u{i}", "numbered", ("root",)) for i in range(width)]
    mm = stage("mm", "numbered", tuple(u.ref_id for u in ups))
    mm.join_type = JoinType.MULTI_MERGE
    return Workflow.create(application="itest", name="multi-merge", stages=[
        stage("root", "numbered"), *ups, mm, stage("down", "numbered", ("mm",))])


def test_a_multi_merge_runs_once_per_upstream_when_upstreams_finish_together(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    workflows = [merge_fan_in(8) for _ in range(10)]
    done = run_all(url, ns, workflows)
    for wf in done:
        assert wf.status == WorkflowStatus.SUCCEEDED, wf.id
        runs = {k.decode(): int(v) for k, v in raw.hgetall(f"{ns}:test:exec:{wf.id}").items()}
        assert runs == {"root": 1, **{f"u{i}": 1 for i in range(8)}, "mm": 8, "down": 1}, (wf.id, runs)
        mm = wf.stage_by_ref_id("mm")
        assert mm is not None and sorted(mm.context["_mm_consumed"]) == [f"u{i}" for i in range(8)]
        assert len(mm.context["_mm_firings"]) == 7
