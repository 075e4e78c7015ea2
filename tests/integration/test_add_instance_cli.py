"""``stabilize-redis add-instance WORKFLOW STAGE [--context JSON]``, on real Redis and the
embedded default.

What an operator depends on: the command grows a running dynamic multi-instance group (by the
parent's ref id or stage id), the new instance runs with the given context and the join waits
for it; a refused command (bad JSON, not an object, a value that cannot be sent, an unknown
stage or workflow) exits as ``signal`` does and enqueues nothing; exit 0 means enqueued, and an
add the group cannot take is reported as an event; ``--help`` lists the command.
"""

from __future__ import annotations

import threading

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.stages.multi_instance_builder import MultiInstanceBuilder
from tests.integration.support import (
    Engine,
    make_engine,
    make_stage,
    make_workflow,
    ms,
    stage_named,
    wait_until,
)
from workers.cli import main as cli_main

Target = tuple[str | None, str]
S = WorkflowStatus


class Work(Task):
    """An instance succeeds with output ``value``: its context's ``item``, else its index. The
    parent (no instance index) blocks until ``release`` is set when ``hold_parent``; every ref id
    that started running is in ``running``."""

    def __init__(self, hold_parent: bool = False) -> None:
        self.hold_parent = hold_parent
        self.release = threading.Event()
        self.running: set[str] = set()
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.running.add(stage.ref_id)
        if "_mi_instance_index" not in stage.context:
            if self.hold_parent:
                assert self.release.wait(20), "the test never released the parent"
            return TaskResult.success()
        return TaskResult.success(outputs={"value": stage.context.get("item", stage.context["_mi_instance_index"])})


def dynamic_group(eng: Engine, work: Work) -> Workflow:
    """``plan`` (a dynamic group seeded with one instance, its join collecting ``value``)."""
    eng.registry.register("work", work)
    parent = make_stage("plan", "work")
    stages = MultiInstanceBuilder.create_dynamic(parent, initial_count=1)
    for stage in stages:
        if "_instance_" in stage.ref_id:
            stage.tasks = make_stage(stage.ref_id, "work").tasks
    stages[-1].output_reducers = {"value": "collect"}
    return make_workflow(parent, *stages)


def cli(target: Target, *args: str) -> int:
    url_args = ["--url", target[0]] if target[0] else []
    return cli_main(["add-instance", *url_args, "--namespace", target[1], *args])


def test_the_command_adds_an_instance_to_a_running_group_and_the_join_waits_for_it(
        target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    eng, work = make_engine(target), Work(hold_parent=True)
    wf = dynamic_group(eng, work)
    parent_id = stage_named(wf, "plan").id
    with eng.threaded(concurrency=4):
        eng.start(wf)
        wait_until(lambda: "plan" in work.running, what="the parent to run")
        assert cli(target, wf.id, "plan", "--context", '{"item": "extra"}') == 0
        out = capsys.readouterr().out
        assert f"stage {parent_id} of workflow {wf.id} enqueued" in out and '{"item": "extra"}' in out
        wait_until(lambda: len(eng.events(wf.id, "mi.instance_added")) == 1, what="the first instance added")
        assert cli(target, wf.id, parent_id) == 0  # by stage id, no --context: an empty one
        wait_until(lambda: len(eng.events(wf.id, "mi.instance_added")) == 2, what="the second instance added")
        work.release.set()
        done = eng.client.wait(wf.id, timeout=20)
    assert done.status == S.SUCCEEDED
    by_ref, by_id = stage_named(done, "plan_instance_1"), stage_named(done, "plan_instance_2")
    assert by_ref.status == by_id.status == S.SUCCEEDED
    assert by_ref.context["item"] == "extra" and by_ref.outputs["value"] == "extra"
    assert "item" not in by_id.context and by_id.outputs["value"] == 2
    joined = stage_named(done, "plan_mi_join")
    assert sorted(joined.context["value"], key=str) == [0, 2, "extra"]
    assert ms(joined.start_time) >= max(ms(by_ref.end_time), ms(by_id.end_time))


@pytest.mark.parametrize(("args", "code", "says"), [
    (["plan", "--context", "{item"], 2, "--context is not JSON"),
    (["plan", "--context", '["a"]'], 2, "--context must be a JSON object"),
    (["plan", "--context", '{"n": NaN}'], 2, "not a finite number"),
    (["nope", "--context", "{}"], 1, "has no stage with id or ref id 'nope'"),
])
def test_a_refused_command_exits_as_signal_does_and_enqueues_nothing(
        target: Target, capsys: pytest.CaptureFixture[str], args: list[str], code: int, says: str) -> None:
    eng, work = make_engine(target), Work()
    wf = eng.start(dynamic_group(eng, work))  # stored and started, nothing processed yet
    queued = eng.queue.size()
    assert cli(target, wf.id, *args) == code
    out = capsys.readouterr().out
    assert out.startswith("add-instance refused:") and says in out
    assert eng.queue.size() == queued
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == S.SUCCEEDED and done.stage_by_ref_id("plan_instance_1") is None
    assert eng.events(wf.id, "mi.instance_added") == eng.events(wf.id, "mi.instance_rejected") == []


def test_an_unknown_workflow_exits_1(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(target, "no-such-workflow", "plan") == 1
    assert "workflow no-such-workflow is not in Redis" in capsys.readouterr().out


def test_exit_0_means_enqueued_and_an_add_the_group_cannot_take_is_an_event(
        target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    eng, work = make_engine(target), Work()
    wf = dynamic_group(eng, work)
    assert eng.run(wf).status == S.SUCCEEDED
    assert cli(target, wf.id, "plan", "--context", '{"item": "late"}') == 0
    assert "mi.instance_rejected" in capsys.readouterr().out
    eng.processor.process_all(timeout=20)
    (rejected,) = eng.events(wf.id, "mi.instance_rejected")
    assert "SUCCEEDED" in rejected["data"]["reason"]
    assert len(eng.store.retrieve(wf.id).stages) == len(wf.stages)


def test_the_help_lists_the_command_and_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as shown:
        cli_main(["--help"])
    assert shown.value.code == 0
    assert "add-instance" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["add-instance", "--help"])
    text = capsys.readouterr().out
    assert "--context" in text and "Exit codes" in text and "mi.instance_rejected" in text
