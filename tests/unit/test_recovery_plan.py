"""The recovery plan: which messages a workflow's committed state needs (pure, no Redis)."""

from __future__ import annotations

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.layout import lay_out
from stabilize_redis.durability.recovery_plan import (
    decode_workflow,
    describe,
    plan_from_hash,
    recovery_messages,
)
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution
from stabilize_redis.models.status import WorkflowStatus as S
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import (
    CancelWorkflow,
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    JumpToStage,
    Message,
    RunTask,
    SkipStage,
    StartStage,
    StartTask,
    StartWorkflow,
)


def _stage(ref: str, requires: set[str] | None = None, tasks: int = 1, **kw: object) -> StageExecution:
    ts = [TaskExecution.create(name=f"{ref}-t{i}", implementing_class="work") for i in range(tasks)]
    ts[0].stage_start = True
    ts[-1].stage_end = True
    return StageExecution(ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=requires or set(),
                          tasks=ts, **kw)  # type: ignore[arg-type]


def _stored(stages: list[StageExecution]) -> tuple[Workflow, dict[str, StageRecord], dict[str, StageExecution]]:
    """The workflow as a restore would decode it from its hash, plus its stages by ref id."""
    wf = Workflow.create(application="t", name="plan", stages=stages)
    decoded = decode_workflow({k.encode(): v for k, v in lay_out(wf).items()})
    assert decoded is not None
    stored, records = decoded
    return stored, records, {s.ref_id: s for s in stored.stages}


def _done(stage: StageExecution, status: S = S.SUCCEEDED) -> None:
    stage.status = status
    for t in stage.tasks:
        t.status = status


def _shape(messages: list[Message]) -> list[str]:
    return describe(messages)


def _wire(messages: list[Message]) -> list[dict[str, object]]:
    """Messages as data, without their creation time."""
    return [{k: v for k, v in m.to_dict().items() if k != "created_at"} for m in messages]


def test_not_started_workflow_gets_start_workflow() -> None:
    wf, records, _ = _stored([_stage("a")])
    assert _wire(recovery_messages(wf, records)) == _wire([StartWorkflow(execution_id=wf.id, execution_type="PIPELINE")])


def test_canceled_unfinished_workflow_gets_cancel_workflow_keeping_who_and_why() -> None:
    wf, records, st = _stored([_stage("a")])
    wf.status = S.RUNNING
    wf.is_canceled, wf.canceled_by, wf.cancellation_reason = True, "ops", "bad deploy"
    st["a"].status = S.RUNNING
    st["a"].tasks[0].status = S.RUNNING
    msgs = recovery_messages(wf, records)
    assert len(msgs) == 1 and isinstance(msgs[0], CancelWorkflow)
    assert (msgs[0].user, msgs[0].reason) == ("ops", "bad deploy")


def test_complete_workflow_needs_nothing() -> None:
    wf, records, st = _stored([_stage("a")])
    wf.status = S.SUCCEEDED
    _done(st["a"])
    assert recovery_messages(wf, records) == []


def test_running_task_gets_run_task_of_its_implementation() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b", {"a"})])
    wf.status = S.RUNNING
    st["a"].status = S.RUNNING
    st["a"].tasks[0].status = S.RUNNING
    msgs = recovery_messages(wf, records)
    assert _shape(msgs) == [f"RunTask({st['a'].tasks[0].id})"]
    run = msgs[0]
    assert isinstance(run, RunTask) and run.stage_id == st["a"].id and run.task_type == "work"


def test_completed_stages_are_not_redone_and_the_next_ready_stage_starts() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b", {"a"}), _stage("c", {"b"})])
    wf.status = S.RUNNING
    _done(st["a"])
    msgs = recovery_messages(wf, records)
    assert _shape(msgs) == [f"StartStage({st['b'].id})"]


def test_initial_stages_of_a_running_workflow_get_start_stage() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b"), _stage("c", {"a", "b"})])
    wf.status = S.RUNNING
    assert _shape(recovery_messages(wf, records)) == [f"StartStage({st['a'].id})", f"StartStage({st['b'].id})"]


def test_join_waits_for_every_upstream() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b"), _stage("c", {"a", "b"})])
    wf.status = S.RUNNING
    _done(st["a"])
    st["b"].status = S.RUNNING
    st["b"].tasks[0].status = S.RUNNING
    assert _shape(recovery_messages(wf, records)) == [f"RunTask({st['b'].tasks[0].id})"]
    _done(st["b"], S.FAILED_CONTINUE)
    assert _shape(recovery_messages(wf, records)) == [f"StartStage({st['c'].id})"]


