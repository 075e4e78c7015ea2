"""Transient signals, milestones and fan-in reducers with 2 CLI worker processes x 4 threads on
real Redis (``tests/processes/pattern_app.py``).

The orderings that matter are forced by conditions the test controls - tasks hold until the
test sets a key once it has seen the state it wants (an event, a status, the tasks executing),
never by sleeps; where two commits race by design (the tasks are released together), every
outcome is checked against the workflow's event log, which is appended by the commits
themselves, in commit order.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import pytest
import redis

from stabilize_redis import Client, JoinType, StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.decisions.milestones import MILESTONE_PASSED
from tests.integration.support import wait_until
from tests.processes import worker_pool

RealTarget = tuple[str, str]
APP = "tests.processes.pattern_app:registry"
S = WorkflowStatus


@dataclass
class Pool:
    """The test's view of the running workers."""

    client: Client
    raw: redis.Redis
    ns: str
    pids: set[str]

    def served_by(self, workflows: list[Workflow]) -> set[str]:
        """The worker pids that executed a task of ``workflows``."""
        found: set[str] = set()
        for wf in workflows:
            pids: list[bytes] = self.raw.hvals(f"{self.ns}:test:pid:{wf.id}")  # type: ignore[assignment]
            found |= {p.decode() for p in pids}
        return found


@pytest.fixture
def pool(real_target: RealTarget, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    """Two CLI workers (four threads each) serving ``pattern_app``, polling ``running()`` tasks
    every 5-20 ms."""
    url, ns = real_target
    monkeypatch.setenv("STABILIZE_TASK_BACKOFF_MIN_MS", "5")
    monkeypatch.setenv("STABILIZE_TASK_BACKOFF_MAX_MS", "20")
    with worker_pool.workers(url, ns, APP) as procs:
        yield Pool(connect(url, ns), redis.Redis.from_url(url), ns, {str(p.pid) for p in procs})


def stage(ref: str, task: str, requires: tuple[str, ...] = (), context: dict[str, Any] | None = None,
          **fields: Any) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires),
                          context=dict(context or {}), **fields,
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def release(raw: redis.Redis, ns: str, wf: Workflow, hold: str) -> None:
    """Set the key hold ``hold`` of ``wf``'s tasks waits for (``pattern_app.go_key``)."""
    raw.set(f"{ns}:test:go:{wf.id}:{hold}", 1)


def arrived(raw: redis.Redis, ns: str, wf: Workflow) -> set[str]:
    """Ref ids of the stages whose holding task has executed at least once."""
    found: set[bytes] = raw.smembers(f"{ns}:test:arrived:{wf.id}")  # type: ignore[assignment]
    return {m.decode() for m in found}


def all_arrived(raw: redis.Redis, ns: str, wf: Workflow, refs: set[str]) -> bool:
    return refs <= arrived(raw, ns, wf)


def runs(raw: redis.Redis, ns: str, wf: Workflow) -> dict[str, int]:
    found: dict[bytes, bytes] = raw.hgetall(f"{ns}:test:exec:{wf.id}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in found.items()}


def events(client: Client, wf: Workflow) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], e) for e in client.events(wf.id)]


def at(log: list[dict[str, Any]], event_type: str, ref: str) -> list[int]:
    """Positions in ``log`` of the ``event_type`` events of stage ``ref``."""
    return [i for i, e in enumerate(log) if e["event_type"] == event_type and e["data"].get("ref_id") == ref]


def statuses(client: Client, wf: Workflow) -> dict[str, S]:
    return {s.ref_id: s.status for s in client.store.retrieve(wf.id).stages}


# -- transient signals -------------------------------------------------------------------------

GROUPS = ("not_started", "block", "poll", "race")
"""How the transient signal meets the gate: the gate has not started (its upstream holds); its
task is executing (blocked on the test's release); it is RUNNING between polls; or the signal
is sent and the task released at once, so the discard races the suspension."""


