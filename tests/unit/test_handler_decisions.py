"""Given a workflow hash, when a message is handled, then this plan: the decisions of the
built-in handlers, through the handler kit (no Redis). Each test states the plan a user's
workflow depends on: what is written, sent, counted, settled and released in one commit."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_redis import TaskRegistry, TaskResult, Workflow
from stabilize_redis.backend.redis_backend import CommitOutcome
from stabilize_redis.context.ancestor_context import hash_reads, with_view
from stabilize_redis.keys import settled_flag_field
from stabilize_redis.models.stage import SplitType, StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import (
    CancelStage,
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    PauseTask,
    ResumeStage,
    SkipStage,
    StartStage,
    StartWorkflow,
)
from tests.integration.support import make_stage, make_workflow
from tests.kit.handler_kit import Kit, given_workflow

S = WorkflowStatus


def running(wf: Workflow, status: WorkflowStatus = S.RUNNING) -> Workflow:
    """``wf`` as a started workflow (RUNNING unless ``status`` says otherwise)."""
    wf.status = status
    wf.start_time = 1
    return wf


def at(stage: StageExecution, status: WorkflowStatus, task_status: WorkflowStatus | None = None) -> StageExecution:
    """``stage`` with ``status``; its tasks with ``task_status`` (default: the stage's status,
    or NOT_STARTED for a NOT_STARTED stage)."""
    stage.status = status
    if status != S.NOT_STARTED:
        stage.start_time = 1
    for task in stage.tasks:
        task.status = task_status or status
    return stage


def two_tasks(ref_id: str) -> StageExecution:
    tasks = [TaskExecution.create(name="first", implementing_class="t", stage_start=True),
             TaskExecution.create(name="second", implementing_class="t", stage_end=True)]
    return StageExecution(ref_id=ref_id, type=ref_id, name=ref_id, tasks=tasks)


def task_message(kit: Kit, ref_id: str, status: WorkflowStatus, index: int = 0) -> CompleteTask:
    stage = kit.stage(ref_id)
    return CompleteTask(execution_id=kit.workflow_id, stage_id=stage.id, task_id=stage.tasks[index].id,
                        status=status)


def msg(kit: Kit, kind: Any, ref_id: str | None = None, **fields: Any) -> Any:
    """A message of type ``kind`` for the kit's workflow (and stage ``ref_id``)."""
    if ref_id is not None:
        fields["stage_id"] = kit.id(ref_id)
    return kind(execution_id=kit.workflow_id, **fields)


def diamond(b: WorkflowStatus, c: WorkflowStatus) -> Kit:
    """a -> (b, c) -> d with a SUCCEEDED, b and c as given, d NOT_STARTED."""
    return given_workflow(running(make_workflow(
        at(make_stage("a"), S.SUCCEEDED), at(make_stage("b", requires={"a"}), b),
        at(make_stage("c", requires={"a"}), c), make_stage("d", requires={"b", "c"}))))


# -- StartStage ------------------------------------------------------------------------------


def test_a_start_stage_whose_join_is_not_met_writes_nothing() -> None:
    kit = diamond(S.SUCCEEDED, S.RUNNING)
    kit.handle(msg(kit, StartStage, "d"))
    assert kit.last_plan.committed and kit.last_plan.acks_only
    assert "meta" in kit.last_plan.checked()
    assert kit.status("d") == "NOT_STARTED"


def test_a_start_stage_of_a_join_below_an_or_split_decides_from_its_upstreams() -> None:
    kit = given_workflow(running(make_workflow(
        at(make_stage("a", split_type=SplitType.OR, split_conditions={"b": "True"}), S.SUCCEEDED),
        at(make_stage("b", requires={"a"}), S.SUCCEEDED), at(make_stage("c", requires={"a"}), S.RUNNING),
        make_stage("d", requires={"b", "c"}))))
    kit.handle(msg(kit, StartStage, "d"))
    assert kit.last_plan.committed and kit.last_plan.acks_only
    assert {"s:b", "s:c", "meta"} <= kit.last_plan.checked()  # a pruned branch is seen in its record
    assert kit.status("d") == "NOT_STARTED"


def test_a_start_stage_runs_a_ready_stage_and_its_first_task_in_one_commit() -> None:
    kit = given_workflow(running(make_workflow(make_stage("a"))))
    kit.handle(msg(kit, StartStage, "a"))
    plan = kit.last_plan
    assert plan.written() == {"a": "RUNNING"}
    assert plan.stage("a").tasks[0].status == S.RUNNING
    assert plan.sent() == [("RunTask", "a")]
    assert plan.event_types() == ["stage.started", "task.started"]