def test_discriminator_join_starts_after_first_upstream() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b"), _stage("c", {"a", "b"}, join_type=JoinType.DISCRIMINATOR)])
    wf.status = S.RUNNING
    _done(st["a"])
    st["b"].status = S.RUNNING
    st["b"].tasks[0].status = S.RUNNING
    assert set(_shape(recovery_messages(wf, records))) == {f"RunTask({st['b'].tasks[0].id})",
                                                           f"StartStage({st['c'].id})"}


def test_or_split_that_did_not_activate_a_branch_skips_it() -> None:
    a = _stage("a", split_type=SplitType.OR, split_conditions={"b": "go == 'b'", "c": "go == 'c'"})
    wf, records, st = _stored([a, _stage("b", {"a"}), _stage("c", {"a"})])
    wf.status = S.RUNNING
    _done(st["a"])
    st["a"].outputs["go"] = "b"
    assert _shape(recovery_messages(wf, records)) == [f"StartStage({st['b'].id})", f"SkipStage({st['c'].id})"]
    assert isinstance(recovery_messages(wf, records)[1], SkipStage)


def test_all_top_level_stages_complete_gets_complete_workflow() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b", {"a"})])
    wf.status = S.RUNNING
    _done(st["a"])
    _done(st["b"], S.SKIPPED)
    assert _wire(recovery_messages(wf, records)) == _wire([CompleteWorkflow(execution_id=wf.id, execution_type="PIPELINE")])


def test_halted_stage_gets_complete_workflow_and_blocks_its_downstream() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b", {"a"}), _stage("x")])
    wf.status = S.RUNNING
    _done(st["a"], S.TERMINAL)
    st["x"].status = S.RUNNING
    st["x"].tasks[0].status = S.RUNNING
    msgs = recovery_messages(wf, records)
    assert _shape(msgs) == [f"RunTask({st['x'].tasks[0].id})", "CompleteWorkflow"]


def test_running_stage_whose_tasks_all_finished_gets_complete_stage() -> None:
    wf, records, st = _stored([_stage("a", tasks=2)])
    wf.status = S.RUNNING
    st["a"].status = S.RUNNING
    for t in st["a"].tasks:
        t.status = S.SUCCEEDED
    msgs = recovery_messages(wf, records)
    assert _wire(msgs) == _wire([CompleteStage(execution_id=wf.id, execution_type="PIPELINE", stage_id=st["a"].id)])


def test_running_stage_with_a_failed_task_gets_complete_stage() -> None:
    wf, records, st = _stored([_stage("a", tasks=3)])
    wf.status = S.RUNNING
    st["a"].status = S.RUNNING
    st["a"].tasks[0].status = S.TERMINAL
    assert _shape(recovery_messages(wf, records)) == [f"CompleteStage({st['a'].id})"]


def test_skipped_task_followed_by_a_not_started_one_gets_complete_task_skipped() -> None:
    wf, records, st = _stored([_stage("a", tasks=3)])
    wf.status = S.RUNNING
    st["a"].status = S.RUNNING
    st["a"].tasks[0].status = S.SUCCEEDED
    st["a"].tasks[1].status = S.SKIPPED
    msgs = recovery_messages(wf, records)
    assert len(msgs) == 1 and isinstance(msgs[0], CompleteTask)
    assert (msgs[0].task_id, msgs[0].status) == (st["a"].tasks[1].id, S.SKIPPED)


def test_started_stage_whose_next_task_never_began_gets_start_task() -> None:
    wf, records, st = _stored([_stage("a", tasks=2)])
    wf.status = S.RUNNING
    st["a"].status = S.RUNNING
    assert _wire(recovery_messages(wf, records)) == _wire([
        StartTask(execution_id=wf.id, execution_type="PIPELINE", stage_id=st["a"].id, task_id=st["a"].tasks[0].id,
                  attempt_token=0)])
    st["a"].tasks[0].status = S.SUCCEEDED
    assert _shape(recovery_messages(wf, records)) == [f"StartTask({st['a'].tasks[1].id})"]