def signal_workflow(group: str) -> Workflow:
    pre = stage("pre", "step", context={"hold": "release"} if group == "not_started" else {})
    mode = {"not_started": "now", "block": "block", "poll": "poll", "race": "block"}[group]
    gate = stage("gate", "gate", ("pre",), {"mode": mode, "group": group})
    return Workflow.create(application="itest", name=f"transient signal ({group})", stages=[pre, gate])


def discarded(client: Client, wf: Workflow) -> list[dict[str, Any]]:
    return [e for e in events(client, wf) if e["event_type"] == "signal.discarded"]


def signaled(client: Client, wf: Workflow) -> list[dict[str, Any]]:
    return [e for e in events(client, wf) if e["event_type"] == "stage.signaled"]


def settled_gate(client: Client, wf: Workflow) -> bool:
    """The transient signal was handled (discarded or delivered) and the workflow shows
    SUSPENDED, or SUCCEEDED (delivered)."""
    handled = bool(discarded(client, wf) or signaled(client, wf))
    return handled and client.status(wf.id) in ("SUSPENDED", "SUCCEEDED")


def send_transients(client: Client, raw: redis.Redis, ns: str, batch: list[Workflow]) -> None:
    """Send each gate its transient signal ``early`` before it suspends, and release its task:
    after the discard was committed (``not_started``, ``block``, ``poll``) or together with the
    signal (``race``)."""
    group = {wf.id: wf.stages[1].context["group"] for wf in batch}
    to_signal = [wf for wf in batch if group[wf.id] != "not_started"]
    to_release = [wf for wf in batch if group[wf.id] == "not_started"]
    for wf in to_release:  # 'pre' holds until released: the gate has not started
        client.signal(wf.id, "gate", "early", {"wf": wf.id}, persistent=False)

    def progress() -> bool:
        fields: list[bytes] = raw.hkeys(f"{ns}:test:started")  # type: ignore[assignment]
        started = {k.decode() for k in fields}
        for wf in [w for w in to_signal if w.id in started]:
            client.signal(wf.id, "gate", "early", {"wf": wf.id}, persistent=False)
            to_signal.remove(wf)
            if group[wf.id] == "race":
                release(raw, ns, wf, "release")
            else:
                to_release.append(wf)
        for wf in [w for w in to_release if discarded(client, w)]:
            release(raw, ns, wf, "release")
            to_release.remove(wf)
        return not to_signal and not to_release

    wait_until(progress, 20, "every gate's transient signal to be sent and its task released", interval=0.002)


def test_transient_signals_sent_before_the_suspension_are_discarded_across_processes(pool: Pool) -> None:
    client, raw, ns = pool.client, pool.raw, pool.ns
    done: list[Workflow] = []
    outcome: Counter[str] = Counter()
    for _ in range(4):
        batch = [signal_workflow(GROUPS[i % 4]) for i in range(8)]
        for wf in batch:
            client.submit(wf)
        send_transients(client, raw, ns, batch)
        for wf in batch:
            wait_until(partial(settled_gate, client, wf), 20,
                       f"{wf.id} to suspend with its signal handled (or to resume on a delivered transient signal)")
        waiting = []
        for wf in batch:
            group = wf.stages[1].context["group"]
            thrown, got = discarded(client, wf), signaled(client, wf)
            gate = client.store.retrieve(wf.id).stage_by_ref_id("gate")
            assert gate is not None
            seen = [json.loads(x) for x in raw.lrange(f"{ns}:test:seen:{wf.id}", 0, -1)]
            if group == "race" and got:  # the suspension committed first: delivered, not discarded
                assert not thrown and [e["data"]["how"] for e in got] == ["delivered"], (wf.id, thrown, got)
                assert seen == [["early", {"wf": wf.id}]] and client.status(wf.id) == "SUCCEEDED", wf.id
                outcome["race: delivered"] += 1
                continue
            assert len(thrown) == 1 and thrown[0]["data"]["signal_name"] == "early", (wf.id, thrown)
            expected = ("NOT_STARTED",) if group == "not_started" else ("RUNNING",)
            assert thrown[0]["data"]["stage_status"] in expected, (wf.id, group, thrown[0]["data"])
            assert gate.status == S.SUSPENDED and client.status(wf.id) == "SUSPENDED", (wf.id, gate.status)
            assert "_signal_name" not in gate.context and "_signal_data" not in gate.context, gate.context
            assert not got and not seen, (wf.id, got, seen)
            outcome[f"{group}: discarded"] += 1
            log = events(client, wf)
            if group == "race" and log.index(thrown[0]) > max(at(log, "stage.suspended", "gate")):
                outcome["race: discard logged after the suspension"] += 1  # decided on RUNNING, committed later
            waiting.append(wf)
        for wf in waiting:
            client.signal(wf.id, "gate", "go", {"wf": wf.id})  # persistent: resumes the SUSPENDED gate
        done += [client.wait(wf.id, timeout=20) for wf in batch]

    for wf in done:
        assert wf.status == S.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in wf.stages])
        assert int(raw.hget(f"{ns}:test:suspends:{wf.id}", "gate") or 0) == 1, wf.id
        seen = [json.loads(x) for x in raw.lrange(f"{ns}:test:seen:{wf.id}", 0, -1)]
        got = signaled(client, wf)
        assert len(seen) == 1 and len(got) == 1, (wf.id, seen, got)  # resumed exactly once
        if seen != [["early", {"wf": wf.id}]]:
            assert seen == [["go", {"wf": wf.id}]] and got[0]["data"]["signal_name"] == "go", (wf.id, seen)
    assert all(outcome[f"{g}: discarded"] == 8 for g in GROUPS[:3]), outcome
    assert outcome["race: discarded"] + outcome["race: delivered"] == 8, outcome
    assert pool.served_by(done) == pool.pids, "both worker processes executed gates"
    print(dict(outcome))


