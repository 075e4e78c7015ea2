"""Multi-instance groups (WCP-12..15, 34): MultiInstanceBuilder's shapes run as their config says,
a quorum join with cancel_remaining cancels the instances it no longer needs, AddMultiInstance
grows a dynamic group (the join waits for every added instance) and is rejected with an event
once the join has fired; a group not the shape its config describes is refused at submit."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus, is_cancellation_requested
from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType
from stabilize_redis.persistence.errors import WorkflowNotFoundError
from stabilize_redis.stages.multi_instance_builder import MultiInstanceBuilder
from stabilize_redis.validation import WorkflowValidationError
from tests.integration.support import (
    Engine,
    make_engine,
    make_stage,
    make_workflow,
    ms,
    stage_named,
    wait_until,
)

Target = tuple[str | None, str]
S = WorkflowStatus


class Work(Task):
    """Outputs ``value`` (the context's ``item``, else the instance index; nothing for a stage
    with neither); ``until_canceled``
    runs until the cancellation token fires (recorded in ``saw_token``); a ref id with a gate
    blocks until the test opens it. Executions are counted by ref id."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.saw_token: set[str] = set()
        self.on_cancel_called: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1
            self.running.add(stage.ref_id)
        if stage.context.get("until_canceled"):
            tick = threading.Event()
            while not is_cancellation_requested() and not tick.wait(0.005):
                pass
            self.saw_token.add(stage.ref_id)
            return TaskResult.canceled()
        gate = self.gates.get(stage.ref_id)
        if gate is not None:
            assert gate.wait(20), f"gate {stage.ref_id} never opened"
        if "item" not in stage.context and "_mi_instance_index" not in stage.context:
            return TaskResult.success()  # a parent or a plain stage: no value to collect
        return TaskResult.success(outputs={"value": stage.context.get("item", stage.context.get("_mi_instance_index"))})

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        self.on_cancel_called.add(stage.ref_id)
        return None


def engine(target: Target) -> tuple[Engine, Work]:
    eng = make_engine(target)
    work = Work()
    eng.registry.register("work", work)
    return eng, work


def with_tasks(stages: list[StageExecution]) -> list[StageExecution]:
    """Give every instance (not the join) one ``work`` task."""
    for stage in stages:
        if "_instance_" in stage.ref_id:
            stage.tasks = make_stage(stage.ref_id, "work").tasks
    return stages


def collecting_after(join_ref: str) -> StageExecution:
    return make_stage("after", "work", [join_ref])


def group(parent: StageExecution, stages: list[StageExecution], *after: StageExecution) -> Any:
    return make_workflow(parent, *with_tasks(stages), *after)


def test_a_fixed_group_runs_every_instance_then_its_join_once(target: Target) -> None:
    eng, work = engine(target)
    parent = make_stage("review", "work")
    stages = MultiInstanceBuilder.create_fixed(parent, 4, instance_type="reviewer", instance_name_prefix="Reviewer",
                                               instance_contexts=[{"item": f"doc-{i}"} for i in range(4)])
    join = stages[-1]
    join.output_reducers = {"value": "collect"}
    wf = eng.run(group(parent, stages, collecting_after("review_mi_join")))
    assert wf.status == S.SUCCEEDED
    assert [s.ref_id for s in stages[:-1]] == [f"review_instance_{i}" for i in range(4)]
    assert {r: n for r, n in work.runs.items() if "_instance_" in r} == {f"review_instance_{i}": 1 for i in range(4)}
    instances = [stage_named(wf, f"review_instance_{i}") for i in range(4)]
    assert [s.name for s in instances] == [f"Reviewer [{i}]" for i in range(4)]
    joined = stage_named(wf, "review_mi_join")
    assert ms(joined.start_time) >= max(ms(s.end_time) for s in instances)
    assert sorted(joined.context["value"]) == ["doc-0", "doc-1", "doc-2", "doc-3"]
    assert len(eng.events(wf.id, "stage.started")) == len(wf.stages)  # each stage, the join included, once


def test_without_sync_the_instances_run_and_the_workflow_ends_after_them(target: Target) -> None:
    eng, work = engine(target)
    parent = make_stage("fire", "work")
    stages = MultiInstanceBuilder.create_fixed(parent, 3, sync_on_complete=False)
    assert all("_mi_join" not in s.ref_id for s in stages)
    wf = eng.run(group(parent, stages))
    assert wf.status == S.SUCCEEDED
    assert all(stage_named(wf, f"fire_instance_{i}").status == S.SUCCEEDED for i in range(3))
    assert ms(wf.end_time) >= max(ms(stage_named(wf, f"fire_instance_{i}").end_time) for i in range(3))