def test_paused_and_suspended_stages_get_nothing() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b")])
    wf.status = S.RUNNING
    st["a"].status = S.PAUSED
    st["a"].tasks[0].status = S.PAUSED
    st["b"].status = S.SUSPENDED
    st["b"].tasks[0].status = S.SUSPENDED
    assert recovery_messages(wf, records) == []


def test_paused_workflow_still_gets_its_running_task_so_the_handler_can_pause_it() -> None:
    wf, records, st = _stored([_stage("a")])
    wf.status = S.PAUSED
    st["a"].status = S.RUNNING
    st["a"].tasks[0].status = S.RUNNING
    assert _shape(recovery_messages(wf, records)) == [f"RunTask({st['a'].tasks[0].id})"]


def test_plan_without_records_finds_upstreams_by_requisite_refs() -> None:
    wf, _, st = _stored([_stage("a"), _stage("b", {"a"})])
    wf.status = S.RUNNING
    _done(st["a"])
    assert _shape(recovery_messages(wf)) == [f"StartStage({st['b'].id})"]


def test_plan_from_hash_decodes_the_stored_fields() -> None:
    wf = Workflow.create(application="t", name="plan", stages=[_stage("a")])
    raw = {k.encode(): v for k, v in lay_out(wf).items()}
    assert _wire(plan_from_hash(raw)) == _wire([StartWorkflow(execution_id=wf.id, execution_type="PIPELINE")])
    assert plan_from_hash({}) == []


def test_plan_is_deterministic_and_carries_no_message_ids() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b"), _stage("c", {"a", "b"})])
    wf.status = S.RUNNING
    first = recovery_messages(wf, records)
    assert _wire(first) == _wire(recovery_messages(wf, records))
    assert all(m.message_id is None for m in first)
    assert all(isinstance(m, StartStage) for m in first)


def test_a_parent_waiting_on_its_before_stages_is_continued_never_has_its_tasks_started() -> None:
    from stabilize_redis.models.stage import SyntheticStageOwner

    parent = _stage("deploy")
    pre = StageExecution.create_synthetic("pre", "pre", parent, SyntheticStageOwner.STAGE_BEFORE, ref_id="pre",
                                          tasks=[TaskExecution.create(name="pre-t", implementing_class="work",
                                                                      stage_start=True, stage_end=True)])
    wf, records, st = _stored([parent, pre])
    wf.status = S.RUNNING
    st["deploy"].status = S.RUNNING
    st["pre"].status = S.RUNNING
    st["pre"].tasks[0].status = S.RUNNING
    shapes = _shape(recovery_messages(wf, records))
    assert f"RunTask({st['pre'].tasks[0].id})" in shapes
    assert not any(s.startswith("StartTask") for s in shapes), shapes
    assert any(s.startswith("ContinueParentStage") for s in shapes), shapes


def test_a_jump_whose_message_was_lost_is_sent_again_for_the_same_run() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b", {"a"})])
    wf.status = S.RUNNING
    _done(st["a"])
    st["b"].status = S.RUNNING
    st["b"].tasks[0].status = S.REDIRECT
    st["b"].context["_jump_pending"] = {"target": "a", "context": {"feedback": "more"}, "outputs": {"n": 1},
                                        "attempt": 2}
    (jump,) = recovery_messages(wf, records)
    assert isinstance(jump, JumpToStage)
    assert (jump.stage_id, jump.target_stage_ref_id, jump.jump_context, jump.jump_outputs, jump.attempt_token) == (
        st["b"].id, "a", {"feedback": "more"}, {"n": 1}, 2)
    del st["b"].context["_jump_pending"]  # decided (the jump's commit removes the key): nothing to resend
    assert recovery_messages(wf, records) == []


def test_a_multi_merge_between_runs_gets_its_next_step_and_its_downstream_waits() -> None:
    wf, records, st = _stored([_stage("a"), _stage("b"), _stage("mm", {"a", "b"}, join_type=JoinType.MULTI_MERGE),
                               _stage("down", {"mm"})])
    wf.status = S.RUNNING
    _done(st["a"])
    st["b"].status = S.RUNNING
    st["b"].tasks[0].status = S.RUNNING
    _done(st["mm"])  # its run over a's outputs ended; b's run is still owed
    st["mm"].context["_mm_consumed"] = ["a"]
    assert _shape(recovery_messages(wf, records)) == [f"RunTask({st['b'].tasks[0].id})", f"StartStage({st['mm'].id})"]
    st["mm"].context["_mm_done"] = True  # its last run released its downstreams: those start now
    assert f"StartStage({st['down'].id})" in _shape(recovery_messages(wf, records))


