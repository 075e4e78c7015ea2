"""stabilize's WorkflowStore API on Redis: stage writes guarded by version and phase, stages
added and removed at O(changed stages), stage queries, atomic transactions, message dedup,
counting, and pausing a workflow before it starts. Real Redis and the embedded default."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stabilize_redis import (
    ConcurrencyError,
    Orchestrator,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowValidationError,
)
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.queue.messages import Message, StartStage, StartWorkflow
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]


def ok(stage: StageExecution) -> TaskResult:
    return TaskResult.success(outputs={f"out_{stage.ref_id}": stage.ref_id})


def engine(target: Target) -> Engine:
    eng = make_engine(target)
    eng.registry.register("t", ok)
    return eng


def two_task_stage(ref: str) -> StageExecution:
    return StageExecution(ref_id=ref, type="t", name=ref, tasks=[
        TaskExecution.create("a", "t", stage_start=True), TaskExecution.create("b", "t", stage_end=True)])


# -- storing ----------------------------------------------------------------------------------

def test_storing_a_workflow_with_duplicate_ref_ids_raises_and_stores_nothing(target: Target) -> None:
    eng = engine(target)
    wf = Workflow(application="app", name="dup", stages=[make_stage("x"), make_stage("x")])

    with pytest.raises(WorkflowValidationError, match="duplicate_ref"):
        eng.store.store(wf)
    with pytest.raises(WorkflowValidationError, match="duplicate_ref"):
        Orchestrator(eng.queue, eng.store).start(wf)
    assert not eng.store.exists(wf.id) and eng.queue.size() == 0


def test_store_stage_writes_the_stage_of_a_just_stored_workflow_and_raises_its_version(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("one"))
    eng.store.store(wf)
    stage = wf.stages[0]

    stage.status = WorkflowStatus.RUNNING
    stage.outputs = {"output": "value"}
    eng.store.store_stage(stage)

    stored = eng.store.retrieve(wf.id).stages[0]
    assert (stored.status, stored.outputs, stored.version) == (WorkflowStatus.RUNNING, {"output": "value"}, stage.version)
    assert stage.version == 2


def test_a_stale_stage_write_raises_concurrency_error_and_writes_nothing(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(two_task_stage("s"))
    eng.store.store(wf)
    winner = eng.store.retrieve_stage(wf.stages[0].id)
    loser = eng.store.retrieve_stage(wf.stages[0].id)
    winner.tasks[0].status = WorkflowStatus.RUNNING
    eng.store.store_stage(winner)

    version = loser.version
    loser.context["late"] = True
    with pytest.raises(ConcurrencyError):
        eng.store.store_stage(loser)

    reloaded = eng.store.retrieve_stage(loser.id)
    assert "late" not in reloaded.context and reloaded.tasks[0].status == WorkflowStatus.RUNNING
    assert loser.version == version
    fresh = eng.store.retrieve_stage(loser.id)
    fresh.context["late"] = True
    eng.store.store_stage(fresh)
    assert eng.store.retrieve_stage(loser.id).context["late"] is True


def test_a_stage_write_with_an_unexpected_phase_raises_concurrency_error(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("s"))
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    stage.status = WorkflowStatus.RUNNING

    with pytest.raises(ConcurrencyError, match="NOT_STARTED, not RUNNING"):
        eng.store.store_stage(stage, expected_phase="RUNNING")
    eng.store.store_stage(stage, expected_phase="NOT_STARTED")
    assert eng.store.retrieve_stage(stage.id).status == WorkflowStatus.RUNNING


def test_only_a_changed_task_gets_a_new_version_and_a_stale_task_write_is_refused(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(two_task_stage("s"))
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    before = [t.version for t in stage.tasks]

    stage.tasks[0].status = WorkflowStatus.RUNNING
    eng.store.store_stage(stage)

    after = [t.version for t in eng.store.retrieve_stage(stage.id).tasks]
    assert after == [before[0] + 1, before[1]] and [t.version for t in stage.tasks] == after
    stale = eng.store.retrieve_stage(stage.id)
    stale.tasks[0].version -= 1
    stale.version = eng.store.retrieve_stage(stage.id).version
    stale.tasks[0].status = WorkflowStatus.TERMINAL
    with pytest.raises(ConcurrencyError, match="task"):
        eng.store.store_stage(stale)


# -- reading stages ---------------------------------------------------------------------------

def test_retrieve_stage_gives_the_stage_attached_to_a_partial_workflow(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["b"]))
    eng.store.store(wf)
    b_id = wf.stages[1].id
    eng.store.locator.forget([b_id])  # found by probing the namespace, as in a fresh process

    stage = eng.store.retrieve_stage(b_id)

    assert stage.ref_id == "b" and stage.execution.id == wf.id and len(stage.tasks) == 1
    assert sorted(s.ref_id for s in stage.execution.stages) == ["a", "b"]
    assert [s.ref_id for s in stage.upstream_stages()] == ["a"]
    with pytest.raises(ValueError, match="not found"):
        eng.store.retrieve_stage("no-such-stage")


def test_graph_queries_return_direct_neighbours_and_merged_ancestor_outputs(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["a"]),
                       make_stage("d", requires=["b", "c"]))
    eng.store.store(wf)
    outputs = {"a": {"items": ["x", "y"], "v": "a"}, "b": {"items": ["y", "z"], "v": "b"}, "c": {"only_c": 1}}
    for stage in wf.stages:
        if stage.ref_id in outputs:
            stage.outputs = outputs[stage.ref_id]
            stage.status = WorkflowStatus.SUCCEEDED
            eng.store.store_stage(stage)

    assert sorted(s.ref_id for s in eng.store.get_upstream_stages(wf.id, "d")) == ["b", "c"]
    assert sorted(s.ref_id for s in eng.store.get_downstream_stages(wf.id, "a")) == ["b", "c"]
    assert all(len(s.tasks) == 1 for s in eng.store.get_upstream_stages(wf.id, "d"))
    assert eng.store.get_upstream_stages(wf.id, "nope") == []
    assert eng.store.get_synthetic_stages(wf.id, wf.stages[0].id) == []
    merged = eng.store.get_merged_ancestor_outputs(wf.id, "d")
    assert merged["items"] == ["x", "y", "z"] and merged["only_c"] == 1
    assert merged["v"] in {"b", "a"} and eng.store.get_merged_ancestor_outputs(wf.id, "b") == outputs["a"]


# -- adding and removing stages ---------------------------------------------------------------

def test_adding_a_stage_writes_only_it_and_its_neighbours(target: Target) -> None:
    eng = engine(target)
    chain = [make_stage("s0")] + [make_stage(f"s{i}", requires=[f"s{i - 1}"]) for i in range(1, 120)]
    wf = make_workflow(*chain)
    eng.store.store(wf)
    backend = eng.store.backend
    key = backend.part(wf.id).workflow(wf.id)
    versions_before = {k: v for k, v in backend.client.hgetall(key).items() if k.startswith(b"v:")}
    requested: list[str] = []
    real_read = backend.read

    def counting_read(workflow_id: str, stage_ids: Any = (), **kw: Any) -> Any:
        requested.extend(stage_ids)
        return real_read(workflow_id, stage_ids, **kw)

    backend.read = counting_read  # type: ignore[method-assign]
    try:
        extra = make_stage("extra", requires=["s60"])
        extra.execution = wf
        eng.store.add_stage(extra)
    finally:
        backend.read = real_read  # type: ignore[method-assign]

    after = {k: v for k, v in backend.client.hgetall(key).items() if k.startswith(b"v:")}
    changed = {k.decode() for k in after if versions_before.get(k) != after[k]}
    s60 = wf.stages[60].id
    assert changed == {f"v:s:{extra.id}", f"v:u:{extra.id}", f"v:s:{s60}", f"v:d:{s60}", "v:stages", "v:meta",
                       "v:st", "v:r:extra"}  # r:extra: the ref index a jump finds the stage by
    assert len(requested) <= 3, requested
    stored = eng.store.retrieve(wf.id)
    assert stored.stages[-1].ref_id == "extra" and extra.version == 1
    assert [s.ref_id for s in eng.store.get_downstream_stages(wf.id, "s60")] == ["s61", "extra"]


def test_adding_a_stage_with_an_unknown_requisite_or_a_taken_ref_is_refused(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]))
    eng.store.store(wf)
    for bad, match in ((make_stage("c", requires=["ghost"]), "unknown stage 'ghost'"),
                       (make_stage("a"), "duplicate_ref")):
        bad.execution = wf
        with pytest.raises(WorkflowValidationError, match=match):
            eng.store.add_stage(bad)
    assert [s.ref_id for s in eng.store.retrieve(wf.id).stages] == ["a", "b"]


class Gate:
    """A task that keeps polling (``running``) until released."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def __call__(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success() if self.open.is_set() else TaskResult.running()


