"""Synthetic stages and stage definition builders: before-stages, after-stages, on-failure stages.

Each test runs the engine end to end (real Redis and the embedded default) and checks what a user
sees: which tasks ran and in which order, stage and workflow statuses, and the values a
synthetic stage sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskExecution, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.dag.graph import StageGraphBuilder
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.stages import StageDefinitionBuilder, get_default_factory, register_builder
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]
BEFORE, AFTER = SyntheticStageOwner.STAGE_BEFORE, SyntheticStageOwner.STAGE_AFTER


class Recorder(Task):
    """Records the ref id of every stage it runs for, with the context it saw; fails TERMINAL for
    the ref ids in ``failing``; a stage whose context has ``jump_once_to`` jumps there once."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.order: list[str] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.jumped = False
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.order.append(stage.ref_id)
            self.seen[stage.ref_id] = dict(stage.context)
        if stage.ref_id in self.failing:
            return TaskResult.terminal(f"{stage.ref_id} failed")
        target = stage.context.get("jump_once_to")
        if target and not self.jumped:
            self.jumped = True
            return TaskResult.jump_to(target)
        return TaskResult.success(outputs={f"{stage.ref_id}_done": True})


def task(name: str = "rec") -> TaskExecution:
    return TaskExecution.create(name=f"{name} task", implementing_class=name, stage_start=True, stage_end=True)


def child(parent: StageExecution, ref: str, owner: SyntheticStageOwner, requires: tuple[str, ...] = (),
          **context: Any) -> StageExecution:
    return StageExecution.create_synthetic(ref, ref.title(), parent, owner, context=dict(context), tasks=[task()],
                                           ref_id=ref, requisite_stage_ref_ids=set(requires))


def engine(target: Target, rec: Recorder) -> Engine:
    eng = make_engine(target)
    eng.registry.register("rec", rec)
    return eng


@pytest.fixture
def builders() -> Iterator[list[str]]:
    """Stage types registered by a test; unregistered afterwards."""
    types: list[str] = []
    yield types
    for stage_type in types:
        get_default_factory().unregister(stage_type)


def with_children(parent: StageExecution, *children: StageExecution, others: tuple[StageExecution, ...] = ()
                  ) -> Workflow:
    return make_workflow(parent, *children, *others)


def test_before_stages_run_in_dependency_order_then_the_tasks_then_the_after_stages(target: Target) -> None:
    rec = Recorder()
    eng = engine(target, rec)
    deploy = make_stage("deploy", "rec")
    down = make_stage("verify", "rec", ["deploy"])
    wf = eng.run(with_children(deploy, child(deploy, "setup", BEFORE), child(deploy, "check", BEFORE, ("setup",)),
                               child(deploy, "notify", AFTER), others=(down,)))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["setup", "check", "deploy", "notify", "verify"]
    assert all(s.status == WorkflowStatus.SUCCEEDED for s in wf.stages)
    assert wf.end_time is not None and wf.end_time >= (stage_named(wf, "notify").end_time or 0)


def test_a_failing_before_stage_prevents_the_parent_tasks_and_its_after_stages(target: Target) -> None:
    rec = Recorder(failing={"check"})
    eng = engine(target, rec)
    deploy = make_stage("deploy", "rec")
    wf = eng.run(with_children(deploy, child(deploy, "check", BEFORE), child(deploy, "notify", AFTER),
                               others=(make_stage("verify", "rec", ["deploy"]),)))
    assert rec.order == ["check"]
    assert wf.status == WorkflowStatus.TERMINAL
    assert stage_named(wf, "deploy").status == WorkflowStatus.TERMINAL
    assert stage_named(wf, "deploy").tasks[0].status == WorkflowStatus.NOT_STARTED
    assert stage_named(wf, "notify").status == WorkflowStatus.NOT_STARTED


class Deploy(StageDefinitionBuilder):
    """Builds its stage's task, a validation before it, a notification after success and a
    rollback on failure."""

    def __init__(self, stage_type: str) -> None:
        self._type = stage_type

    @property
    def type(self) -> str:
        return self._type

    def build_tasks(self, stage: StageExecution) -> list[TaskExecution]:
        return [task()]

    def before_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        graph.add(StageExecution.create_synthetic("validate", "Validate", stage, BEFORE, tasks=[task()],
                                                  ref_id="validate"))

    def after_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        graph.add(StageExecution.create_synthetic("notify", "Notify", stage, AFTER, tasks=[task()],
                                                  ref_id="notify"))

    def on_failure_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        graph.append(StageExecution.create_synthetic("rollback", "Rollback", stage, AFTER, tasks=[task()],
                                                     ref_id="rollback"))
        graph.append(StageExecution.create_synthetic("alert", "Alert", stage, AFTER, tasks=[task()], ref_id="alert"))


def test_a_builder_gives_a_stage_without_tasks_its_tasks_and_its_stages(target: Target,
                                                                         builders: list[str]) -> None:
    register_builder(Deploy("deploy-ok"))
    builders.append("deploy-ok")
    rec = Recorder()
    eng = engine(target, rec)
    build = make_stage("build", "rec")
    deploy = StageExecution(ref_id="deploy", type="deploy-ok", name="Deploy", requisite_stage_ref_ids={"build"},
                            context={"env": "prod"})
    wf = eng.run(make_workflow(build, deploy))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["build", "validate", "deploy", "notify"]
    assert "rollback" not in {s.ref_id for s in wf.stages}
    assert [t.implementing_class for t in stage_named(wf, "deploy").tasks] == ["rec"]
    # a synthetic stage sees its parent's ancestors' outputs, and its parent's own outputs after it ran
    assert rec.seen["validate"]["build_done"] is True
    assert rec.seen["notify"]["deploy_done"] is True


