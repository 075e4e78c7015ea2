"""Fan-in reducers (``output_reducers``): a join's context gets, under each reducer key, the
combination of the values its releasing upstreams produced - on every path that starts a stage,
the fused single-upstream start included; a reducer that fails fails the join, naming stage and key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stabilize_redis import JoinType, StageExecution, Task, TaskExecution, TaskResult, WorkflowStatus
from stabilize_redis.reducers import register_reducer, unregister_reducer
from stabilize_redis.reducers.fan_in import OUTPUT_REDUCER_ERROR, REDUCER_FAILED
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


class Emit(Task):
    """Outputs its stage's ``emit`` context value."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs=dict(stage.context.get("emit", {})))


class Record(Task):
    """Records the context each stage ran with; a stage with ``wait_for`` in its context keeps
    running until that stage has run (so it finishes after it), then emits ``emit``."""

    def __init__(self) -> None:
        self.contexts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            waits = stage.context.get("wait_for")
            if waits and waits not in self.contexts:
                return TaskResult.running()
            self.contexts[stage.ref_id] = dict(stage.context)
        return TaskResult.success(outputs=dict(stage.context.get("emit", {})))


@pytest.fixture
def custom_reducers() -> Iterator[list[str]]:
    """Names registered by a test, forgotten afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_reducer(name)


def slow_researcher() -> StageExecution:
    """'r3': its first task outputs its finding at once, its second runs until the quorum has
    run - so it is still RUNNING, with a finding in its outputs, when the quorum starts."""
    stage = make_stage("r3", "emit", ["plan"], {"emit": {"finding": "f3"}, "wait_for": "quorum"})
    stage.tasks = [TaskExecution.create("find", "emit", stage_start=True),
                   TaskExecution.create("linger", "record", stage_end=True)]
    return stage


def test_collect_in_a_two_of_three_quorum_gathers_exactly_the_findings_that_counted(target: Target) -> None:
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    wf = make_workflow(
        make_stage("plan", "record"),
        make_stage("r1", "record", ["plan"], {"emit": {"finding": "f1"}}),
        make_stage("r2", "record", ["plan"], {"emit": {"finding": "f2"}}),
        slow_researcher(),
        make_stage("quorum", "record", ["r1", "r2", "r3"], join_type=JoinType.N_OF_M, join_threshold=2,
                   output_reducers={"finding": "collect"}),
    )
    done = eng.run(wf)
    assert done.status == WorkflowStatus.SUCCEEDED
    r3 = stage_named(done, "r3")
    assert r3.status == WorkflowStatus.SUCCEEDED and r3.outputs["finding"] == "f3", "the third finished late"
    assert record.contexts["quorum"]["finding"] == ["f1", "f2"]
    assert stage_named(done, "quorum").context["finding"] == ["f1", "f2"]


def test_sum_merge_first_last_combine_the_branches_in_topological_order(target: Target) -> None:
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    branches = [make_stage(ref, "emit", context={"emit": {"n": n, "cfg": {ref: n, "shared": ref},
                                                          "who": ref, "tag": ref.upper()}})
                for ref, n in (("c", 1), ("a", 2), ("b", 4))]
    join = make_stage("join", "record", ["a", "b", "c"], {"n": 100, "who": "own"},
                      output_reducers={"n": "sum", "cfg": "merge", "who": "first", "tag": "last",
                                       "absent": "collect"})
    done = eng.run(make_workflow(*branches, join))
    assert done.status == WorkflowStatus.SUCCEEDED
    seen = record.contexts["join"]
    assert seen["n"] == 7, "the reducer's value, not the join's own context value"
    assert seen["cfg"] == {"c": 1, "a": 2, "b": 4, "shared": "b"}
    assert (seen["who"], seen["tag"]) == ("c", "B"), "branches in the workflow's (topological) order"
    assert "absent" not in seen


def test_a_registered_reducer_combines_the_branches(target: Target, custom_reducers: list[str]) -> None:
    register_reducer("longest", lambda values: max(values, key=len))
    custom_reducers.append("longest")
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    wf = make_workflow(
        make_stage("x", "emit", context={"emit": {"draft": "short"}}),
        make_stage("y", "emit", context={"emit": {"draft": "the longest draft"}}),
        make_stage("z", "emit", context={"emit": {"draft": "medium one"}}),
        make_stage("pick", "record", ["x", "y", "z"], output_reducers={"draft": "longest"}),
    )
    done = eng.run(wf)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert record.contexts["pick"]["draft"] == "the longest draft"


def _boom(values: list[Any]) -> Any:
    raise RuntimeError("reducer exploded")


FAILURES = {
    "raises": ("boom", _boom, "reducer exploded"),
    "unstorable": ("as_set", lambda values: set(values), "cannot be stored"),
    "nan": ("as_nan", lambda values: float("nan"), "cannot be stored"),
    "unknown": ("no_such_reducer", None, "unknown output reducer 'no_such_reducer'"),
    "builtin": ("sum", None, "TypeError"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failing_reducer_fails_the_join_naming_the_stage_and_key(target: Target, custom_reducers: list[str],
                                                                   case: str) -> None:
    name, fn, says = FAILURES[case]
    if fn is not None:
        register_reducer(name, fn)
        custom_reducers.append(name)
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    wf = make_workflow(
        make_stage("a", "emit", context={"emit": {"finding": "text"}}),
        make_stage("b", "emit", context={"emit": {"finding": 3}}),
        make_stage("join", "record", ["a", "b"], output_reducers={"finding": name}),
        make_stage("after", "record", ["join"]),
    )
    done = eng.run(wf)
    assert done.status == WorkflowStatus.TERMINAL
    join = stage_named(done, "join")
    assert join.status == WorkflowStatus.TERMINAL
    assert "join" not in record.contexts and "after" not in record.contexts, "no task ran past the failure"
    error = join.context["exception"]["details"]["error"]
    assert "stage 'join'" in error and "'finding'" in error and says in error
    assert join.context[OUTPUT_REDUCER_ERROR] == error
    failed = eng.events(done.id, REDUCER_FAILED)
    assert [(e["data"]["key"], e["data"]["reducer"]) for e in failed] == [("finding", name)]


def test_the_fused_single_upstream_start_applies_the_reducer(target: Target) -> None:
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    wf = make_workflow(
        make_stage("a", "emit", context={"emit": {"finding": "only"}}),
        make_stage("b", "record", ["a"], output_reducers={"finding": "collect"}),
    )
    eng.start(wf)
    while stage_named(eng.store.retrieve(wf.id), "a").status != WorkflowStatus.SUCCEEDED:
        assert eng.processor.process_one(), "a message is due until 'a' has finished"
    b = stage_named(eng.store.retrieve(wf.id), "b")
    assert b.status == WorkflowStatus.RUNNING, "started by the commit that completed 'a' (no StartStage)"
    assert b.context["finding"] == ["only"]
    eng.processor.process_all(timeout=20)
    assert record.contexts["b"]["finding"] == ["only"]


def test_a_restart_of_a_join_whose_reducer_failed_reduces_again_and_can_succeed(
        target: Target, custom_reducers: list[str]) -> None:
    broken = [True]

    def flaky(values: list[Any]) -> Any:
        if broken[0]:
            raise RuntimeError("not yet")
        return sorted(values)

    register_reducer("flaky", flaky)
    custom_reducers.append("flaky")
    record = Record()
    eng = make_engine(target)
    eng.registry.register("record", record)
    eng.registry.register("emit", Emit())
    wf = make_workflow(
        make_stage("a", "emit", context={"emit": {"finding": "zeta"}}),
        make_stage("b", "emit", context={"emit": {"finding": "alpha"}}),
        make_stage("join", "record", ["a", "b"], output_reducers={"finding": "flaky"}),
    )
    failed = eng.run(wf)
    assert stage_named(failed, "join").status == WorkflowStatus.TERMINAL
    broken[0] = False
    eng.client.restart(wf.id, "join")
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    join = stage_named(done, "join")
    assert record.contexts["join"]["finding"] == ["alpha", "zeta"]
    assert OUTPUT_REDUCER_ERROR not in join.context and "exception" not in join.context