def test_a_stage_added_to_a_running_workflow_starts_and_the_workflow_waits_for_it(target: Target) -> None:
    eng = engine(target)
    gate = Gate()
    eng.registry.register("gate", gate)
    wf = eng.start(make_workflow(make_stage("a"), make_stage("slow", "gate", requires=["a"])))
    wait_until(lambda: eng.processor.process_one() or
               stage_named(eng.store.retrieve(wf.id), "slow").status == WorkflowStatus.RUNNING, 10, "slow running")

    added = make_stage("late", requires=["a"])
    added.execution = eng.store.retrieve(wf.id)
    eng.store.add_stage(added)
    wait_until(lambda: eng.processor.process_one() or
               stage_named(eng.store.retrieve(wf.id), "late").status == WorkflowStatus.SUCCEEDED, 10, "late done")
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.RUNNING

    gate.open.set()
    eng.processor.process_all(timeout=10)
    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert stage_named(result, "late").outputs == {"out_late": "late"}


def test_removing_a_stage_detaches_it_and_its_downstream_still_runs(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]), make_stage("c", requires=["a", "b"]))
    eng.store.store(wf)

    eng.store.remove_stage(wf, wf.stages[1].id)
    eng.store.remove_stage(wf, "not-a-stage")

    stored = eng.store.retrieve(wf.id)
    assert [s.ref_id for s in stored.stages] == ["a", "c"]
    assert stage_named(stored, "c").requisite_stage_ref_ids == {"a"}
    result = eng.run(stored)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert [s.status for s in result.stages] == [WorkflowStatus.SUCCEEDED] * 2


