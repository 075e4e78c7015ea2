"""``client.submit`` starts a workflow and its initial stages in the submit itself; the rules
StartWorkflow and StartStage would apply still hold."""

from __future__ import annotations

from stabilize_redis import TaskResult, WorkflowStatus
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named
from tests.integration.test_redelivery import DisabledOptional


def test_submitted_initial_stage_with_a_disabled_skippable_task_skips_it(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    disabled = DisabledOptional()
    eng.registry.register("off", disabled)
    eng.registry.register("t", lambda stage: TaskResult.success(outputs={"after": True}))
    wf = make_workflow(make_stage("first", "off"), make_stage("second", requires={"first"}))
    eng.client.submit(wf)
    eng.processor.process_all(timeout=10)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert stage_named(result, "first").tasks[0].status == WorkflowStatus.SKIPPED
    assert disabled.ran == 0
    assert stage_named(result, "second").outputs == {"after": True}


def test_submitted_initial_stage_disabled_by_stage_enabled_is_skipped(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    ran: list[str] = []
    eng.registry.register("t", lambda stage: (ran.append(stage.ref_id), TaskResult.success())[1])
    wf = make_workflow(make_stage("first", context={"stageEnabled": False}),
                       make_stage("second", requires={"first"}))
    eng.client.submit(wf)
    assert wf.status == WorkflowStatus.NOT_STARTED  # the caller's object is left as given
    eng.processor.process_all(timeout=10)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert stage_named(result, "first").status == WorkflowStatus.SKIPPED
    assert ran == ["second"]
    events = [e["event_type"] for e in eng.events(wf.id)]
    assert events.count("workflow.started") == 1 and events.count("stage.skipped") == 1
