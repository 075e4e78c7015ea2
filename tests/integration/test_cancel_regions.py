"""Cancel region (WCP-25): CancelRegion cancels, in one commit, every unfinished stage tagged
with the region and their synthetic children; running tasks see their cancellation token and
get ``on_cancel``; stages that had not started never run; the other branches finish and the
workflow then ends CANCELED (stabilize's rule for a workflow with a CANCELED stage)."""

from __future__ import annotations

import threading

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus, is_cancellation_requested
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.queue.messages import CancelRegion, StartStage
from tests.integration.interleave import interleave
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until
from tests.integration.test_interleavings import handle
from workers.cli import main as cli_main

Target = tuple[str | None, str]
S = WorkflowStatus


class Worker(Task):
    """Context ``until_canceled``: run until the cancellation token fires (recorded in
    ``saw_token``); a ref id with a gate here blocks until the test opens it. Executions,
    executions in progress and ``on_cancel`` calls are recorded by ref id."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.executing: set[str] = set()
        self.saw_token: set[str] = set()
        self.on_cancel_called: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1
            self.executing.add(stage.ref_id)
        if stage.context.get("until_canceled"):
            fired = threading.Event()
            while not is_cancellation_requested() and not fired.wait(0.005):
                pass
            if is_cancellation_requested():
                self.saw_token.add(stage.ref_id)
        gate = self.gates.get(stage.ref_id)
        if gate is not None:
            assert gate.wait(20), f"gate {stage.ref_id} never opened"
        return TaskResult.success(outputs={f"done_{stage.ref_id}": True})

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        self.on_cancel_called.add(stage.ref_id)
        return None


def engine(target: Target) -> tuple[Engine, Worker]:
    eng = make_engine(target)
    worker = Worker()
    eng.registry.register("work", worker)
    return eng, worker




def in_region(ref: str, requires: tuple[str, ...] = (), mutex_key: str | None = None,
              **context: object) -> StageExecution:
    return make_stage(ref, "work", requires, dict(context), cancel_region="evidence", mutex_key=mutex_key)


def cancel(eng: Engine, wf_id: str, region: str = "evidence") -> None:
    eng.queue.push(CancelRegion(execution_id=wf_id, region=region))


def test_canceling_a_region_cancels_its_running_and_unstarted_stages_and_the_others_finish(target: Target) -> None:
    eng, worker = engine(target)
    worker.gates["other"] = threading.Event()
    wf = make_workflow(make_stage("root", "work"),
                       in_region("e1", ("root",), until_canceled=True), in_region("e2", ("root",), until_canceled=True),
                       in_region("later", ("e1",)), make_stage("other", "work", ["root"]),
                       make_stage("after_other", "work", ["other"]))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: {"e1", "e2", "other"} <= worker.executing, 10, "e1, e2 and other to run")
        cancel(eng, wf.id)
        wait_until(lambda: eng.events(wf.id, "region.canceled"), 10, "the region's cancel commit")
        assert eng.store.retrieve(wf.id).status == S.RUNNING, "the other branch still runs"
        worker.gates["other"].set()
        done = eng.client.wait(wf.id, timeout=20)
    assert {r: stage_named(done, r).status for r in ("e1", "e2", "later", "other", "after_other")} == {
        "e1": S.CANCELED, "e2": S.CANCELED, "later": S.CANCELED, "other": S.SUCCEEDED, "after_other": S.SUCCEEDED}
    assert worker.saw_token >= {"e1", "e2"} and worker.on_cancel_called >= {"e1", "e2"}
    assert "later" not in worker.runs
    assert done.status == S.CANCELED
    (event,) = eng.events(wf.id, "region.canceled")
    assert sorted(event["data"]["stages"]) == ["e1", "e2", "later"] and len(event["data"]["tasks"]) == 2


def test_a_region_parents_synthetic_children_are_canceled_with_it(target: Target) -> None:
    eng, worker = engine(target)
    parent = in_region("parent")
    child = make_stage("child", "work", context={"until_canceled": True})
    child.parent_stage_id = parent.id
    child.synthetic_stage_owner = SyntheticStageOwner.STAGE_BEFORE
    wf = make_workflow(parent, child)
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: "child" in worker.executing, 10, "the before-stage to run")
        cancel(eng, wf.id)
        done = eng.client.wait(wf.id, timeout=20)
    assert stage_named(done, "parent").status == S.CANCELED and stage_named(done, "child").status == S.CANCELED
    assert "child" in worker.saw_token and "parent" not in worker.runs
    assert done.status == S.CANCELED


def test_a_region_stage_holding_a_mutex_hands_it_to_a_waiter_outside_the_region(target: Target) -> None:
    eng, worker = engine(target)
    worker.gates["root"] = threading.Event()
    wf = make_workflow(in_region("holder", mutex_key="db", until_canceled=True), make_stage("root", "work"),
                       make_stage("waiter", "work", ["root"], mutex_key="db"))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: "holder" in worker.executing, 10, "the holder to run")
        worker.gates["root"].set()
        wait_until(lambda: eng.events(wf.id, "mutex.waiting"), 10, "the waiter to queue for the mutex")
        cancel(eng, wf.id)
        done = eng.client.wait(wf.id, timeout=20)
    assert stage_named(done, "holder").status == S.CANCELED
    assert stage_named(done, "waiter").status == S.SUCCEEDED and worker.runs["waiter"] == 1
    assert done.status == S.CANCELED


def test_a_start_racing_the_cancel_commit_never_runs_the_stage(target: Target) -> None:
    eng, worker = engine(target)
    # the mutex makes the region stage start through a StartStage, which can be interleaved
    wf = make_workflow(in_region("e", mutex_key="x"), make_stage("other", "work"))
    eng.client.submit(wf)
    start = StartStage(execution_id=wf.id, stage_id=stage_named(wf, "e").id)

    result = interleave(eng.store.backend, handle(eng, CancelRegion(execution_id=wf.id, region="evidence")),
                        handle(eng, start))

    assert result.conflicts == 1, "both read e NOT_STARTED; the start's commit must conflict"
    assert stage_named(eng.store.retrieve(wf.id), "e").status == S.CANCELED
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert "e" not in worker.runs and worker.runs["other"] == 1
    assert done.status == S.CANCELED


def test_an_unknown_or_finished_region_changes_nothing_and_says_so(target: Target) -> None:
    eng, worker = engine(target)
    wf = make_workflow(in_region("e"), make_stage("other", "work"))
    done = eng.run(wf)
    assert done.status == S.SUCCEEDED
    cancel(eng, wf.id)
    cancel(eng, wf.id, region="nowhere")
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == S.SUCCEEDED
    reasons = sorted(e["data"]["reason"] for e in eng.events(wf.id, "region.cancel_ignored"))
    assert reasons == ["the workflow has finished", "the workflow has finished"]
    assert worker.runs == {"e": 1, "other": 1}


def test_canceling_a_region_wakes_the_watchers_of_its_milestone(target: Target) -> None:
    eng, worker = engine(target)
    worker.gates["root"] = threading.Event()
    w = make_stage("w", "work", milestone_ref_id="m", milestone_status="RUNNING")
    wf = make_workflow(w, make_stage("root", "work"), in_region("m", ("root",)))
    with eng.threaded():
        eng.client.submit(wf)
        wait_until(lambda: eng.events(wf.id, "milestone.waiting"), 10, "the watcher to wait")
        cancel(eng, wf.id)
        wait_until(lambda: eng.events(wf.id, "region.canceled"), 10, "the region's cancel commit")
        worker.gates["root"].set()
        done = eng.client.wait(wf.id, timeout=20)
    assert stage_named(done, "m").status == S.CANCELED and stage_named(done, "w").status == S.SKIPPED
    assert "w" not in worker.runs


def test_the_cancel_region_command_cancels_a_region_before_it_starts(target: Target,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url_args = ["--url", target[0]] if target[0] else []
    eng, worker = engine(target)
    wf = make_workflow(make_stage("root", "work"), in_region("e", ("root",)))
    eng.client.submit(wf)  # nothing processed yet: e has not started
    assert cli_main(["cancel_region", *url_args, "--namespace", target[1], wf.id, "evidence"]) == 0
    assert "CancelRegion 'evidence'" in capsys.readouterr().out
    assert cli_main(["cancel_region", *url_args, "--namespace", target[1], "no-such-workflow", "evidence"]) == 1
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert stage_named(done, "e").status == S.CANCELED and "e" not in worker.runs
    assert done.status == S.CANCELED
