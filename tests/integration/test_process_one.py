"""``process_one`` handles exactly one message per call, whatever partitions hold messages."""

from __future__ import annotations

from stabilize_redis import TaskResult, WorkflowStatus
from tests.integration.support import make_engine, make_stage, make_workflow


def test_process_one_steps_through_workflows_spread_over_partitions(target: tuple[str | None, str]) -> None:
    eng = make_engine(target)
    eng.registry.register("t", lambda stage: TaskResult.success(outputs={"ok": True}))
    workflows = [make_workflow(make_stage("a"), make_stage("b", requires={"a"})) for _ in range(24)]
    for wf in workflows:
        eng.start(wf)
    assert len({eng.queue.backend.part(wf.id).index for wf in workflows}) > 1

    steps = 0
    while eng.processor.process_one():
        steps += 1
        assert steps <= 24 * 4, "process_one kept finding messages"
        assert eng.queue.counts()["in_flight"] == 0  # nothing taken that this call did not handle

    assert [eng.store.retrieve(wf.id).status for wf in workflows] == [WorkflowStatus.SUCCEEDED] * 24
    assert eng.queue.size() == 0
