"""RestartStage, ``Client.restart``, ``Orchestrator.restart_stage`` and ``stabilize-redis restart``.

Each test runs the engine end to end (real Redis and the embedded default) and checks what an
operator sees: statuses, how often each task ran, the workflow's completion events, and what a
refused or stale message leaves behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from stabilize_redis import Orchestrator, StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.errors import StageError, WorkflowNotFoundError
from stabilize_redis.queue.messages import CompleteTask, RestartStage, new_message_id
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until
from workers.cli import main as cli_main

Target = tuple[str | None, str]


class Counted(Task):
    """Runs ``step(stage, n)`` on the n-th execution (1-based) of each stage ref id."""

    def __init__(self, step: Callable[[StageExecution, int], TaskResult]) -> None:
        self.step = step
        self.runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            n = self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1
        return self.step(stage, n)


def ok(stage: StageExecution, n: int) -> TaskResult:
    return TaskResult.success(outputs={f"{stage.ref_id}_run": n})


def fails_first(stage: StageExecution, n: int) -> TaskResult:
    return TaskResult.terminal("flaky dependency") if n == 1 else TaskResult.success(outputs={"built": n})


def engine(target: Target, **tasks: Task) -> Engine:
    eng = make_engine(target)
    for name, task in tasks.items():
        eng.registry.register(name, task)
    return eng


def completions(eng: Engine, wf_id: str) -> list[str]:
    return [e["event_type"] for e in eng.events(wf_id)
            if e["event_type"] in ("workflow.completed", "workflow.failed", "workflow.canceled")]


def diamond() -> Workflow:
    # plan -> side -> build -> test -> join -> report, and side -> join: join also waits on side,
    # a branch outside build's scope, and report lies beyond join.
    return make_workflow(
        make_stage("plan", "plain"), make_stage("side", "plain", ["plan"]),
        make_stage("build", "flaky", ["plan", "side"]), make_stage("test", "plain", ["build"]),
        make_stage("join", "plain", ["test", "side"]), make_stage("report", "plain", ["join"]))


def test_restart_after_a_terminal_failure_reruns_the_stage_and_its_downstreams_and_the_workflow_succeeds(
        target: Target) -> None:
    plain, flaky = Counted(ok), Counted(fails_first)
    eng = engine(target, plain=plain, flaky=flaky)
    failed = eng.run(diamond())
    assert failed.status == WorkflowStatus.TERMINAL and failed.end_time is not None
    assert [stage_named(failed, r).status for r in ("build", "test", "join", "report")] == [
        WorkflowStatus.TERMINAL, WorkflowStatus.NOT_STARTED, WorkflowStatus.NOT_STARTED, WorkflowStatus.NOT_STARTED]

    assert eng.client.restart(failed.id, "build") == stage_named(failed, "build").id
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(failed.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert all(s.status == WorkflowStatus.SUCCEEDED for s in done.stages)
    assert flaky.runs == {"build": 2}
    assert plain.runs == {"plan": 1, "side": 1, "test": 1, "join": 1, "report": 1}
    build = stage_named(done, "build")
    assert build.outputs == {"built": 2} and "error" not in build.tasks[0].task_exception_details
    assert done.end_time is not None and done.end_time >= (failed.end_time or 0)
    restarted = eng.events(done.id, "stage.restarted")
    assert len(restarted) == 1
    assert restarted[0]["data"]["previous_status"] == "TERMINAL"
    # build's scope is reset; join (it also waits on side) and report never ran because build
    # halted: they are re-armed by the recount and run once each after test (checked above)
    assert restarted[0]["data"]["reset"] == ["build", "test"]


def test_restart_re_arms_completion_exactly_once(target: Target) -> None:
    # A finished workflow is restarted twice in a row before a worker runs: the first restart
    # reopens it, the second finds the stage running again and is refused. The workflow ends
    # once more - one completion per end, never two.
    plain, flaky = Counted(ok), Counted(fails_first)
    eng = engine(target, plain=plain, flaky=flaky)
    wf = eng.run(make_workflow(make_stage("a", "plain"), make_stage("b", "flaky", ["a"]),
                               make_stage("c", "plain", ["b"])))
    assert wf.status == WorkflowStatus.TERMINAL
    eng.client.restart(wf.id, "b")
    eng.client.restart(wf.id, "b")
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert completions(eng, wf.id) == ["workflow.failed", "workflow.completed"]
    assert flaky.runs == {"b": 2} and plain.runs == {"a": 1, "c": 1}
    refused = eng.events(wf.id, "stage.restart_refused")
    assert [e["data"]["reason"] for e in refused] == ["it has not finished (it is RUNNING)"]

    # A succeeded workflow can be restarted too; it completes exactly once more.
    Orchestrator(eng.queue, store=eng.store).restart_stage(done, stage_named(done, "c").id)
    eng.processor.process_all(timeout=20)
    again = eng.store.retrieve(wf.id)
    assert again.status == WorkflowStatus.SUCCEEDED
    assert completions(eng, wf.id) == ["workflow.failed", "workflow.completed", "workflow.completed"]
    assert plain.runs == {"a": 1, "c": 2}


def test_a_stale_message_of_the_old_run_is_discarded(target: Target) -> None:
    # After the restart, a CompleteTask of the old run (its attempt token) arrives while the
    # new run is still waiting: it must not end the new run.
    release = threading.Event()

    def gate(stage: StageExecution, n: int) -> TaskResult:
        if n == 1:
            return TaskResult.terminal("first run fails")
        return TaskResult.success(outputs={"run": n}) if release.is_set() else TaskResult.running()

    eng = engine(target, gate=Counted(gate))
    wf = eng.run(make_workflow(make_stage("g", "gate")))
    assert wf.status == WorkflowStatus.TERMINAL
    stage = stage_named(wf, "g")
    old_run = eng.store.backend.read(wf.id, [stage.id]).stages[stage.id].attempt
    eng.client.restart(wf.id, "g")
    wait_until(lambda: eng.processor.process_one() is not None
               and stage_named(eng.store.retrieve(wf.id), "g").status == WorkflowStatus.RUNNING,
               10, "the new run to start")
    stale_id = new_message_id()
    eng.queue.push(CompleteTask(execution_id=wf.id, stage_id=stage.id, task_id=stage.tasks[0].id,
                                status=WorkflowStatus.TERMINAL, attempt_token=old_run, message_id=stale_id))
    wait_until(lambda: eng.processor.process_one() is not None and eng.store.is_message_processed(stale_id, wf.id),
               10, "the stale CompleteTask to be handled")
    assert stage_named(eng.store.retrieve(wf.id), "g").status == WorkflowStatus.RUNNING
    release.set()
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert stage_named(done, "g").outputs["run"] >= 2  # a run of the new pass ended it


def test_restart_of_a_canceled_workflow_is_refused_and_it_stays_canceled(target: Target) -> None:
    hold = Counted(lambda s, n: TaskResult.running())
    eng = engine(target, hold=hold)
    wf = make_workflow(make_stage("h", "hold"))
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() is not None and hold.runs.get("h"), 10, "h to run")
    eng.client.cancel(wf.id, user="ops", reason="rollback")
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.CANCELED
    eng.client.restart(wf.id, "h")
    eng.processor.process_all(timeout=20)
    after = eng.store.retrieve(wf.id)
    assert after.status == WorkflowStatus.CANCELED and stage_named(after, "h").status == WorkflowStatus.CANCELED
    assert [e["data"]["reason"] for e in eng.events(wf.id, "stage.restart_refused")] == ["the workflow was canceled"]


def test_restart_names_a_missing_workflow_or_stage(target: Target) -> None:
    eng = engine(target, plain=Counted(ok))
    wf = eng.run(make_workflow(make_stage("a", "plain")))
    with pytest.raises(WorkflowNotFoundError, match="not in Redis"):
        eng.client.restart("01NOSUCHWORKFLOW", "a")
    with pytest.raises(StageError, match="no stage with id or ref id 'zz'"):
        eng.client.restart(wf.id, "zz")
    # Pushed directly, a RestartStage of a workflow that does not exist is dead-lettered naming it.
    eng.queue.push(RestartStage(execution_id="01NOSUCHWORKFLOW", stage_id="s1"))
    eng.processor.process_all(timeout=20)
    dead = eng.queue.list_dlq(message_type="RestartStage")
    assert len(dead) == 1 and dead[0]["reason"] == "unknown_target"
    assert "workflow 01NOSUCHWORKFLOW does not exist" in dead[0]["error"]


def test_the_cli_restart_command_enqueues_a_restart_by_ref_id(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    flaky = Counted(fails_first)
    eng = engine(target, flaky=flaky)
    wf = eng.run(make_workflow(make_stage("only", "flaky")))
    assert wf.status == WorkflowStatus.TERMINAL
    url_args = ["--url", target[0]] if target[0] else []
    assert cli_main(["restart", *url_args, "--namespace", target[1], wf.id, "only"]) == 0
    assert "enqueued" in capsys.readouterr().out
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    assert cli_main(["restart", *url_args, "--namespace", target[1], wf.id, "nope"]) == 1
