"""Events stay lean and, without PostgreSQL, capped: they name what changed and copy nothing the
records hold; readers get the workflow id and time from the stream."""

from __future__ import annotations

from stabilize_redis import TaskResult, WorkflowStatus
from stabilize_redis.config import MemoryPolicy
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]
RealTarget = tuple[str, str]

STAGE_EVENT_KEYS = {"ref_id", "parent_stage_id", "status", "version"}


def test_stage_and_task_events_name_what_changed_without_copying_the_records(target: Target) -> None:
    eng = make_engine(target)
    eng.registry.register("t", lambda stage: TaskResult.success(outputs={"big": "x" * 10_000}))
    wf = eng.run(make_workflow(make_stage("a"), make_stage("b", requires={"a"})))
    assert wf.status == WorkflowStatus.SUCCEEDED
    events = eng.events(wf.id)
    for e in events:
        assert e["workflow_id"] == wf.id and isinstance(e["timestamp"], int) and e["timestamp"] > 0
        assert "x" * 100 not in str(e["data"]), f"{e['event_type']} copies an output"
        if e["event_type"].startswith("stage."):
            assert set(e["data"]) <= STAGE_EVENT_KEYS, e
    completed = [e for e in events if e["event_type"] == "stage.completed"]
    b = stage_named(wf, "b")
    assert {(e["entity_id"], e["data"]["status"]) for e in completed} == {
        (stage_named(wf, "a").id, "SUCCEEDED"), (b.id, "SUCCEEDED")}
    assert b.outputs["big"] == "x" * 10_000  # the stage record holds the outputs
    times = [e["timestamp"] for e in events]
    assert times == sorted(times)


def test_without_postgres_a_workflows_event_stream_is_capped(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    eng.store.backend.memory = MemoryPolicy(event_stream_maxlen=100, finished_ttl_s=0)
    eng.registry.register("t", lambda stage: TaskResult.success())
    chain = [make_stage("s0")] + [make_stage(f"s{i}", requires={f"s{i - 1}"}) for i in range(1, 60)]
    wf = eng.run(make_workflow(*chain), timeout=60)
    assert wf.status == WorkflowStatus.SUCCEEDED
    backend = eng.store.backend
    kept = backend.client.xlen(backend.part(wf.id).events(wf.id))
    # 60 stages make over 240 events; about the cap is kept (MAXLEN ~ trims whole nodes), the newest.
    assert 100 <= kept < 240
    assert eng.events(wf.id)[-1]["event_type"] == "workflow.completed"
