"""TaskResult.jump_to / JumpToStage: loops, forward jumps, fan-in scopes, limits, stale attempts.

Each test runs the engine end to end (real Redis and the embedded default) and checks what a user
sees: statuses, how often each task ran, the values each run saw, and the jump bookkeeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.queue.messages import JumpToStage
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]


class Script(Task):
    """Runs ``step(stage, n)`` on the n-th execution (1-based) of each stage ref id, recording the
    context each execution saw."""

    def __init__(self, step: Callable[[StageExecution, int], TaskResult]) -> None:
        self.step = step
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            seen = self.runs.setdefault(stage.ref_id, [])
            seen.append(dict(stage.context))
            n = len(seen)
        return self.step(stage, n)

    def count(self, ref: str) -> int:
        return len(self.runs.get(ref, []))


def engine(target: Target, **tasks: Task) -> Engine:
    eng = make_engine(target)
    for name, task in tasks.items():
        eng.registry.register(name, task)
    return eng


def ok(stage: StageExecution, n: int) -> TaskResult:
    return TaskResult.success(outputs={f"{stage.ref_id}_run": n})


def test_a_loop_back_reruns_the_region_and_each_pass_sees_the_fresh_upstream_values(target: Target) -> None:
    # research -> review; review loops back to research while the confidence is low. stabilize
    # keeps the first pass's merged confidence in review's context, so its router never sees the
    # new value; here every pass of review sees the confidence research produced in that pass.
    def research(stage: StageExecution, n: int) -> TaskResult:
        return TaskResult.success(outputs={"confidence": round(0.3 * n, 1)})

    def review(stage: StageExecution, n: int) -> TaskResult:
        if stage.context["confidence"] < 0.8:
            return TaskResult.jump_to("research", context={"feedback": f"pass {n} too weak"})
        return TaskResult.success(outputs={"verdict": "accepted"})

    r, v = Script(research), Script(review)
    eng = engine(target, research=r, review=v, plain=Script(ok))
    wf = eng.run(make_workflow(make_stage("plan", "plain"), make_stage("research", "research", ["plan"]),
                               make_stage("review", "review", ["research"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [c["confidence"] for c in v.runs["review"]] == [0.3, 0.6, 0.9]
    assert r.count("research") == 3 and eng.registry.get("plain").count("plan") == 1  # type: ignore[attr-defined]
    assert r.runs["research"][1]["feedback"] == "pass 1 too weak"
    assert r.runs["research"][2]["feedback"] == "pass 2 too weak"
    review_stage = stage_named(wf, "review")
    assert review_stage.context["_jump_count"] == 2
    assert [h["to_stage"] for h in review_stage.context["_jump_history"]] == ["research", "research"]
    assert review_stage.outputs == {"verdict": "accepted"}
    assert stage_named(wf, "research").context["_jump_count"] == 2


def test_a_stage_jumping_to_itself_runs_again_with_the_jump_context(target: Target) -> None:
    def again(stage: StageExecution, n: int) -> TaskResult:
        if n < 3:
            return TaskResult.jump_to("poll", context={"tries": n})
        return TaskResult.success(outputs={"tries_seen": stage.context["tries"]})

    eng = engine(target, again=Script(again), plain=Script(ok))
    wf = eng.run(make_workflow(make_stage("poll", "again"), make_stage("after", "plain", ["poll"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    poll = stage_named(wf, "poll")
    assert poll.outputs == {"tries_seen": 2}
    assert poll.context["_jump_count"] == 2
    assert stage_named(wf, "after").status == WorkflowStatus.SUCCEEDED


def test_a_loop_past_max_jumps_fails_the_workflow_terminal_with_jump_error(target: Target) -> None:
    eng = engine(target, forever=Script(lambda s, n: TaskResult.jump_to("spin")), plain=Script(ok))
    wf = make_workflow(make_stage("spin", "forever"), make_stage("after", "plain", ["spin"]))
    wf.context["_max_jumps"] = 2
    done = eng.run(wf)
    assert done.status == WorkflowStatus.TERMINAL
    spin = stage_named(done, "spin")
    assert spin.status == WorkflowStatus.TERMINAL
    assert spin.context["jump_error"] == "Max jump count exceeded: 2/2"
    assert eng.registry.get("forever").count("spin") == 3  # type: ignore[attr-defined]
    assert stage_named(done, "after").status == WorkflowStatus.NOT_STARTED


def test_the_default_limit_is_ten_jumps(target: Target) -> None:
    eng = engine(target, forever=Script(lambda s, n: TaskResult.jump_to("spin")))
    done = eng.run(make_workflow(make_stage("spin", "forever")))
    assert done.status == WorkflowStatus.TERMINAL
    assert eng.registry.get("forever").count("spin") == 11  # type: ignore[attr-defined]
    assert stage_named(done, "spin").context["jump_error"] == "Max jump count exceeded: 10/10"


def test_a_jump_to_a_missing_stage_ends_the_workflow_terminal_naming_it(target: Target) -> None:
    eng = engine(target, lost=Script(lambda s, n: TaskResult.jump_to("nowhere")), plain=Script(ok))
    done = eng.run(make_workflow(make_stage("a", "lost"), make_stage("b", "plain"), make_stage("c", "plain", ["a"])))
    assert done.status == WorkflowStatus.TERMINAL
    a = stage_named(done, "a")
    assert a.status == WorkflowStatus.TERMINAL
    assert a.context["jump_error"] == "Target stage not found: nowhere"
    assert stage_named(done, "c").status == WorkflowStatus.NOT_STARTED


def test_redirect_without_a_target_fails_the_task_terminal(target: Target) -> None:
    eng = engine(target, bare=Script(lambda s, n: TaskResult.redirect()))
    done = eng.run(make_workflow(make_stage("a", "bare")))
    assert done.status == WorkflowStatus.TERMINAL
    assert stage_named(done, "a").context["error"] == "REDIRECT result without target_stage_ref_id"


def test_a_forward_jump_skips_the_stages_in_between_and_runs_the_target(target: Target) -> None:
    plain = Script(ok)
    skip = Script(lambda s, n: TaskResult.jump_to("ship", context={"fast_path": True},
                                                  outputs={"reason": "already built"}))
    eng = engine(target, plain=plain, skip=skip)
    wf = eng.run(make_workflow(make_stage("check", "skip"), make_stage("build", "plain", ["check"]),
                               make_stage("test", "plain", ["build"]), make_stage("ship", "plain", ["test"]),
                               make_stage("notify", "plain", ["ship"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert {s.ref_id: s.status for s in wf.stages} == {
        "check": WorkflowStatus.SUCCEEDED, "build": WorkflowStatus.SKIPPED, "test": WorkflowStatus.SKIPPED,
        "ship": WorkflowStatus.SUCCEEDED, "notify": WorkflowStatus.SUCCEEDED}
    assert plain.count("build") == 0 and plain.count("test") == 0
    assert plain.count("ship") == 1 and plain.count("notify") == 1
    ship_ctx = plain.runs["ship"][0]
    assert ship_ctx["fast_path"] is True
    assert ship_ctx["_jump_outputs"] == {"reason": "already built"}
    assert ship_ctx["_jump_count"] == 1


def test_a_loop_inside_one_branch_leaves_a_fan_in_waiting_on_the_other_branch(target: Target) -> None:
    # a1 -> b1 --+
    #            +-> fan_in -> final
    # a2 -> b2 --+      (b2 jumps back to a2 once)
    # fan_in also waits on b1, outside the loop, so it is not reset: it runs once, after both.
    plain = Script(ok)
    once = Script(lambda s, n: TaskResult.jump_to("a2") if n == 1 else TaskResult.success(outputs={"b2": n}))
    eng = engine(target, plain=plain, once=once)
    wf = eng.run(make_workflow(
        make_stage("a1", "plain"), make_stage("a2", "plain"), make_stage("b1", "plain", ["a1"]),
        make_stage("b2", "once", ["a2"]), make_stage("fan_in", "plain", ["b1", "b2"]),
        make_stage("final", "plain", ["fan_in"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert {ref: plain.count(ref) for ref in ("a1", "a2", "b1", "fan_in", "final")} == {
        "a1": 1, "a2": 2, "b1": 1, "fan_in": 1, "final": 1}
    assert plain.runs["fan_in"][0]["b2"] == 2


def test_a_loop_over_a_fan_out_reruns_every_branch_and_the_join_once_per_pass(target: Target) -> None:
    # start -> (left, right) -> join -> gate; gate loops back to start once.
    plain = Script(ok)
    gate = Script(lambda s, n: TaskResult.jump_to("start") if n == 1 else TaskResult.success())
    eng = engine(target, plain=plain, gate=gate)
    wf = eng.run(make_workflow(
        make_stage("start", "plain"), make_stage("left", "plain", ["start"]), make_stage("right", "plain", ["start"]),
        make_stage("join", "plain", ["left", "right"]), make_stage("gate", "gate", ["join"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert {ref: plain.count(ref) for ref in ("start", "left", "right", "join")} == {
        "start": 2, "left": 2, "right": 2, "join": 2}
    assert [c["left_run"] for c in plain.runs["join"]] == [1, 2]
    assert gate.count("gate") == 2


def test_a_stale_task_completion_after_a_jump_is_discarded(target: Target) -> None:
    # T -> (S, R) -> J. S jumps back to T while R's first run is still executing; by the time R's
    # first run returns, the jump has reset R and its second run has started. The first run's
    # result must not complete the second run (nor count toward J's join): J runs once and sees
    # the second run's output.
    holder: dict[str, Any] = {}

    def slow(stage: StageExecution, n: int) -> TaskResult:
        if n == 1:
            eng, wf = holder["eng"], holder["wf"]

            def second_run_started() -> bool:
                eng.processor.process_one()
                now = eng.store.retrieve(wf.id)
                return (stage_named(now, "T").context.get("_jump_count") == 1
                        and stage_named(now, "R").status == WorkflowStatus.RUNNING)

            wait_until(second_run_started, 10, "the jump to reset R and start its second run")
        return TaskResult.success(outputs={"r_pass": n})

    plain, slow_task = Script(ok), Script(slow)
    jumper = Script(lambda s, n: TaskResult.jump_to("T") if n == 1 else TaskResult.success())
    eng = engine(target, plain=plain, slow=slow_task, jumper=jumper)
    wf = make_workflow(make_stage("T", "plain"), make_stage("S", "jumper", ["T"]), make_stage("R", "slow", ["T"]),
                       make_stage("J", "plain", ["S", "R"]))
    holder.update(eng=eng, wf=wf)
    eng.start(wf)
    wait_until(lambda: not eng.processor.process_one() and eng.store.retrieve(wf.id).status.is_complete,
               20, "the workflow to finish")
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert slow_task.count("R") == 2
    assert stage_named(done, "R").outputs == {"r_pass": 2}
    assert plain.count("J") == 1
    assert plain.runs["J"][0]["r_pass"] == 2


def test_a_pushed_jump_to_stage_reruns_a_finished_stage(target: Target) -> None:
    # a finished, wait polls until an upstream output says "release"; an operator pushes a
    # JumpToStage from wait back to a with release=True in the jump context.
    first = Script(lambda s, n: TaskResult.success(outputs={"release": bool(s.context.get("release"))}))
    hold = Script(lambda s, n: TaskResult.success() if s.context.get("release") else TaskResult.running())
    eng = engine(target, first=first, hold=hold)
    wf: Workflow = make_workflow(make_stage("a", "first"), make_stage("wait", "hold", ["a"]))
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() is not None and hold.count("wait") >= 1, 10, "wait to poll")
    source = stage_named(eng.store.retrieve(wf.id), "wait")
    eng.queue.push(JumpToStage(execution_id=wf.id, stage_id=source.id, target_stage_ref_id="a",
                               jump_context={"release": True}))
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert first.count("a") == 2
    assert first.runs["a"][1]["release"] is True
    assert hold.runs["wait"][-1]["release"] is True


def test_a_jump_target_waits_for_its_mutex_like_any_start(target: Target) -> None:
    # hold (mutex "m") runs until released. src jumps forward over mid to dst, which shares the
    # mutex: the jump's StartStage bypasses dst's join, never its mutex. dst stays NOT_STARTED
    # (marked _jump_bypass) while hold holds, and runs once hold's end hands the mutex on.
    holder: dict[str, Any] = {}
    released = threading.Event()
    hold = Script(lambda s, n: TaskResult.success() if released.is_set() else TaskResult.running())

    def jump_once_hold_holds(stage: StageExecution, n: int) -> TaskResult:
        eng, wf = holder["eng"], holder["wf"]
        wait_until(lambda: eng.processor.process_one() is not None
                   and stage_named(eng.store.retrieve(wf.id), "hold").status == WorkflowStatus.RUNNING,
                   10, "hold to take the mutex")
        return TaskResult.jump_to("dst")

    plain, src = Script(ok), Script(jump_once_hold_holds)
    eng = engine(target, plain=plain, hold=hold, src=src)
    wf = make_workflow(make_stage("hold", "hold", mutex_key="m"), make_stage("src", "src"),
                       make_stage("mid", "plain", ["src"]), make_stage("dst", "plain", ["mid"], mutex_key="m"))
    holder.update(eng=eng, wf=wf)
    eng.start(wf)

    def dst_waits() -> bool:
        eng.processor.process_one()
        now = eng.store.retrieve(wf.id)
        return (stage_named(now, "mid").status == WorkflowStatus.SKIPPED
                and stage_named(now, "dst").context.get("_jump_bypass") is True)

    wait_until(dst_waits, 10, "the jump to commit")
    for _ in range(20):  # the jump's StartStage and hold's polls are handled: dst keeps waiting
        eng.processor.process_one()
    now = eng.store.retrieve(wf.id)
    assert stage_named(now, "dst").status == WorkflowStatus.NOT_STARTED
    assert plain.count("dst") == 0
    released.set()
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert plain.count("dst") == 1 and plain.count("mid") == 0
    dst, held = stage_named(done, "dst"), stage_named(done, "hold")
    assert dst.start_time is not None and held.end_time is not None and dst.start_time >= held.end_time
    assert "_jump_bypass" not in dst.context


def test_a_jump_target_starts_without_waiting_for_its_join(target: Target) -> None:
    # fast jumps to join, which also waits on slow (never finishing on its own): the jump starts
    # join at once; slow's later completion does not run join a second time.
    released = threading.Event()
    slow = Script(lambda s, n: TaskResult.success() if released.is_set() else TaskResult.running())
    plain = Script(ok)
    fast = Script(lambda s, n: TaskResult.jump_to("join"))
    eng = engine(target, plain=plain, slow=slow, fast=fast)
    wf = make_workflow(make_stage("fast", "fast"), make_stage("slow", "slow"),
                       make_stage("join", "plain", ["fast", "slow"]))
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() is not None and plain.count("join") == 1, 10, "join to run")
    assert stage_named(eng.store.retrieve(wf.id), "slow").status == WorkflowStatus.RUNNING
    released.set()
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert plain.count("join") == 1