def test_instances_from_a_collection_and_from_a_count_in_context_get_their_items(target: Target) -> None:
    eng, _ = engine(target)
    items = make_stage("items", "work", context={"files": ["a.txt", "b.txt", "c.txt"]})
    per_item = MultiInstanceBuilder.create_from_collection(items, "files", item_context_key="item")
    counted = make_stage("counted", "work", context={"n": 2})
    per_count = MultiInstanceBuilder.create_from_context(counted, "n", join_threshold=2)
    assert counted.mi_config is not None and counted.mi_config.count_from_context == "n"
    wf = eng.run(make_workflow(items, *with_tasks(per_item), counted, *with_tasks(per_count)))
    assert wf.status == S.SUCCEEDED
    assert [stage_named(wf, f"items_instance_{i}").outputs["value"] for i in range(3)] == ["a.txt", "b.txt", "c.txt"]
    assert [stage_named(wf, f"counted_instance_{i}").outputs["value"] for i in range(2)] == [0, 1]
    assert stage_named(wf, "counted_mi_join").join_type == JoinType.N_OF_M


def test_a_quorum_join_with_cancel_remaining_cancels_the_unfinished_instances_and_the_workflow_succeeds(
        target: Target) -> None:
    eng, work = engine(target)
    parent = make_stage("ask", "work")
    contexts = [{}, {}, {}, {"until_canceled": True}, {"until_canceled": True}]
    stages = MultiInstanceBuilder.create_fixed(parent, 5, join_threshold=3, cancel_remaining=True,
                                               instance_contexts=contexts)
    stages[-1].output_reducers = {"value": "collect"}
    wf = group(parent, stages, collecting_after("ask_mi_join"))
    quorum = threading.Event()  # the quorum finishes only once the two others are executing
    for i in range(3):
        work.gates[f"ask_instance_{i}"] = quorum
    with eng.threaded(concurrency=8):
        eng.start(wf)
        wait_until(lambda: {"ask_instance_3", "ask_instance_4"} <= work.running, what="the slow instances to run")
        quorum.set()
        done = wait_until(lambda: (w := eng.store.retrieve(wf.id)).status.is_complete and w, timeout=20,
                          what="the workflow to finish")
    assert done.status == S.SUCCEEDED
    for i in (3, 4):
        canceled = stage_named(done, f"ask_instance_{i}")
        assert canceled.status == S.CANCELED
        assert canceled.context["multiInstanceCanceledBy"] == "ask_mi_join"
    assert work.saw_token == {"ask_instance_3", "ask_instance_4"}
    assert work.on_cancel_called == {"ask_instance_3", "ask_instance_4"}
    joined = stage_named(done, "ask_mi_join")
    assert sorted(joined.context["value"]) == [0, 1, 2]  # the quorum's values, not the canceled ones'
    assert work.runs["after"] == 1
    (event,) = eng.events(wf.id, "mi.remaining_canceled")
    assert sorted(event["data"]["stages"]) == ["ask_instance_3", "ask_instance_4"]


def test_an_instance_added_while_the_parent_runs_is_waited_for_by_the_join(target: Target) -> None:
    eng, work = engine(target)
    work.gates["plan"] = threading.Event()
    parent = make_stage("plan", "work")
    stages = MultiInstanceBuilder.create_dynamic(parent, initial_count=1)
    stages[-1].output_reducers = {"value": "collect"}
    wf = group(parent, stages, collecting_after("plan_mi_join"))
    with eng.threaded(concurrency=4):
        eng.start(wf)
        wait_until(lambda: "plan" in work.running, what="the parent to run")
        eng.client.add_instance(wf.id, "plan", {"item": "extra-1"})
        eng.client.add_instance(wf.id, "plan", {"item": "extra-2"})
        wait_until(lambda: len(eng.events(wf.id, "mi.instance_added")) == 2, what="both instances added")
        work.gates["plan"].set()
        done = wait_until(lambda: (w := eng.store.retrieve(wf.id)).status.is_complete and w, timeout=20,
                          what="the workflow to finish")
    assert done.status == S.SUCCEEDED
    added = [stage_named(done, f"plan_instance_{i}") for i in (1, 2)]
    assert sorted(s.context["item"] for s in added) == ["extra-1", "extra-2"]  # added in either order
    assert [s.name for s in added] == ["Instance [1]", "Instance [2]"]
    joined = stage_named(done, "plan_mi_join")
    assert sorted(joined.context["value"], key=str) == [0, "extra-1", "extra-2"]
    assert ms(joined.start_time) >= max(ms(s.end_time) for s in added)
    assert stage_named(done, "plan").context["_mi_instance_count"] == 3


