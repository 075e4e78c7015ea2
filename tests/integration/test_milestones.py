"""Milestones (WCP-18): a watcher (``milestone_ref_id``/``milestone_status``) starts only while
its milestone stage is in the required status, is SKIPPED once the milestone has passed it, and
otherwise waits - released by the milestone's own status change, never by polling."""

from __future__ import annotations

import threading

import pytest

from stabilize_redis import StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.decisions.milestones import MILESTONE_PASSED
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.queue.messages import StartStage
from stabilize_redis.validation import WorkflowValidationError
from tests.integration.interleave import interleave
from tests.integration.support import (
    Engine,
    make_engine,
    make_stage,
    make_workflow,
    ms,
    stage_named,
    wait_until,
)
from tests.integration.test_interleavings import handle

Target = tuple[str | None, str]
S = WorkflowStatus


class Held:
    """Task ``held``: a stage whose ref id has a gate here blocks until the test opens it; every
    execution is counted by ref id."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def gate(self, ref: str) -> threading.Event:
        return self.gates.setdefault(ref, threading.Event())

    def __call__(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1
        gate = self.gates.get(stage.ref_id)
        if gate is not None:
            assert gate.wait(20), f"gate {stage.ref_id} never opened"
        return TaskResult.success(outputs={f"done_{stage.ref_id}": True})


def engine(target: Target) -> tuple[Engine, Held]:
    eng = make_engine(target)
    held = Held()
    eng.registry.register("held", held)
    return eng, held




def watcher(ref: str, requires: tuple[str, ...] = (), milestone: str = "m", status: str = "RUNNING") -> StageExecution:
    return make_stage(ref, "held", requires, milestone_ref_id=milestone, milestone_status=status)


def status_of(eng: Engine, wf_id: str, ref: str) -> S:
    return stage_named(eng.store.retrieve(wf_id), ref).status


def waiting(eng: Engine, wf_id: str) -> int:
    return len(eng.events(wf_id, "milestone.waiting"))


def test_a_watcher_of_running_starts_while_the_milestone_runs(target: Target) -> None:
    eng, held = engine(target)
    held.gate("m")
    wf = make_workflow(make_stage("root", "held"), make_stage("m", "held", ["root"]), watcher("w", ("root",)))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: status_of(eng, wf.id, "w") == S.SUCCEEDED, 10, "the watcher to finish")
        assert status_of(eng, wf.id, "m") == S.RUNNING
        held.gate("m").set()
        done = eng.client.wait(wf.id, timeout=20)
    assert done.status == S.SUCCEEDED
    assert held.runs["w"] == 1 and len(eng.events(wf.id, "milestone.reached")) == 1


def test_a_waiting_watcher_is_released_by_the_milestones_start(target: Target) -> None:
    eng, held = engine(target)
    held.gate("root")
    held.gate("m")
    wf = make_workflow(watcher("w"), make_stage("root", "held"), make_stage("m", "held", ["root"]))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: waiting(eng, wf.id), 10, "the watcher to wait for its milestone")
        assert status_of(eng, wf.id, "w") == S.NOT_STARTED and "w" not in held.runs
        held.gate("root").set()  # m starts: its start commit wakes the watcher
        wait_until(lambda: status_of(eng, wf.id, "w") == S.SUCCEEDED, 10, "the released watcher to finish")
        held.gate("m").set()
        done = eng.client.wait(wf.id, timeout=20)
    assert done.status == S.SUCCEEDED
    assert held.runs["w"] == 1
    assert ms(stage_named(done, "w").start_time) >= ms(stage_named(done, "m").start_time)


def test_a_watcher_whose_milestone_has_finished_is_skipped_without_running(target: Target) -> None:
    eng, held = engine(target)
    wf = make_workflow(make_stage("m", "held"), watcher("w", ("m",)), make_stage("after", "held", ["w"]))
    done = eng.run(wf)
    assert done.status == S.SUCCEEDED
    w = stage_named(done, "w")
    assert w.status == S.SKIPPED and "w" not in held.runs
    assert w.context[MILESTONE_PASSED] == "SUCCEEDED"
    assert stage_named(done, "after").status == S.SUCCEEDED


def test_a_watcher_of_not_started_runs_before_the_milestone_and_is_skipped_after_it_started(target: Target) -> None:
    eng, held = engine(target)
    before = make_workflow(watcher("w", status="NOT_STARTED"), make_stage("m", "held", ["w"]))
    after = make_workflow(make_stage("m", "held"), watcher("w", ("m",), status="NOT_STARTED"))
    ran, skipped = eng.run(before), eng.run(after)
    assert ran.status == skipped.status == S.SUCCEEDED
    assert stage_named(ran, "w").status == S.SUCCEEDED
    assert stage_named(skipped, "w").status == S.SKIPPED and held.runs["w"] == 1


def test_a_waiting_watcher_is_skipped_when_its_milestone_is_skipped(target: Target) -> None:
    eng, held = engine(target)
    held.gate("root")
    wf = make_workflow(watcher("w"), make_stage("root", "held"),
                       make_stage("m", "held", ["root"], {"stageEnabled": False}))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: waiting(eng, wf.id), 10, "the watcher to wait for its milestone")
        held.gate("root").set()
        done = eng.client.wait(wf.id, timeout=20)
    assert done.status == S.SUCCEEDED
    assert stage_named(done, "m").status == S.SKIPPED and stage_named(done, "w").status == S.SKIPPED
    assert "w" not in held.runs


def test_a_watcher_of_a_missing_milestone_is_skipped(target: Target) -> None:
    eng, held = engine(target)
    done = eng.run(make_workflow(watcher("w", milestone="nowhere"), make_stage("x", "held")))
    assert done.status == S.SUCCEEDED
    assert stage_named(done, "w").status == S.SKIPPED and "w" not in held.runs


def test_a_watcher_deciding_while_the_milestone_starts_conflicts_and_starts(target: Target) -> None:
    eng, held = engine(target)
    held.gate("m")
    # the mutex makes m start through a StartStage too, so both starts can be interleaved
    wf = make_workflow(make_stage("m", "held", mutex_key="x"), watcher("w"))
    eng.client.submit(wf)
    start_m, start_w = (StartStage(execution_id=wf.id, stage_id=stage_named(wf, r).id) for r in ("m", "w"))

    result = interleave(eng.store.backend, handle(eng, start_m), handle(eng, start_w))

    assert result.conflicts == 1, "the watcher read m NOT_STARTED; m's start must make its commit conflict"
    now = eng.store.retrieve(wf.id)
    assert stage_named(now, "m").status == S.RUNNING and stage_named(now, "w").status == S.RUNNING
    held.gate("m").set()
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == S.SUCCEEDED and held.runs == {"m": 1, "w": 1}


def test_a_milestone_on_a_synthetic_stage_is_refused_at_submit(target: Target) -> None:
    eng, _ = engine(target)
    parent = make_stage("parent", "held")
    child = watcher("child", milestone="parent")
    child.parent_stage_id = parent.id
    child.synthetic_stage_owner = SyntheticStageOwner.STAGE_BEFORE
    with pytest.raises(WorkflowValidationError, match="stage 'child': milestone_ref_id: .*synthetic stage"):
        eng.client.submit(make_workflow(parent, child))