# -- milestones ------------------------------------------------------------------------------

RUNNING_WATCHERS = {  # ref -> upstreams; milestone_status RUNNING
    "early_r0": (), "early_r1": (),  # decided while m has not started: wait, woken by its start
    "start_r0": ("root_a",), "start_r1": ("root_a",), "start_r2": ("root_a",),  # racing m's start
    "end_r0": ("end_g0",), "end_r1": ("end_g0",), "end_r2": ("end_g1",), "end_r3": ("end_g1",),  # racing its end
    "late_r0": ("late_g",), "late_r1": ("late_g",),  # decided after m ended: skipped
}
SUCCEEDED_WATCHERS = {  # milestone_status SUCCEEDED: wait until m's end
    "early_s0": (), "early_s1": (), "start_s0": ("root_a",), "end_s0": ("end_g0",), "late_s0": ("late_g",),
}


def milestone_workflow() -> Workflow:
    """``m`` (the milestone) starts through its StartStage once root_a and root_b finish, which
    the test releases together; ``end_g0``/``end_g1`` hold with ``m`` and are released with it."""
    held = {"block_s": 0.2}
    return Workflow.create(application="itest", name="milestone race", stages=[
        stage("root_a", "step", (), {"hold": "roots", **held}),
        stage("root_b", "step", (), {"hold": "roots", **held}),
        stage("m", "step", ("root_a", "root_b"), {"hold": "end", **held}),
        stage("end_g0", "step", ("root_a",), {"hold": "end", **held}),
        stage("end_g1", "step", ("root_a",), {"hold": "end", **held}),
        stage("late_g", "step", ("root_a",), {"hold": "late"}),
        *[stage(ref, "watch", ups, milestone_ref_id="m", milestone_status="RUNNING")
          for ref, ups in RUNNING_WATCHERS.items()],
        *[stage(ref, "watch", ups, milestone_ref_id="m", milestone_status="SUCCEEDED")
          for ref, ups in SUCCEEDED_WATCHERS.items()],
    ])


def m_ended(client: Client, wf: Workflow) -> bool:
    return statuses(client, wf)["m"] == S.SUCCEEDED


