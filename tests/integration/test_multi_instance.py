"""Multi-instance stages (WCP-12..15): every instance sees its own item, the join goes on once
after all (or after ``join_threshold``) instances, and an instance added at run time
(AddMultiInstance) is counted by the join, or - once the join fired - rejected with an event."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus, support
from stabilize_redis.decisions.multi_instance import MI_ADDED, MI_REJECTED
from stabilize_redis.handlers.add_multi_instance import AddMultiInstanceHandler
from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.queue.messages import AddMultiInstance
from stabilize_redis.stages.multi_instance_builder import MultiInstanceBuilder, join_ref_id
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


@pytest.fixture(autouse=True)
def accept_multi_instance(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MULTI_INSTANCE is still refused in support.py (cancel_remaining is not executed): accept
    mi_config for these tests only (each engine registers AddMultiInstanceHandler itself)."""
    checks = dict(support._CHECKS)
    checks[StageExecution] = [c for c in checks[StageExecution] if c[0] != "mi_config"]
    checks[MultiInstanceConfig] = []
    monkeypatch.setattr(support, "_CHECKS", checks)
    support.accept_message_type(AddMultiInstance)
    yield
    support.withdraw_message_type(AddMultiInstance)


class Record(Task):
    """Records, per stage ref id, the context each run saw."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.seen[stage.ref_id] = dict(stage.context)
            self.order.append(stage.ref_id)
        return TaskResult.success(outputs={f"out_{stage.ref_id}": True})


def work() -> list[TaskExecution]:
    return [TaskExecution.create(name="work", implementing_class="record")]


def build(parent: StageExecution, instances: list[StageExecution]) -> Any:
    after = make_stage("after", "record", [join_ref_id(parent.ref_id)])
    return make_workflow(parent, *instances, after)


def engine(target: Target) -> tuple[Engine, Record]:
    eng = make_engine(target)
    eng.processor.register_handler(AddMultiInstanceHandler(eng.processor.context))
    rec = Record()
    eng.registry.register("record", rec)
    return eng, rec


def instance_refs(rec: Record) -> list[str]:
    return sorted(r for r in rec.seen if "_instance_" in r)


def test_collection_instances_each_see_their_item_and_the_join_runs_once_after_all(target: Target) -> None:
    eng, rec = engine(target)
    parent = make_stage("fan", "record", context={"items": ["a", "b", "c"]})
    done = eng.run(build(parent, MultiInstanceBuilder.create_from_collection(parent, "items", tasks=work())))
    assert done.status == WorkflowStatus.SUCCEEDED
    items = {rec.seen[r]["item"] for r in instance_refs(rec)}
    assert items == {"a", "b", "c"}
    assert [rec.seen[f"fan_instance_{i}"]["_mi_instance_index"] for i in range(3)] == [0, 1, 2]
    assert rec.order[-1] == "after" and rec.order.count("after") == 1
    assert stage_named(done, "fan_mi_join").status == WorkflowStatus.SUCCEEDED


def test_fixed_and_context_counts_create_that_many_instances_with_their_contexts(target: Target) -> None:
    eng, rec = engine(target)
    fixed = make_stage("fixed", "record")
    ctx = make_stage("ctx", "record", context={"n": 4})
    stages = [fixed, *MultiInstanceBuilder.create_fixed(fixed, 2, tasks=work(),
                                                       instance_contexts=[{"who": "x"}, {"who": "y"}]),
              ctx, *MultiInstanceBuilder.create_from_context(ctx, "n", tasks=work())]
    done = eng.run(make_workflow(*stages))
    assert done.status == WorkflowStatus.SUCCEEDED
    assert [rec.seen[f"fixed_instance_{i}"]["who"] for i in range(2)] == ["x", "y"]
    assert len([r for r in instance_refs(rec) if r.startswith("ctx_")]) == 4
    assert stage_named(done, "ctx").mi_config == MultiInstanceConfig(count=4, count_from_context="n")


class Slow(Task):
    """Instance 0 finishes after the join fired: it polls (RUNNING) until ``after`` ran."""

    def __init__(self, rec: Record) -> None:
        self.rec = rec

    def execute(self, stage: StageExecution) -> TaskResult:
        if stage.context["_mi_instance_index"] == 0 and "after" not in self.rec.seen:
            return TaskResult.running()
        return self.rec.execute(stage)


def test_a_join_threshold_goes_on_after_that_many_instances(target: Target) -> None:
    eng, rec = engine(target)
    eng.registry.register("slow", Slow(rec))
    parent = make_stage("fan", "record")
    stages = MultiInstanceBuilder.create_fixed(
        parent, 3, join_threshold=2, tasks=[TaskExecution.create(name="work", implementing_class="slow")])
    done = eng.run(build(parent, stages))
    assert done.status == WorkflowStatus.SUCCEEDED
    assert rec.order.index("after") < rec.order.index("fan_instance_0"), "the join did not wait for the third"
    assert rec.order.count("after") == 1


class Adder(Task):
    """Pushes AddMultiInstance for ``fan`` once, from the stage named ``ref``, then (next poll)
    succeeds: the add lands while that stage still runs."""

    def __init__(self, eng: Engine, rec: Record, ref: str) -> None:
        self.eng, self.rec, self.ref, self.pushed = eng, rec, ref, False

    def execute(self, stage: StageExecution) -> TaskResult:
        if stage.ref_id == self.ref and not self.pushed:
            self.pushed = True
            fan = self.eng.store.retrieve(stage.execution.id).stage_by_ref_id("fan")
            assert fan is not None
            fan_id = fan.id
            self.eng.queue.push(AddMultiInstance(execution_id=stage.execution.id, execution_type="pipeline",
                                                 stage_id=fan_id, instance_context={"item": "late"}))
            return TaskResult.running()
        return self.rec.execute(stage)


@pytest.mark.parametrize("adder", ["fan", "fan_instance_0"])
def test_an_instance_added_at_run_time_is_counted_by_the_join(target: Target, adder: str) -> None:
    eng, rec = engine(target)
    eng.registry.register("adder", Adder(eng, rec, adder))
    parent = make_stage("fan", "adder")
    stages = MultiInstanceBuilder.create_dynamic(
        parent, initial_count=1, tasks=[TaskExecution.create(name="work", implementing_class="adder")])
    done = eng.run(build(parent, stages))
    assert done.status == WorkflowStatus.SUCCEEDED
    assert rec.seen["fan_instance_1"]["item"] == "late"
    assert rec.order.index("after") > rec.order.index("fan_instance_1"), "the join waited for the added one"
    assert rec.order.count("after") == 1
    assert len(eng.events(done.id, MI_ADDED)) == 1
    assert stage_named(done, "fan").context["_mi_instance_count"] == 2


def test_an_instance_added_after_the_join_fired_is_rejected_with_an_event(target: Target) -> None:
    eng, rec = engine(target)
    eng.registry.register("adder", Adder(eng, rec, "after"))
    parent = make_stage("fan", "record")
    stages = MultiInstanceBuilder.create_dynamic(parent, initial_count=2, tasks=work())
    wf = make_workflow(parent, *stages, make_stage("after", "adder", [join_ref_id("fan")]))
    done = eng.run(wf)
    assert done.status == WorkflowStatus.SUCCEEDED
    rejected = eng.events(done.id, MI_REJECTED)
    assert len(rejected) == 1 and "already fired" in rejected[0]["data"]["reason"]
    assert not eng.events(done.id, MI_ADDED)
    assert len([s for s in done.stages if "_instance_" in s.ref_id]) == 2