def test_an_instance_added_after_the_parent_finished_starts_at_once_and_the_join_waits(target: Target) -> None:
    eng, work = engine(target)
    work.gates["plan_instance_0"] = threading.Event()
    parent = make_stage("plan", "work")
    wf = group(parent, MultiInstanceBuilder.create_dynamic(parent, initial_count=1))
    with eng.threaded(concurrency=4):
        eng.start(wf)
        wait_until(lambda: "plan_instance_0" in work.running, what="the first instance to run")
        eng.client.add_instance(wf.id, "plan", {"item": "late"})
        wait_until(lambda: work.runs.get("plan_instance_1") == 1, what="the added instance to run")
        assert eng.store.retrieve(wf.id).stage_by_ref_id("plan_mi_join").status == S.NOT_STARTED
        work.gates["plan_instance_0"].set()
        done = wait_until(lambda: (w := eng.store.retrieve(wf.id)).status.is_complete and w, timeout=20,
                          what="the workflow to finish")
    assert done.status == S.SUCCEEDED
    assert ms(stage_named(done, "plan_mi_join").start_time) >= ms(stage_named(done, "plan_instance_1").end_time)


def test_an_instance_added_after_the_join_fired_is_rejected_with_an_event(target: Target) -> None:
    eng, work = engine(target)
    work.gates["after"] = threading.Event()
    parent = make_stage("plan", "work")
    fixed_parent = make_stage("fixed", "work")
    wf = make_workflow(parent, *with_tasks(MultiInstanceBuilder.create_dynamic(parent, initial_count=1)),
                       collecting_after("plan_mi_join"), fixed_parent,
                       *with_tasks(MultiInstanceBuilder.create_fixed(fixed_parent, 1)))
    with eng.threaded(concurrency=4):
        eng.start(wf)
        wait_until(lambda: "after" in work.running, what="the stage after the join to run")
        before = len(eng.store.retrieve(wf.id).stages)
        eng.client.add_instance(wf.id, "plan", {"item": "too late"})
        eng.client.add_instance(wf.id, "fixed", {})
        wait_until(lambda: len(eng.events(wf.id, "mi.instance_rejected")) == 2, what="both adds rejected")
        work.gates["after"].set()
        done = wait_until(lambda: (w := eng.store.retrieve(wf.id)).status.is_complete and w, timeout=20,
                          what="the workflow to finish")
    assert done.status == S.SUCCEEDED
    assert len(done.stages) == before
    reasons = sorted(e["data"]["reason"] for e in eng.events(wf.id, "mi.instance_rejected"))
    assert "already fired" in reasons[1] and "plan_mi_join" in reasons[1]
    assert "allow_dynamic" in reasons[0]


def _shape(mutate: str) -> list[StageExecution]:
    parent = make_stage("p", "work", context={"n": 3})
    stages = with_tasks(MultiInstanceBuilder.create_fixed(parent, 3, join_threshold=2))
    if mutate == "count":
        stages.pop(0)
        stages[-1].requisite_stage_ref_ids.discard("p_instance_0")
    elif mutate == "threshold":
        stages[-1].join_threshold = 1
    elif mutate == "no join":
        stages.pop()
    elif mutate == "cancel without threshold":
        assert parent.mi_config is not None
        parent.mi_config = MultiInstanceConfig(count=3, cancel_remaining=True)
        stages[-1].join_type, stages[-1].join_threshold = JoinType.AND, 0
    elif mutate == "count_from_context":
        assert parent.mi_config is not None
        parent.mi_config.count_from_context = "n"
        parent.context["n"] = 4
    elif mutate == "orphan":
        stages[0].context["_mi_parent_ref_id"] = "nobody"
    return [parent, *stages]


@pytest.mark.parametrize(("mutate", "says"), [
    ("count", "stage 'p': mi_config.count: 3, but the workflow has 2 instance stages"),
    ("threshold", "stage 'p': mi_config.join_threshold: 2, but stage 'p_mi_join' is not an N_OF_M join"),
    ("no join", "stage 'p': mi_config.sync_on_complete: no stage 'p_mi_join'"),
    ("cancel without threshold", "stage 'p': mi_config.cancel_remaining: needs a join_threshold"),
    ("count_from_context", "stage 'p': mi_config.count_from_context: context['n'] is 4"),
    ("orphan", "stage 'p_instance_0': context['_mi_parent_ref_id']: names the multi-instance parent 'nobody'"),
])
def test_a_group_not_the_shape_its_config_says_is_refused(target: Target, mutate: str, says: str) -> None:
    eng, _ = engine(target)
    wf = make_workflow(*_shape(mutate))
    with pytest.raises(WorkflowValidationError) as refused:
        eng.start(wf)
    assert says in str(refused.value)
    with pytest.raises(WorkflowNotFoundError):
        eng.store.retrieve(wf.id)  # nothing was stored