def test_a_removed_stage_can_be_added_back(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(two_task_stage("s"))
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)

    eng.store.remove_stage(stage.execution, stage.id)
    with pytest.raises(ValueError):
        eng.store.retrieve_stage(stage.id)
    eng.store.add_stage(stage)

    assert sorted(t.name for t in eng.store.retrieve_stage(stage.id).tasks) == ["a", "b"]


# -- transactions -----------------------------------------------------------------------------

def _count_commits(eng: Engine) -> list[Transition]:
    seen: list[Transition] = []
    real = eng.store.backend.commit

    def counting(t: Transition, message: Message | None, delivery: Any, **options: Any) -> str:
        seen.append(t)
        return real(t, message, delivery, **options)

    eng.store.backend.commit = counting  # type: ignore[method-assign]
    return seen


def test_a_transaction_commits_stage_message_and_mark_in_one_commit(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    commits = _count_commits(eng)

    with eng.store.transaction(eng.queue) as txn:
        stage.status = WorkflowStatus.RUNNING
        txn.store_stage(stage, expected_phase="NOT_STARTED")
        stage.context["after"] = True  # not part of this transaction
        txn.push_message(StartStage(execution_id=wf.id, stage_id=stage.id))
        txn.mark_message_processed("incoming-1", execution_id=wf.id)

    assert len(commits) == 1 and txn.outcome == "ok"
    stored = eng.store.retrieve_stage(stage.id)
    assert stored.status == WorkflowStatus.RUNNING and "after" not in stored.context
    assert eng.queue.size() == 1 and eng.store.is_message_processed("incoming-1")
    assert stage.version == stored.version


def test_a_transaction_with_a_stale_stage_writes_nothing_at_all(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    stale = eng.store.retrieve_stage(wf.stages[0].id)
    current = eng.store.retrieve_stage(wf.stages[0].id)
    current.context["moved"] = True
    eng.store.store_stage(current)

    with pytest.raises(ConcurrencyError), eng.store.transaction(eng.queue) as txn:
        stale.status = WorkflowStatus.RUNNING
        txn.store_stage(stale)
        txn.push_message(StartStage(execution_id=wf.id, stage_id=stale.id))
        txn.mark_message_processed("incoming-2", execution_id=wf.id)

    assert eng.queue.size() == 0 and not eng.store.is_message_processed("incoming-2")
    assert eng.store.retrieve_stage(stale.id).status == WorkflowStatus.NOT_STARTED


def test_a_transaction_for_a_message_already_processed_writes_nothing(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    eng.store.mark_message_processed("seen-1", execution_id=wf.id)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    version = stage.version

    with eng.store.transaction(eng.queue) as txn:
        stage.status = WorkflowStatus.RUNNING
        txn.store_stage(stage)
        txn.push_message(StartStage(execution_id=wf.id, stage_id=stage.id))
        txn.mark_message_processed("seen-1", execution_id=wf.id)

    assert txn.outcome == "duplicate" and stage.version == version
    assert eng.queue.size() == 0 and eng.store.retrieve_stage(stage.id).status == WorkflowStatus.NOT_STARTED


def test_an_exception_inside_a_transaction_writes_nothing_and_keeps_versions(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(two_task_stage("s"))
    eng.store.store(wf)
    stage = eng.store.retrieve_stage(wf.stages[0].id)
    versions = (stage.version, [t.version for t in stage.tasks])

    with pytest.raises(RuntimeError), eng.store.transaction(eng.queue) as txn:
        stage.tasks[0].status = WorkflowStatus.RUNNING
        txn.store_stage(stage)
        txn.push_message(StartStage(execution_id=wf.id, stage_id=stage.id))
        raise RuntimeError("abort")

    assert (stage.version, [t.version for t in stage.tasks]) == versions
    assert eng.queue.size() == 0 and eng.store.retrieve_stage(stage.id).tasks[0].status == WorkflowStatus.NOT_STARTED
    eng.store.store_stage(stage)
    assert eng.store.retrieve_stage(stage.id).tasks[0].status == WorkflowStatus.RUNNING


def test_a_transaction_refuses_messages_it_cannot_commit_with_its_workflow(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    partitions = eng.store.backend.keys.partitions
    elsewhere = next(f"other-{i}" for i in range(1000)
                     if eng.store.backend.part(f"other-{i}").index != eng.store.backend.part(wf.id).index)
    stage = eng.store.retrieve_stage(wf.stages[0].id)

    with pytest.raises(ValueError, match="partition"), eng.store.transaction(eng.queue) as txn:
        txn.store_stage(stage)
        txn.push_message(StartWorkflow(execution_id=elsewhere))
    with pytest.raises(ValueError, match="one workflow"), eng.store.transaction(eng.queue) as txn:
        txn.store_stage(stage)
        txn.update_workflow_status(Workflow(id=elsewhere))
    assert eng.queue.size() == 0 and partitions > 1


def test_a_transaction_acks_the_polled_message_it_marks_processed(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    eng.queue.push(StartStage(execution_id=wf.id, stage_id=wf.stages[0].id))
    message = eng.queue.poll_one()
    assert message is not None and message.message_id

    stage = eng.store.retrieve_stage(wf.stages[0].id)
    with eng.store.transaction(eng.queue) as txn:
        stage.status = WorkflowStatus.RUNNING
        txn.store_stage(stage)
        txn.mark_message_processed(message.message_id, execution_id=wf.id)

    assert eng.queue.size() == 0 and eng.queue.counts()["in_flight"] == 0
    assert eng.store.is_message_processed(message.message_id)


# -- dedup, counting, pausing -----------------------------------------------------------------

def test_a_message_marked_processed_is_not_handled_again(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"))
    eng.store.store(wf)
    start = StartWorkflow(execution_id=wf.id, message_id="start-once")
    assert not eng.store.is_message_processed("start-once")

    eng.store.mark_message_processed("start-once", handler_type="StartWorkflowHandler", execution_id=wf.id)
    eng.queue.push(start)
    eng.processor.process_all(timeout=5)

    assert eng.store.is_message_processed("start-once")
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.NOT_STARTED
    assert eng.store.cleanup_old_processed_messages(max_age_hours=0) >= 1
    assert not eng.store.is_message_processed("start-once")


def test_count_by_application_counts_only_that_applications_workflows(target: Target) -> None:
    eng = engine(target)
    for app in ("app-a", "app-a", "app-b"):
        eng.store.store(Workflow.create(application=app, name="w", stages=[make_stage("s")]))

    assert (eng.store.count_by_application("app-a"), eng.store.count_by_application("app-b"),
            eng.store.count_by_application("app-c")) == (2, 1, 0)


def test_pause_and_resume_of_a_workflow_that_has_no_stages(target: Target) -> None:
    eng = engine(target)
    wf = Workflow.create(application="app", name="empty", stages=[])
    eng.store.store(wf)

    eng.store.pause(wf.id, "admin@test.com")
    paused = eng.store.retrieve(wf.id)
    assert paused.status == WorkflowStatus.PAUSED and paused.paused is not None
    assert paused.paused.paused_by == "admin@test.com"
    eng.store.resume(wf.id)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.RUNNING


def test_a_workflow_paused_before_it_started_runs_once_resumed(target: Target) -> None:
    eng = engine(target)
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]))
    eng.store.store(wf)
    eng.store.pause(wf.id, "ops")
    Orchestrator(eng.queue, eng.store).start(wf)
    eng.processor.process_all(timeout=5)
    held = eng.store.retrieve(wf.id)
    assert held.status == WorkflowStatus.PAUSED and all(s.status == WorkflowStatus.NOT_STARTED for s in held.stages)

    eng.store.resume(wf.id)
    eng.processor.process_all(timeout=10)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED and result.start_time is not None
    assert [s.status for s in result.stages] == [WorkflowStatus.SUCCEEDED] * 2


def test_a_start_time_window_counts_a_workflow_not_started_yet_as_recent(target: Target) -> None:
    from stabilize_redis.persistence.store import WorkflowCriteria

    eng = engine(target)
    fresh = Workflow.create(application="window", name="fresh", stages=[make_stage("s")])
    old = Workflow.create(application="window", name="old", stages=[make_stage("s")])
    old.status, old.start_time = WorkflowStatus.RUNNING, 1_000
    for wf in (fresh, old):
        eng.store.store(wf)

    after = {w.id for w in eng.store.retrieve_by_application("window", WorkflowCriteria(start_time_after=5_000))}
    before = {w.id for w in eng.store.retrieve_by_application("window", WorkflowCriteria(start_time_before=5_000))}
    pending = {w.id for w in eng.store.get_all_pending_workflows(WorkflowCriteria(
        statuses={WorkflowStatus.RUNNING, WorkflowStatus.NOT_STARTED}, start_time_after=5_000))}

    assert after == {fresh.id} and before == {old.id} and pending == {fresh.id}
