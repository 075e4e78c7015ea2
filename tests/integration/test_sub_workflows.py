"""Sub-workflows (WCP-22) and the outbox they travel through, end to end on real Redis and the
embedded default.

What a user depends on: a SubWorkflowTask runs the child described by ``_sub_workflow_config``
and finishes with its status and outputs, wherever (in whichever partition) the child lives; a
failing child fails the parent stage naming its status; a bad definition or a recursion past
its limit fails the task before anything starts; a start delivered twice makes one child; the
parent workflow stays RUNNING while its child runs; canceling the parent cancels the child.
"""

from __future__ import annotations

import threading
from typing import Any

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.decisions.sub_workflow import child_workflow_id, start_message
from stabilize_redis.handlers.start_sub_workflow import StartSubWorkflowHandler
from stabilize_redis.keys import partition_of
from stabilize_redis.queue.messages import StartSubWorkflow, new_message_id
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]
_S = WorkflowStatus


class Emit(Task):
    """Outputs ``{<ref_id>: <its context's 'value'>}`` and records which stages ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.ran.append(stage.ref_id)
        return TaskResult.success(outputs={stage.ref_id: stage.context.get("value", stage.ref_id)})


class Fail(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.terminal("the child's work failed")


class Hold(Task):
    """RUNNING (polled) until ``release`` is set."""

    release = threading.Event()

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success() if self.release.is_set() else TaskResult.running()


def engine(target: Target) -> tuple[Engine, Emit]:
    eng = make_engine(target)
    emit = Emit()
    eng.registry.register("emit", emit)
    eng.registry.register("fail", Fail)
    eng.registry.register("hold", Hold)
    return eng, emit


def child_config(*stages: dict[str, Any], **context: Any) -> dict[str, Any]:
    return {"name": "child", "application": "itest", "context": context, "stages": list(stages)}


def parent(config: dict[str, Any] | None, **context: Any) -> Workflow:
    """call (SubWorkflowTask over ``config``) -> after (emit); its id is picked so that the
    child of its first run lives in another partition (the outbox path)."""
    ctx = dict(context)
    if config is not None:
        ctx["_sub_workflow_config"] = config
    wf = make_workflow(make_stage("call", "subWorkflow", context=ctx), make_stage("after", "emit", ["call"]))
    call = stage_named(wf, "call")
    for i in range(1000):
        wf.id = f"parent-{new_message_id()}-{i}"
        if partition_of(child_workflow_id(wf.id, call.id, 0), 16) != partition_of(wf.id, 16):
            break
    return wf


def test_a_child_in_another_partition_runs_and_its_outputs_finish_the_parent(target: Target) -> None:
    eng, emit = engine(target)
    wf = eng.run(parent(child_config({"ref_id": "a", "tasks": [{"implementing_class": "emit"}], "context": {"value": 1}},
                                     {"ref_id": "b", "requisite_stage_ref_ids": ["a"],
                                      "tasks": [{"implementing_class": "emit"}]}, seed="s")))
    assert wf.status == _S.SUCCEEDED
    call = stage_named(wf, "call")
    child_id = call.outputs["sub_workflow_id"]
    assert child_id == child_workflow_id(wf.id, call.id, 0)
    assert partition_of(child_id, 16) != partition_of(wf.id, 16)  # it went through the outbox
    assert call.outputs["sub_workflow_status"] == "SUCCEEDED"
    assert call.outputs["sub_workflow_outputs"] == {"a": 1, "b": "b"}
    child = eng.store.retrieve(child_id)
    assert child.status == _S.SUCCEEDED
    assert child.context["_parent_workflow_id"] == wf.id and child.context["_recursion_depth"] == 1
    assert child.context["seed"] == "s"
    assert emit.ran.count("a") == 1 and emit.ran.count("b") == 1 and emit.ran.count("after") == 1
    assert [e["data"]["sub_workflow_id"] for e in eng.events(wf.id, "sub_workflow.started")] == [child_id]


def test_a_failing_child_fails_the_parent_stage_naming_its_status(target: Target) -> None:
    eng, emit = engine(target)
    wf = eng.run(parent(child_config({"ref_id": "x", "tasks": [{"implementing_class": "fail"}]})))
    assert wf.status == _S.TERMINAL
    call = stage_named(wf, "call")
    assert call.status == _S.TERMINAL
    assert call.context["error"] == "Child workflow failed with status TERMINAL"
    assert eng.store.retrieve(call.context["sub_workflow_id"]).status == _S.TERMINAL
    assert "after" not in emit.ran


def test_recursion_past_its_limit_fails_the_task_before_anything_starts(target: Target) -> None:
    eng, _ = engine(target)
    wf = eng.run(parent(child_config({"ref_id": "a", "tasks": [{"implementing_class": "emit"}]}),
                        _recursion_depth=3, _max_recursion_depth=3))
    call = stage_named(wf, "call")
    assert wf.status == _S.TERMINAL
    assert call.context["error"] == "Maximum recursion depth (3) exceeded"
    assert "_sub_workflow_id" not in call.context
    assert eng.events(wf.id, "sub_workflow.started") == []


def test_a_bad_definition_fails_the_task_naming_the_stage_and_field(target: Target) -> None:
    eng, _ = engine(target)
    wf = eng.run(parent(child_config({"ref_id": "a", "colour": "red", "tasks": [{"implementing_class": "emit"}]})))
    call = stage_named(wf, "call")
    assert wf.status == _S.TERMINAL
    assert call.context["error"] == "Failed to start child workflow: stage 0 ('a'): unknown field 'colour'"
    missing = eng.run(parent(None))
    assert stage_named(missing, "call").context["error"] == "No _sub_workflow_config in context"


def test_a_start_delivered_twice_makes_one_child(target: Target) -> None:
    eng, emit = engine(target)
    definition = child_config({"ref_id": "a", "tasks": [{"implementing_class": "emit"}]})
    first = start_message("some-parent", "some-stage", "child-once", definition, "PIPELINE")
    first.message_id = new_message_id()
    backend = eng.client.backend
    assert backend.deliver_relayed(first) is True
    assert backend.deliver_relayed(first) is False  # a relay forwarding again after a crash
    again = StartSubWorkflow(**{**first.__dict__, "message_id": new_message_id()})  # a re-sent start (recovery)
    StartSubWorkflowHandler(eng.processor.context).handle(again)
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve("child-once").status == _S.SUCCEEDED
    assert emit.ran.count("a") == 1
    assert len(eng.events("child-once", "workflow.created")) == 1


def test_the_parent_stays_running_while_its_child_runs_and_canceling_it_cancels_the_child(target: Target) -> None:
    eng, _ = engine(target)
    Hold.release.clear()
    wf = parent(child_config({"ref_id": "h", "tasks": [{"implementing_class": "hold"}]}))
    eng.start(wf)
    call_id = stage_named(wf, "call").id
    child_id = child_workflow_id(wf.id, call_id, 0)

    def child_holds() -> bool:
        eng.processor.process_one()
        try:
            child = eng.store.retrieve(child_id)
        except Exception:  # noqa: BLE001 - not created yet
            return False
        return stage_named(child, "h").status == _S.RUNNING

    wait_until(child_holds, 20, "the child to run its holding stage")
    now = eng.store.retrieve(wf.id)
    assert now.status == _S.RUNNING
    assert stage_named(now, "call").status == _S.SUSPENDED
    eng.client.cancel(wf.id, user="ops", reason="stop")
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(child_id).status == _S.CANCELED
    assert eng.store.retrieve(wf.id).status == _S.CANCELED


def test_an_outbox_entry_that_is_not_a_message_is_dead_lettered_not_forwarded(target: Target) -> None:
    from stabilize_redis.keys import ENTRY_ID_FIELD, ENTRY_PAYLOAD_FIELD
    from stabilize_redis.queue.messages import RelayMessage

    eng, _ = engine(target)
    bad = RelayMessage(execution_id="src", message={"type": "StartStage", "execution_id": "x"})  # no stage_id
    eng.client.backend.client.xadd(eng.client.backend.part("src").ready,
                                   {ENTRY_ID_FIELD: "m-bad", ENTRY_PAYLOAD_FIELD: bad.encode()})
    eng.processor.process_all(timeout=10)
    (dead,) = eng.queue.list_dlq()
    assert dead["reason"] == "bad_relay"
    assert "StartStage.stage_id: missing or empty" in dead["error"]


def test_a_jump_that_resets_a_waiting_stage_cancels_its_child_and_the_next_run_starts_a_new_one(
        target: Target) -> None:
    # top -> (jumper, call); call waits on its child (holding), jumper then jumps back to top: the
    # reset region holds call, whose child is canceled in the jump's commit; call's second run
    # starts a new child (run 1), which finishes once released.
    eng, _ = engine(target)
    Hold.release.clear()
    holder: dict[str, Any] = {}

    class Jumper(Task):
        runs = 0

        def execute(self, stage: StageExecution) -> TaskResult:
            Jumper.runs += 1
            if Jumper.runs == 1:
                wf_id, call_id = holder["wf"].id, holder["call"]
                wait_until(lambda: (eng.processor.process_one(), _child_holds(eng, child_workflow_id(wf_id, call_id, 0)))[1],
                           20, "the first child to hold")
                return TaskResult.jump_to("top")
            return TaskResult.success()

    eng.registry.register("jumper", Jumper)
    config = child_config({"ref_id": "h", "tasks": [{"implementing_class": "hold"}]})
    wf = make_workflow(make_stage("top", "emit"), make_stage("jumper", "jumper", ["top"]),
                       make_stage("call", "subWorkflow", ["top"], context={"_sub_workflow_config": config}))
    call_id = stage_named(wf, "call").id
    holder.update(wf=wf, call=call_id)
    eng.start(wf)
    first, second = child_workflow_id(wf.id, call_id, 0), child_workflow_id(wf.id, call_id, 1)
    wait_until(lambda: (eng.processor.process_one(), _child_holds(eng, second))[1], 30, "the second child to hold")
    assert eng.store.retrieve(first).status == _S.CANCELED
    Hold.release.set()
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == _S.SUCCEEDED
    assert stage_named(done, "call").outputs["sub_workflow_id"] == second


def _child_holds(eng: Engine, child_id: str) -> bool:
    try:
        child = eng.store.retrieve(child_id)
    except Exception:  # noqa: BLE001 - not created yet
        return False
    return stage_named(child, "h").status == _S.RUNNING