def test_a_started_stage_sees_its_upstreams_outputs_through_its_view_without_a_copy() -> None:
    a = at(make_stage("a"), S.SUCCEEDED)
    a.outputs = {"artifact": "v1"}
    kit = given_workflow(running(make_workflow(a, make_stage("b", requires={"a"}))))
    kit.handle(msg(kit, StartStage, "b"))
    b = kit.last_plan.stage("b")
    assert "artifact" not in b.context  # stored: its own context only
    rec = kit.backend.read(kit.workflow_id, [kit.id("b")]).stages[kit.id("b")]
    assert rec.seg == kit.id("a")  # it continues a's segment
    view = with_view(rec, hash_reads(kit.backend.load_hash(kit.workflow_id)))
    assert view["artifact"] == "v1"


def test_a_redelivered_start_stage_of_a_running_stage_changes_nothing() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING))))
    kit.handle(msg(kit, StartStage, "a"))
    assert kit.last_plan.acks_only


def test_a_start_stage_of_a_disabled_stage_sends_skip_stage_instead_of_running_it() -> None:
    kit = given_workflow(running(make_workflow(make_stage("a", context={"stageEnabled": False}))))
    kit.handle(msg(kit, StartStage, "a"))
    assert kit.last_plan.written() == {}
    assert kit.last_plan.sent() == [("SkipStage", "a")]


def test_a_start_stage_in_a_canceled_workflow_leaves_the_stage_alone() -> None:
    wf = running(make_workflow(make_stage("a")))
    wf.cancel("ops", "rollback")
    kit = given_workflow(wf)
    kit.handle(msg(kit, StartStage, "a"))
    assert kit.last_plan.acks_only
    assert kit.status("a") == "NOT_STARTED"


# -- CompleteTask ----------------------------------------------------------------------------


def test_the_last_upstreams_completion_starts_the_single_upstream_downstream_in_the_same_commit() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING), make_stage("b", requires={"a"}))))
    kit.handle(task_message(kit, "a", S.SUCCEEDED))
    plan = kit.last_plan
    assert plan.written() == {"a": "SUCCEEDED", "b": "RUNNING"}
    assert plan.sent() == [("RunTask", "b")]
    assert plan.counted() == {"j:b": 1}
    assert "c:j:b" in plan.checked()  # the counter value it acted on is in the read set
    assert plan.released() == []


def test_completing_a_first_task_starts_the_next_task_of_the_same_stage() -> None:
    a = at(two_tasks("a"), S.RUNNING)
    a.tasks[1].status = S.NOT_STARTED
    kit = given_workflow(running(make_workflow(a)))
    kit.handle(task_message(kit, "a", S.SUCCEEDED))
    stage = kit.last_plan.stage("a")
    assert [t.status for t in stage.tasks] == [S.SUCCEEDED, S.RUNNING]
    assert stage.status == S.RUNNING
    assert kit.last_plan.sent() == [("RunTask", "a")]
    assert kit.last_plan.settles() == {}


def test_a_join_of_two_upstreams_is_released_by_the_commit_of_the_second() -> None:
    kit = diamond(S.SUCCEEDED, S.RUNNING)
    kit.handle(task_message(kit, "c", S.SUCCEEDED))
    plan = kit.last_plan
    assert plan.counted() == {"j:d": 1}
    assert plan.released() == [("StartStage", "d")]
    assert plan.written() == {"c": "SUCCEEDED"}  # d starts through StartStage (it reads both)


def test_the_first_of_two_upstreams_to_complete_releases_nothing() -> None:
    kit = diamond(S.RUNNING, S.RUNNING)
    kit.handle(task_message(kit, "b", S.SUCCEEDED))
    assert kit.last_plan.counted() == {"j:d": 1}
    assert kit.last_plan.released() == []
    assert kit.pending() == []


def test_the_last_top_level_stage_to_succeed_completes_the_workflow_in_its_own_commit() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.SUCCEEDED), at(make_stage("x"), S.RUNNING))))
    kit.handle(task_message(kit, "x", S.SUCCEEDED))
    plan = kit.last_plan
    assert plan.meta is not None and plan.meta.status == S.SUCCEEDED
    assert plan.settles() == {"x": False}
    assert plan.released() == [] and plan.sent() == []
    assert "workflow.completed" in plan.event_types()