def test_on_failure_stages_run_in_order_only_when_the_stage_fails(target: Target, builders: list[str]) -> None:
    register_builder(Deploy("deploy-bad"))
    builders.append("deploy-bad")
    rec = Recorder(failing={"deploy"})
    eng = engine(target, rec)
    wf = eng.run(make_workflow(StageExecution(ref_id="deploy", type="deploy-bad", name="Deploy")))
    assert rec.order == ["validate", "deploy", "rollback", "alert"]
    assert wf.status == WorkflowStatus.TERMINAL
    assert stage_named(wf, "deploy").status == WorkflowStatus.TERMINAL
    assert stage_named(wf, "rollback").status == WorkflowStatus.SUCCEEDED
    assert "notify" not in {s.ref_id for s in wf.stages}


def test_nested_synthetic_stages_run_innermost_first(target: Target) -> None:
    rec = Recorder()
    eng = engine(target, rec)
    deploy = make_stage("deploy", "rec")
    prepare = child(deploy, "prepare", BEFORE)
    fetch = child(prepare, "fetch", BEFORE)
    cleanup = child(prepare, "cleanup", AFTER)
    wf = eng.run(with_children(deploy, prepare, fetch, cleanup))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["fetch", "prepare", "cleanup", "deploy"]


def test_a_backward_jump_resets_and_reruns_the_synthetic_stages_of_the_stage_it_reruns(target: Target) -> None:
    rec = Recorder()
    eng = engine(target, rec)
    deploy = make_stage("deploy", "rec")
    wf = eng.run(with_children(deploy, child(deploy, "setup", BEFORE), child(deploy, "notify", AFTER),
                               others=(make_stage("verify", "rec", ["deploy"], {"jump_once_to": "deploy"}),)))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["setup", "deploy", "notify", "verify"] * 2
    assert all(s.status == WorkflowStatus.SUCCEEDED for s in wf.stages)


def test_a_synthetic_stage_added_while_its_parent_runs_runs_after_the_parent_tasks(target: Target) -> None:
    rec = Recorder()
    eng = engine(target, rec)

    class AddsAfterStage(Task):
        def execute(self, stage: StageExecution) -> TaskResult:
            rec.order.append(stage.ref_id)
            eng.store.add_stage(child(stage, "report", AFTER))
            return TaskResult.success()

    eng.registry.register("adds", AddsAfterStage())
    wf = eng.run(make_workflow(make_stage("deploy", "adds"), make_stage("verify", "rec", ["deploy"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["deploy", "report", "verify"]
    report = stage_named(wf, "report")
    assert report.parent_stage_id == stage_named(wf, "deploy").id and report.status == WorkflowStatus.SUCCEEDED


def test_a_builder_that_raises_fails_its_stage_with_the_error(target: Target, builders: list[str]) -> None:
    class Broken(StageDefinitionBuilder):
        @property
        def type(self) -> str:
            return "broken"

        def before_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
            raise RuntimeError("no validation configured")

    register_builder(Broken())
    builders.append("broken")
    rec = Recorder()
    eng = engine(target, rec)
    wf = eng.run(make_workflow(StageExecution(ref_id="deploy", type="broken", name="Deploy", tasks=[task()])))
    assert wf.status == WorkflowStatus.TERMINAL
    assert rec.order == []
    assert "no validation configured" in stage_named(wf, "deploy").context["exception"]["details"]["error"]


class FailsOnce(Task):
    def __init__(self) -> None:
        self.runs = 0

    def execute(self, stage: StageExecution) -> TaskResult:
        self.runs += 1
        return TaskResult.terminal("first try fails") if self.runs == 1 else TaskResult.success()


def test_a_restarted_stage_runs_its_before_stages_again(target: Target) -> None:
    rec, flaky = Recorder(), FailsOnce()
    eng = engine(target, rec)
    eng.registry.register("flaky", flaky)
    deploy = make_stage("deploy", "flaky")
    failed = eng.run(with_children(deploy, child(deploy, "pre", BEFORE)))
    assert failed.status == WorkflowStatus.TERMINAL and rec.order == ["pre"]
    eng.client.restart(failed.id, "deploy")
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(failed.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert rec.order == ["pre", "pre"] and flaky.runs == 2


class Polls(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.running()


def test_canceling_a_running_before_stage_ends_its_parent_instead_of_leaving_it_waiting(target: Target) -> None:
    from stabilize_redis.queue.messages import CancelStage

    rec = Recorder()
    eng = engine(target, rec)
    eng.registry.register("polls", Polls())
    deploy = make_stage("deploy")
    pre = StageExecution.create_synthetic("pre", "Pre", deploy, BEFORE, tasks=[task("polls")], ref_id="pre")
    wf = with_children(deploy, pre)
    eng.start(wf)
    for _ in range(20):
        eng.processor.process_one()
        if stage_named(eng.store.retrieve(wf.id), "pre").status == WorkflowStatus.RUNNING:
            break
    eng.queue.push(CancelStage(execution_id=wf.id, stage_id=pre.id))
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert stage_named(done, "pre").status == WorkflowStatus.CANCELED
    assert stage_named(done, "deploy").status.is_complete and rec.order == []
    assert done.status.is_complete