def drive_milestones(client: Client, raw: redis.Redis, ns: str, wave: list[Workflow]) -> None:
    """Release the roots once the early watchers wait; release m's end (with end_g0/end_g1)
    once the watchers that must run while m runs have finished and every early watcher was
    decided again on m's start; release late_g once m has ended."""
    early = [r for r in (*RUNNING_WATCHERS, *SUCCEEDED_WATCHERS) if r.startswith("early")]
    must_run = [r for r in RUNNING_WATCHERS if r.startswith(("early", "start"))]

    def waited_before_start(wf: Workflow) -> bool:
        log = events(client, wf)
        return all(at(log, "milestone.waiting", r) for r in early) and {"root_a", "root_b"} <= arrived(raw, ns, wf)

    def ran_while_m_runs(wf: Workflow) -> bool:
        log, now = events(client, wf), statuses(client, wf)
        started = at(log, "stage.started", "m")
        woken = bool(started) and all(max([-1, *at(log, "milestone.waiting", r)]) > started[0]
                                      for r in early if r.startswith("early_s"))
        return woken and all(now[r] == S.SUCCEEDED for r in must_run) and {"m", "end_g0", "end_g1"} <= arrived(raw, ns, wf)

    for cond, hold, what in ((waited_before_start, "roots", "the early watchers to wait"),
                             (ran_while_m_runs, "end", "the watchers of a running m to run")):
        for wf in wave:
            wait_until(partial(cond, wf), 20, f"{what} ({wf.id})")
        for wf in wave:
            release(raw, ns, wf, hold)
    for wf in wave:
        wait_until(partial(m_ended, client, wf), 20, f"m of {wf.id} to end")
        release(raw, ns, wf, "late")


def check_watchers(client: Client, raw: redis.Redis, ns: str, wf: Workflow, tally: Counter[str]) -> None:
    """Every RUNNING watcher started between m's start and end commits, or was skipped after
    m's end without running; every SUCCEEDED watcher started after m's end. Forced cases as
    ``drive_milestones`` arranged them."""
    log, ran = events(client, wf), runs(raw, ns, wf)
    saw: dict[bytes, bytes] = raw.hgetall(f"{ns}:test:saw:{wf.id}")  # type: ignore[assignment]
    seen = {k.decode(): v.decode() for k, v in saw.items()}
    stages = {s.ref_id: s for s in wf.stages}
    (m_start,), (m_end,) = at(log, "stage.started", "m"), at(log, "stage.completed", "m")
    for ref in RUNNING_WATCHERS:
        status, starts, passes = stages[ref].status, at(log, "stage.started", ref), at(log, "milestone.passed", ref)
        if status == S.SUCCEEDED:
            assert len(starts) == 1 and m_start < starts[0] < m_end and not passes, (wf.id, ref, starts, m_start, m_end)
            assert ran.get(ref) == 1, (wf.id, ref, ran)
        else:
            assert status == S.SKIPPED, (wf.id, ref, status)
            assert not starts and ref not in ran, (wf.id, ref, "a skipped watcher ran")
            assert passes and min(passes) > m_end, (wf.id, ref, passes, m_end)
            assert stages[ref].context[MILESTONE_PASSED] == "SUCCEEDED", (wf.id, ref)
        tally[f"{ref[:-1]}: {status.name}"] += 1
    for ref in (r for r in RUNNING_WATCHERS if r.startswith(("early", "start"))):
        assert stages[ref].status == S.SUCCEEDED and seen[ref] == "RUNNING", (wf.id, ref, seen.get(ref))
    for ref in (r for r in RUNNING_WATCHERS if r.startswith("early")):
        assert min(at(log, "milestone.waiting", ref)) < m_start, (wf.id, ref, "decided before m started")
    for ref in (r for r in RUNNING_WATCHERS if r.startswith("late")):
        assert stages[ref].status == S.SKIPPED, (wf.id, ref)
    for ref in SUCCEEDED_WATCHERS:
        starts = at(log, "stage.started", ref)
        assert stages[ref].status == S.SUCCEEDED and ran.get(ref) == 1, (wf.id, ref, stages[ref].status, ran)
        assert len(starts) == 1 and starts[0] > m_end and seen[ref] == "SUCCEEDED", (wf.id, ref, starts, m_end)
        if ref.startswith("early"):
            waits = at(log, "milestone.waiting", ref)
            assert min(waits) < m_start and any(m_start < w < m_end for w in waits), (wf.id, ref, waits)
    for ref in ("start_r0", "start_r1", "start_r2"):
        tally["start_r: waited first" if at(log, "milestone.waiting", ref) else "start_r: started at once"] += 1