def test_a_terminal_task_settles_its_stage_halted_with_the_downstreams_that_cannot_start() -> None:
    kit = given_workflow(running(make_workflow(
        at(make_stage("a"), S.RUNNING), make_stage("b", requires={"a"}), make_stage("c", requires={"b"}),
        at(make_stage("x"), S.RUNNING))))
    kit.handle(task_message(kit, "a", S.TERMINAL))
    plan = kit.last_plan
    assert plan.written() == {"a": "TERMINAL"}
    assert plan.settles() == {"a": True}
    assert plan.released() == [("CompleteWorkflow", "")]  # TERMINAL ends the workflow at once
    assert [kit.field(settled_flag_field(kit.id(r))) for r in "abcx"] == [b"h", b"h", b"h", None]


# -- CompleteStage ---------------------------------------------------------------------------


def test_complete_stage_of_a_stage_whose_tasks_still_run_writes_nothing() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING))))
    kit.handle(msg(kit, CompleteStage, "a"))
    assert kit.last_plan.acks_only


def test_complete_stage_with_every_task_done_succeeds_the_stage_and_starts_its_downstream() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING, S.SUCCEEDED),
                                               make_stage("b", requires={"a"}))))
    kit.handle(msg(kit, CompleteStage, "a"))
    assert kit.last_plan.written() == {"a": "SUCCEEDED", "b": "RUNNING"}
    assert kit.last_plan.sent() == [("RunTask", "b")]


def test_complete_stage_of_a_halted_stage_asks_for_the_workflows_completion_again() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.TERMINAL), at(make_stage("x"), S.RUNNING))))
    kit.handle(msg(kit, CompleteStage, "a"))
    assert kit.last_plan.written() == {}
    assert kit.last_plan.sent() == [("CompleteWorkflow", "")]


# -- SkipStage -------------------------------------------------------------------------------


def test_a_skipped_stage_counts_toward_its_downstreams_join() -> None:
    kit = diamond(S.NOT_STARTED, S.SUCCEEDED)
    kit.handle(msg(kit, SkipStage, "b"))
    plan = kit.last_plan
    assert plan.written() == {"b": "SKIPPED"}
    assert plan.counted() == {"j:d": 1}
    assert plan.released() == [("StartStage", "d")]


def test_skipping_a_stage_that_already_started_changes_nothing() -> None:
    kit = diamond(S.RUNNING, S.SUCCEEDED)
    kit.handle(msg(kit, SkipStage, "b"))
    assert kit.last_plan.acks_only


# -- CancelStage -----------------------------------------------------------------------------


def test_canceling_a_running_stage_cancels_its_task_publishes_its_id_and_settles_it() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING), at(make_stage("x"), S.RUNNING))))
    task_id = kit.stage("a").tasks[0].id
    kit.handle(msg(kit, CancelStage, "a"))
    plan = kit.last_plan
    assert plan.written() == {"a": "CANCELED"}
    assert plan.stage("a").tasks[0].status == S.CANCELED
    assert plan.transition.notices == [(kit.backend.keys.cancel_channel, task_id)]
    assert plan.settles() == {"a": True}
    assert plan.released() == []  # x still runs: a canceled stage does not end the others


def test_canceling_a_finished_stage_changes_nothing() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.SUCCEEDED), at(make_stage("x"), S.RUNNING))))
    kit.handle(msg(kit, CancelStage, "a"))
    assert kit.last_plan.acks_only


# -- PauseTask / ResumeStage -----------------------------------------------------------------


def test_pause_task_in_a_paused_workflow_pauses_the_task_and_its_stage() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING)), S.PAUSED))
    stage = kit.stage("a")
    kit.handle(msg(kit, PauseTask, "a", task_id=stage.tasks[0].id))
    assert kit.last_plan.written() == {"a": "PAUSED"}
    assert kit.last_plan.stage("a").tasks[0].status == S.PAUSED
    assert "meta" in kit.last_plan.checked()


def test_pause_task_after_the_workflow_was_resumed_runs_the_task_again() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING))))
    kit.handle(msg(kit, PauseTask, "a", task_id=kit.stage("a").tasks[0].id))
    assert kit.last_plan.written() == {}
    assert kit.last_plan.sent() == [("RunTask", "a")]