def test_a_jump_target_whose_start_was_lost_is_started_whatever_its_join_says() -> None:
    # fast jumped to join (marked _jump_bypass) while slow still runs: the jump's StartStage
    # may have been lost, so recovery sends one although join's AND is not met.
    wf, records, st = _stored([_stage("fast"), _stage("slow"), _stage("join", {"fast", "slow"})])
    wf.status = S.RUNNING
    _done(st["fast"])
    st["slow"].status = S.RUNNING
    st["slow"].tasks[0].status = S.RUNNING
    assert f"StartStage({st['join'].id})" not in _shape(recovery_messages(wf, records))
    st["join"].context["_jump_bypass"] = True
    assert _shape(recovery_messages(wf, records)) == [f"RunTask({st['slow'].tasks[0].id})",
                                                      f"StartStage({st['join'].id})"]


def test_a_stage_waiting_for_its_child_gets_the_childs_start_again() -> None:
    # The child's StartSubWorkflow may have been lost (a restore from before it ran): the plan
    # sends it again, rebuilt from the stage's config; the child's id is the stage's, so a child
    # that exists is not started twice (StartSubWorkflow launches nothing for an existing id).
    from stabilize_redis.queue.messages import StartSubWorkflow

    config = {"name": "child", "stages": [{"ref_id": "a", "tasks": [{"implementing_class": "emit"}]}]}
    wf, records, st = _stored([_stage("call", context={"_sub_workflow_config": config})])
    wf.status = S.RUNNING
    call = st["call"]
    call.status = call.tasks[0].status = S.SUSPENDED
    call.context.update({"_sub_workflow_id": "child-1", "_recursion_depth": 1})
    (start,) = recovery_messages(wf, records)
    assert isinstance(start, StartSubWorkflow)
    assert (start.execution_id, start.parent_execution_id, start.parent_stage_id) == ("child-1", wf.id, call.id)
    assert start.definition["stages"] == config["stages"]
    assert start.definition["context"] == {"_recursion_depth": 1, "_max_recursion_depth": 10,
                                           "_parent_workflow_id": wf.id, "_parent_stage_id": call.id}
    call.context.update({"_signal_name": "_sub_workflow_done", "_signal_data": {"sub_workflow_id": "child-1"}})
    assert recovery_messages(wf, records) == []  # its result arrived: nothing to resend


def test_a_limited_workflow_asks_its_limit_again_so_a_buffered_one_never_waits_on_nothing() -> None:
    from stabilize_redis.queue.messages import LimitAcquire

    wf, records, st = _stored([_stage("a")])
    wf.pipeline_config_id, wf.is_limit_concurrent, wf.max_concurrent_executions = "etl", True, 2
    wf.keep_waiting_pipelines = True
    wf.status = S.BUFFERED
    (ask,) = recovery_messages(wf, records)
    assert isinstance(ask, LimitAcquire)
    assert (ask.execution_id, ask.requester_id, ask.maximum, ask.keep_waiting) == ("~limit:etl", wf.id, 2, True)
    wf.status = S.RUNNING  # a holder re-registers too (answered "granted" again where the record knows it)
    st["a"].status = st["a"].tasks[0].status = S.RUNNING
    assert _shape(recovery_messages(wf, records)) == ["LimitAcquire", f"RunTask({st['a'].tasks[0].id})"]


def test_a_global_mutex_holder_re_registers_with_its_fence_and_a_waiter_asks_again() -> None:
    from stabilize_redis.queue.messages import GlobalMutexAcquire

    wf, records, st = _stored([_stage("hold", mutex_key="prod", mutex_scope="global"),
                               _stage("wait", mutex_key="prod", mutex_scope="global")])
    wf.status = S.RUNNING
    st["hold"].status = st["hold"].tasks[0].status = S.RUNNING
    st["hold"].context["_global_mutex"] = {"fence": 7, "run": 0}
    st["wait"].context["_global_mutex_asked"] = 0
    asks = [m for m in recovery_messages(wf, records) if isinstance(m, GlobalMutexAcquire)]
    assert [(a.requester_stage_id, a.run, a.fence_floor) for a in asks] == [(st["hold"].id, 0, 7),
                                                                           (st["wait"].id, 0, None)]
    assert all(a.execution_id == "~mutex:prod" and a.requester_id == wf.id for a in asks)