def test_milestone_watchers_start_only_while_the_milestone_runs_across_processes(pool: Pool) -> None:
    client, raw, ns = pool.client, pool.raw, pool.ns
    done: list[Workflow] = []
    for _ in range(6):
        wave = [milestone_workflow() for _ in range(2)]
        for wf in wave:
            client.submit(wf)
        drive_milestones(client, raw, ns, wave)
        done += [client.wait(wf.id, timeout=20) for wf in wave]
    tally: Counter[str] = Counter()
    for wf in done:
        assert wf.status == S.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in wf.stages])
        check_watchers(client, raw, ns, wf, tally)
    assert pool.served_by(done) == pool.pids, "both worker processes executed watchers"
    print(dict(tally))


# -- fan-in reducers -------------------------------------------------------------------------

UPSTREAMS = tuple(f"u{i}" for i in range(5))


def quorum_workflow(late: tuple[str, ...]) -> Workflow:
    """u0..u4 -> join (3 of 5; ``finding`` collected, ``cost`` summed: u<i> outputs finding
    'u<i>' and cost 2**i, so the sum names the set). The ``late`` upstreams finish only after
    the join's task has run; the others are released together by the test."""
    ups = [stage(ref, "step", (), {"hold": "joined" if ref in late else "quick", "block_s": 0 if ref in late else 0.5,
                                   "emit": {"finding": ref, "cost": 2 ** i}})
           for i, ref in enumerate(UPSTREAMS)]
    join = stage("join", "join", UPSTREAMS, join_type=JoinType.N_OF_M, join_threshold=3,
                 output_reducers={"finding": "collect", "cost": "sum"})
    return Workflow.create(application="itest", name=f"quorum (late: {','.join(late) or 'none'})",
                           stages=[*ups, join])


def test_an_n_of_m_join_reduces_exactly_the_upstreams_that_released_it_across_processes(pool: Pool) -> None:
    client, raw, ns = pool.client, pool.raw, pool.ns
    workflows = []
    for i in range(20):  # even: all five race; odd: two (varying) finish after the join ran
        late = () if i % 2 == 0 else (UPSTREAMS[i % 5], UPSTREAMS[(i + 2) % 5])
        wf = quorum_workflow(late)
        client.submit(wf)
        quick = set(UPSTREAMS) - set(late)
        wait_until(partial(all_arrived, raw, ns, wf, quick), 20, f"the quick upstreams of {wf.id} to run")
        release(raw, ns, wf, "quick")  # they finish together (five need both workers' threads)
        workflows.append((wf, late))
    sizes: Counter[int] = Counter()
    for wf, late in workflows:
        done = client.wait(wf.id, timeout=20)
        assert done.status == S.SUCCEEDED, (wf.id, [(s.ref_id, s.status.name) for s in done.stages])
        log = events(client, wf)
        (join_start,) = at(log, "stage.started", "join")
        released = sorted(u for u in UPSTREAMS if any(i < join_start for i in at(log, "stage.completed", u)))
        assert len(released) >= 3, (wf.id, released)
        if late:
            assert released == sorted(set(UPSTREAMS) - set(late)), (wf.id, late, released)
        expected = {"finding": released, "cost": sum(2 ** int(u[1:]) for u in released)}
        joined = [json.loads(x) for x in raw.lrange(f"{ns}:test:joined:{wf.id}", 0, -1)]
        assert joined == [expected], (wf.id, joined, expected)
        assert runs(raw, ns, wf) == {"join": 1}, wf.id
        join = done.stage_by_ref_id("join")
        assert join is not None
        assert {k: join.context.get(k) for k in expected} == expected, (wf.id, join.context)
        if not late:
            sizes[len(released)] += 1
    assert pool.served_by([wf for wf, _ in workflows]) == pool.pids, "both worker processes executed branches"
    print({"free race, upstreams collected": dict(sizes)})