def test_resume_stage_resumes_the_paused_workflow_and_runs_the_paused_task() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.PAUSED)), S.PAUSED))
    kit.handle(msg(kit, ResumeStage, "a"))
    plan = kit.last_plan
    assert plan.meta is not None and plan.meta.status == S.RUNNING
    assert plan.written() == {"a": "RUNNING"}
    assert plan.sent() == [("RunTask", "a")]


# -- CompleteWorkflow ------------------------------------------------------------------------


def test_complete_workflow_before_every_stage_settled_decides_nothing() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.SUCCEEDED), at(make_stage("x"), S.RUNNING))))
    kit.handle(msg(kit, CompleteWorkflow))
    assert kit.last_plan.acks_only


def test_a_terminal_stage_ends_the_workflow_at_once_and_cancels_the_running_branches() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.TERMINAL), at(make_stage("x"), S.RUNNING))))
    kit.handle(msg(kit, CompleteWorkflow))
    plan = kit.last_plan
    assert plan.meta is not None and plan.meta.status == S.TERMINAL
    assert plan.sent() == [("CancelStage", "x")]
    assert plan.event_types() == ["workflow.failed"]


@pytest.mark.parametrize(("then_fail", "expected"), [(False, S.SUCCEEDED), (True, S.TERMINAL)])
def test_a_stopped_branch_lets_the_workflow_end_as_complete_other_branches_then_fail_says(
        then_fail: bool, expected: WorkflowStatus) -> None:
    wf = running(make_workflow(at(make_stage("a", context={"failPipeline": False}), S.STOPPED),
                               make_stage("b", requires={"a"}), at(make_stage("x"), S.SUCCEEDED)))
    wf.context["completeOtherBranchesThenFail"] = then_fail
    kit = given_workflow(wf)
    kit.handle(msg(kit, CompleteWorkflow))
    assert kit.last_plan.meta is not None and kit.last_plan.meta.status == expected
    assert kit.last_plan.sent() == []


# -- StartWorkflow ---------------------------------------------------------------------------


def test_start_workflow_runs_the_workflow_and_starts_every_initial_stage() -> None:
    kit = given_workflow(make_workflow(make_stage("a"), make_stage("b", requires={"a"}), make_stage("x")))
    kit.handle(msg(kit, StartWorkflow))
    plan = kit.last_plan
    assert plan.meta is not None and plan.meta.status == S.RUNNING
    assert sorted(plan.sent()) == [("StartStage", "a"), ("StartStage", "x")]


def test_start_workflow_past_its_start_expiry_cancels_the_workflow_instead() -> None:
    wf = make_workflow(make_stage("a"))
    wf.start_time_expiry = 1
    kit = given_workflow(wf)
    kit.handle(msg(kit, StartWorkflow))
    assert kit.last_plan.meta is None
    assert kit.last_plan.sent() == [("CancelWorkflow", "")]


# -- the read -> decide -> commit loop -------------------------------------------------------


def test_a_conflict_re_decides_on_the_new_state() -> None:
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.SUCCEEDED), make_stage("b", requires={"a"}))))
    # Another worker starts b between this handler's read and its commit.
    kit.backend.before_next_commit(lambda: kit.edit_stage("b", lambda s: setattr(s, "status", S.RUNNING)))
    assert kit.handle(msg(kit, StartStage, "b")) == CommitOutcome.OK
    first, second = kit.plans[-2:]
    assert first.outcome == CommitOutcome.CONFLICT and first.conflict_field == f"s:{kit.id('b')}"
    assert first.written() == {"b": "RUNNING"}
    assert second.committed and second.acks_only  # b is running already: nothing to do twice
    assert kit.pending() == []


def test_a_redelivered_message_is_a_duplicate_and_changes_nothing() -> None:
    registry = TaskRegistry()
    registry.register("t", lambda stage: TaskResult.success())
    kit = given_workflow(running(make_workflow(at(make_stage("a"), S.RUNNING), make_stage("b", requires={"a"}))),
                         registry)
    message = task_message(kit, "a", S.SUCCEEDED)
    kit.handle(message)
    version = kit.field("ver")
    assert kit.handle(message) == CommitOutcome.DUPLICATE
    assert kit.field("ver") == version
    assert kit.pending() == [("RunTask", "b")]


def test_a_message_for_a_stage_that_does_not_exist_is_dead_lettered() -> None:
    kit = given_workflow(running(make_workflow(make_stage("a"))))
    assert kit.handle(StartStage(execution_id=kit.workflow_id, stage_id="nope")) == "dead"
    assert [d["reason"] for d in kit.backend.dead] == ["unknown_target"]
    assert kit.plans == []
