"""stabilize's recovery API on this engine: ``WorkflowRecovery``, ``recover_on_startup`` and the
processor's ``run_recovery`` / ``recover_on_start`` / periodic recovery. A pending workflow with
no message anywhere gets the messages its state needs, once; one with a message is left alone.
Real Redis and the embedded default."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest.mock import patch

from stabilize_redis import (
    QueueProcessor,
    QueueProcessorConfig,
    TaskResult,
    Workflow,
    WorkflowStatus,
    recover_on_startup,
)
from stabilize_redis.persistence.store import WorkflowCriteria
from stabilize_redis.queue.messages import RunTask, StartWorkflow
from stabilize_redis.recovery import WorkflowRecovery
from tests.integration.support import Engine, make_engine, make_stage, stage_named

Target = tuple[str | None, str]
APP = "recovery-test-app"


def now_ms() -> int:
    return int(time.time() * 1000)


def engine(target: Target) -> Engine:
    eng = make_engine(target)
    eng.registry.register("success", lambda stage: TaskResult.success(outputs={"ran": stage.ref_id}))
    return eng


def workflow(name: str = "wf", app: str = APP) -> Workflow:
    return Workflow.create(application=app, name=name, stages=[make_stage("s1", "success")])


def stored_running_with_running_task(eng: Engine, app: str = APP) -> Workflow:
    """A workflow that 'crashed' with its stage and task RUNNING and no message left."""
    wf = workflow(app=app)
    wf.status = WorkflowStatus.RUNNING
    wf.start_time = now_ms()
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    stage.status = WorkflowStatus.RUNNING
    stage.start_time = now_ms()
    stage.tasks[0].status = WorkflowStatus.RUNNING
    stage.tasks[0].start_time = now_ms()
    eng.store.store_stage(stage)
    return wf


def test_get_all_pending_workflows_returns_running_and_not_started_ones(target: Target) -> None:
    eng = engine(target)
    running, not_started, done = workflow("running"), workflow("not-started"), workflow("done")
    running.status, running.start_time = WorkflowStatus.RUNNING, now_ms()
    done.status, done.start_time = WorkflowStatus.SUCCEEDED, now_ms()
    for wf in (running, not_started, done):
        eng.store.store(wf)

    criteria = WorkflowCriteria(statuses={WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED}, page_size=100)
    ids = {wf.id for wf in eng.store.get_all_pending_workflows(criteria)}
    assert running.id in ids and not_started.id in ids and done.id not in ids


def test_a_running_workflow_with_no_message_is_recovered_and_then_finishes(target: Target) -> None:
    eng = engine(target)
    wf = stored_running_with_running_task(eng)

    results = WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(application=APP)

    assert [(r.workflow_id, r.status) for r in results] == [(wf.id, "recovered")]
    assert results[0].stages_requeued == 1 and "RunTask" in results[0].message
    polled = eng.queue.poll_one()
    assert isinstance(polled, RunTask) and polled.task_id == wf.stages[0].tasks[0].id
    eng.queue.reschedule(polled, 0)
    eng.processor.process_all(timeout=10)
    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED and stage_named(result, "s1").outputs == {"ran": "s1"}


def test_a_stored_workflow_that_never_started_is_started_by_recovery(target: Target) -> None:
    eng = engine(target)
    wf = workflow("ns")
    eng.store.store(wf)

    results = WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(application=APP)

    assert [r.status for r in results] == ["recovered"] and eng.queue.size() == 1
    eng.processor.process_all(timeout=10)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED


def test_a_completed_workflow_is_not_recovered(target: Target) -> None:
    eng = engine(target)
    wf = workflow("done")
    wf.status, wf.start_time = WorkflowStatus.SUCCEEDED, now_ms()
    eng.store.store(wf)

    results = WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(application=APP)

    assert all(r.workflow_id != wf.id for r in results) and eng.queue.size() == 0


def test_recovering_twice_pushes_nothing_the_second_time(target: Target) -> None:
    eng = engine(target)
    stored_running_with_running_task(eng)
    recovery = WorkflowRecovery(eng.store, eng.queue)

    recovery.recover_pending_workflows(application=APP)
    size = eng.queue.size()
    second = recovery.recover_pending_workflows(application=APP)

    assert size == 1 and eng.queue.size() == size and [r.status for r in second] == ["skipped"]


def test_a_not_started_workflow_whose_start_is_queued_is_skipped(target: Target) -> None:
    eng = engine(target)
    wf = workflow("once", app="rec-ns")
    eng.store.store(wf)
    first = WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(application="rec-ns")
    assert [r.status for r in first] == ["recovered"]
    message = eng.queue.poll_one()
    assert isinstance(message, StartWorkflow) and message.execution_id == wf.id
    eng.queue.reschedule(message, timedelta(seconds=0))

    second = WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(application="rec-ns")

    assert [r.status for r in second] == ["skipped"] and eng.queue.size() == 1


def test_workflows_started_before_the_age_window_are_not_candidates(target: Target) -> None:
    eng = engine(target)
    old = workflow("old")
    old.status, old.start_time = WorkflowStatus.RUNNING, now_ms() - 100 * 3600 * 1000
    eng.store.store(old)
    recent = stored_running_with_running_task(eng)

    for application in (None, APP):
        recovery = WorkflowRecovery(eng.store, eng.queue, max_recovery_age_hours=1.0)
        ids = {r.workflow_id for r in recovery.recover_pending_workflows(application)}
        assert old.id not in ids and recent.id in ids


def test_recovery_examines_every_workflow_beyond_its_batch_size(target: Target) -> None:
    eng = engine(target)
    ids = set()
    for _ in range(15):
        wf = workflow(app="rec-all")
        eng.store.store(wf)
        ids.add(wf.id)
    other = workflow(app="someone-else")
    eng.store.store(other)

    results = WorkflowRecovery(eng.store, eng.queue, batch_size=2).recover_pending_workflows("rec-all")

    assert {r.workflow_id for r in results if r.status == "recovered"} == ids
    assert other.id not in {r.workflow_id for r in results}


def test_a_workflow_that_cannot_be_read_fails_alone(target: Target) -> None:
    eng = engine(target)
    broken, fine = workflow("broken"), workflow("fine")
    for wf in (broken, fine):
        eng.store.store(wf)
    backend = eng.store.backend
    backend.client.hset(backend.part(broken.id).workflow(broken.id), f"s:{broken.stages[0].id}", b"\xc1garbage")

    results = {r.workflow_id: r for r in WorkflowRecovery(eng.store, eng.queue).recover_pending_workflows(APP)}

    assert results[broken.id].status == "failed" and results[broken.id].message
    assert results[fine.id].status == "recovered"


def test_recover_on_startup_recovers(target: Target) -> None:
    eng = engine(target)
    stored_running_with_running_task(eng)

    results = recover_on_startup(eng.store, eng.queue, application=APP)

    assert any(r.status == "recovered" for r in results)


def test_processor_run_recovery_requeues_and_works_without_a_store(target: Target) -> None:
    eng = engine(target)
    assert QueueProcessor(eng.queue).run_recovery() == []
    stored_running_with_running_task(eng)

    results = QueueProcessor(eng.queue, store=eng.store).run_recovery()

    assert any(r.status == "recovered" for r in results) and eng.queue.size() == 1


def test_recover_on_start_runs_recovery_once_and_is_off_by_default(target: Target) -> None:
    eng = engine(target)
    enabled = QueueProcessor(eng.queue, config=QueueProcessorConfig(recover_on_start=True), store=eng.store)
    with patch.object(enabled, "run_recovery", wraps=enabled.run_recovery) as spy:
        enabled.start()
        try:
            assert spy.call_count == 1
        finally:
            enabled.stop()
    default = QueueProcessor(eng.queue, store=eng.store)
    with patch.object(default, "run_recovery") as spy:
        default.start()
        try:
            assert spy.call_count == 0
        finally:
            default.stop()


def test_periodic_recovery_runs_on_a_thread_only_when_enabled(target: Target) -> None:
    eng = engine(target)
    plain = QueueProcessor(eng.queue, store=eng.store)
    plain.start()
    try:
        assert plain._recovery_thread is None
    finally:
        plain.stop()
    periodic = QueueProcessor(eng.queue, config=QueueProcessorConfig(recovery_interval_seconds=10.0), store=eng.store)
    periodic.start()
    try:
        assert periodic._recovery_thread is not None and periodic._recovery_thread.is_alive()
    finally:
        periodic.stop()
    assert periodic._recovery_thread is None


def test_a_custom_stabilize_handler_runs_and_its_message_is_acked_once(target: Target) -> None:
    from stabilize_redis import StabilizeHandler
    from stabilize_redis.queue.messages import CancelRegion, Message

    eng = engine(target)
    seen: list[str] = []

    class Audit(StabilizeHandler):
        @property
        def message_type(self) -> type[Message]:
            return CancelRegion

        def handle(self, message: Message) -> None:
            seen.append(message.workflow_id)

    processor = QueueProcessor(eng.queue, store=eng.store, task_registry=eng.registry)
    processor.replace_handler(Audit(eng.queue, eng.store))
    eng.queue.push(CancelRegion(execution_id="wf-audit", region="r", message_id="audit-1"))
    eng.queue.push(CancelRegion(execution_id="wf-audit", region="r", message_id="audit-1"))  # a redelivery
    processor.process_all(timeout=5)

    assert seen == ["wf-audit"] and eng.queue.size() == 0 and eng.store.is_message_processed("audit-1")
