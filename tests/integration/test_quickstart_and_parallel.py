"""The stabilize README's Quick Start and "Parallel Stages" examples, end to end."""

from __future__ import annotations

from typing import Any

from stabilize_redis import (
    Orchestrator,
    QueueProcessor,
    RedisQueue,
    RedisWorkflowStore,
    StageExecution,
    Task,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from tests.integration.support import (
    FAST,
    count_by_entity,
    make_engine,
    make_stage,
    make_workflow,
    ms,
    stage_named,
)


class HelloTask(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        name = stage.context.get("name", "World")
        return TaskResult.success(outputs={"greeting": f"Hello, {name}!"})


def test_readme_quick_start_greets_and_succeeds(target: tuple[str | None, str]) -> None:
    url, ns = target
    workflow = Workflow.create(
        application="my-app",
        name="Hello Workflow",
        stages=[
            StageExecution(
                ref_id="1",
                type="hello",
                name="Say Hello",
                tasks=[TaskExecution.create(name="Hello Task", implementing_class="hello",
                                            stage_start=True, stage_end=True)],
                context={"name": "Stabilize"},
            ),
        ],
    )
    store = RedisWorkflowStore(url, namespace=ns)
    queue = RedisQueue(url, namespace=ns)
    registry = TaskRegistry()
    registry.register("hello", HelloTask)
    processor = QueueProcessor(queue, store=store, task_registry=registry, engine_config=FAST)
    orchestrator = Orchestrator(queue)

    store.store(workflow)
    orchestrator.start(workflow)
    processor.process_all(timeout=10.0)

    result = store.retrieve(workflow.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert result.stages[0].status == WorkflowStatus.SUCCEEDED
    assert result.stages[0].outputs == {"greeting": "Hello, Stabilize!"}
    assert result.stages[0].tasks[0].status == WorkflowStatus.SUCCEEDED
    assert queue.size() == 0


def test_quick_start_through_an_orchestrator_with_a_store_stores_and_runs(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    eng.registry.register("hello", HelloTask)
    wf = make_workflow(make_stage("1", "hello", context={"name": "Redis"}))

    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    assert result.stages[0].outputs == {"greeting": "Hello, Redis!"}
    assert result.start_time is not None and result.end_time is not None
    assert result.end_time >= result.start_time


class Recorder(Task):
    """Emits per-stage outputs and records the context each stage saw."""

    outputs: dict[str, dict[str, Any]] = {
        "setup": {"artifacts": ["base"], "version": "setup", "env": "ci"},
        "test": {"artifacts": ["base", "test-report"], "version": "test", "tests_passed": 12},
        "lint": {"artifacts": ["lint-report"], "version": "lint", "warnings": 0},
    }

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def execute(self, stage: StageExecution) -> TaskResult:
        self.seen[stage.ref_id] = dict(stage.context)
        if stage.ref_id == "deploy":
            return TaskResult.success(outputs={"deployed": True, "saw_artifacts": stage.context["artifacts"]})
        return TaskResult.success(outputs=self.outputs[stage.ref_id])


def diamond() -> Workflow:
    #     Setup
    #    /     \
    #  Test   Lint
    #    \     /
    #    Deploy
    return make_workflow(
        make_stage("setup", "rec"),
        make_stage("test", "rec", requires={"setup"}),
        make_stage("lint", "rec", requires={"setup"}),
        make_stage("deploy", "rec", requires={"test", "lint"}, context={"target": "prod"}),
        name="CI/CD Pipeline",
    )


def test_parallel_diamond_runs_every_stage_and_deploy_last(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    rec = Recorder()
    eng.registry.register("rec", rec)
    wf = diamond()

    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    assert {s.ref_id: s.status for s in result.stages} == {r: WorkflowStatus.SUCCEEDED for r in
                                                          ("setup", "test", "lint", "deploy")}
    deploy, test, lint = (stage_named(result, r) for r in ("deploy", "test", "lint"))
    assert ms(deploy.start_time) >= max(ms(test.end_time), ms(lint.end_time))
    assert ms(stage_named(result, "setup").end_time) <= min(ms(test.start_time), ms(lint.start_time))


def test_parallel_diamond_deploy_sees_merged_ancestor_outputs(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    rec = Recorder()
    eng.registry.register("rec", rec)
    wf = diamond()

    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    seen = rec.seen["deploy"]
    # Lists concatenate without duplicates, in topological order (setup, test, lint).
    assert seen["artifacts"] == ["base", "test-report", "lint-report"]
    # Other keys: last wins in topological order (lint is after test in the stage list).
    assert seen["version"] == "lint"
    assert seen["env"] == "ci" and seen["tests_passed"] == 12 and seen["warnings"] == 0
    # The stage's own context is kept on top of its ancestors' outputs.
    assert seen["target"] == "prod"
    # Test and lint each see only setup's outputs, not their sibling's.
    assert rec.seen["test"]["version"] == "setup" and "warnings" not in rec.seen["test"]
    assert rec.seen["lint"]["version"] == "setup" and "tests_passed" not in rec.seen["lint"]
    assert stage_named(result, "deploy").outputs == {
        "deployed": True, "saw_artifacts": ["base", "test-report", "lint-report"]}
    # The workflow-level merge agrees with what deploy saw.
    merged = result.get_context()
    assert merged["artifacts"] == ["base", "test-report", "lint-report"]
    assert merged["deployed"] is True


def test_parallel_diamond_event_log_has_each_transition_once(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    eng.registry.register("rec", Recorder())
    wf = diamond()

    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    events = eng.events(wf.id)
    stage_ids = {s.id for s in result.stages}
    assert count_by_entity(events, "stage.started") == dict.fromkeys(stage_ids, 1)
    assert count_by_entity(events, "stage.completed") == dict.fromkeys(stage_ids, 1)
    task_ids = {t.id for s in result.stages for t in s.tasks}
    assert count_by_entity(events, "task.started") == dict.fromkeys(task_ids, 1)
    assert count_by_entity(events, "task.completed") == dict.fromkeys(task_ids, 1)
    assert count_by_entity(events, "workflow.created") == {wf.id: 1}
    assert count_by_entity(events, "workflow.started") == {wf.id: 1}
    assert count_by_entity(events, "workflow.completed") == {wf.id: 1}
    assert not [e for e in events if e["event_type"] in ("stage.failed", "workflow.failed", "task.failed")]
    # The log is in causal order: created, started ... completed.
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "workflow.created" and kinds[1] == "workflow.started"
    assert kinds[-1] == "workflow.completed"
    by_ref = {s.id: s.ref_id for s in result.stages}
    started_order = [by_ref[e["entity_id"]] for e in events if e["event_type"] == "stage.started"]
    assert started_order[0] == "setup" and started_order[-1] == "deploy"
    completed = next(e for e in events if e["event_type"] == "stage.completed"
                     and e["entity_id"] == stage_named(result, "deploy").id)
    assert completed["data"]["status"] == "SUCCEEDED"
    assert "outputs" not in completed["data"]  # the stage record holds them, not the event
    assert stage_named(result, "deploy").outputs["deployed"] is True
