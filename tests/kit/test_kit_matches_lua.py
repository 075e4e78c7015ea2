"""The kit's commit means what ``lua/commit.lua`` means: the same workflows run through the kit
and through real Redis (store + StartWorkflow + QueueProcessor) end with the same workflow and
stage statuses and the same counter, threshold and settled-flag fields."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from stabilize_redis import TaskResult, Workflow
from stabilize_redis.models.stage import JoinType, SplitType
from stabilize_redis.queue.messages import StartWorkflow
from tests.integration.support import make_engine, make_stage, make_workflow
from tests.kit.handler_kit import counter_state, given_workflow


def chain() -> Workflow:
    return make_workflow(make_stage("a"), make_stage("b", requires={"a"}), make_stage("c", requires={"b"}))


def diamond() -> Workflow:
    return make_workflow(make_stage("a"), make_stage("b", requires={"a"}), make_stage("c", requires={"a"}),
                         make_stage("d", requires={"b", "c"}))


def or_split() -> Workflow:
    a = make_stage("a", task="emit", split_type=SplitType.OR,
                   split_conditions={"b": "go == 'b'", "c": "go == 'c'"})
    return make_workflow(a, make_stage("b", requires={"a"}), make_stage("c", requires={"a"}),
                         make_stage("d", requires={"b", "c"}))


def n_of_m() -> Workflow:
    return make_workflow(make_stage("a"), make_stage("b"), make_stage("c"),
                         make_stage("j", requires={"a", "b", "c"}, join_type=JoinType.N_OF_M, join_threshold=2))


def failing_stage() -> Workflow:
    return make_workflow(make_stage("a"), make_stage("b", task="fail", requires={"a"}),
                         make_stage("c", requires={"b"}), make_stage("x"))


def stopped_branch() -> Workflow:
    return make_workflow(make_stage("a", task="fail", context={"failPipeline": False}),
                         make_stage("b", requires={"a"}), make_stage("x"))


TASKS: dict[str, Callable[..., TaskResult]] = {
    "t": lambda stage: TaskResult.success(outputs={f"out_{stage.ref_id}": 1}),
    "emit": lambda stage: TaskResult.success(outputs={"go": "b"}),
    "fail": lambda stage: TaskResult.terminal("boom"),
}

WORKFLOWS = {"chain": chain, "diamond": diamond, "or-split": or_split, "n-of-m": n_of_m,
             "failing-stage": failing_stage, "stopped-branch": stopped_branch}


def text(fields: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): v for k, v in fields.items()}


@pytest.mark.parametrize("build", WORKFLOWS.values(), ids=list(WORKFLOWS))
def test_a_workflow_ends_in_the_kit_as_it_ends_on_redis(real_target: tuple[str, str],
                                                        build: Callable[[], Workflow]) -> None:
    wf = build()
    twin = copy.deepcopy(wf)  # same ids on both sides

    engine = make_engine(real_target)
    for name, fn in TASKS.items():
        engine.registry.register(name, fn)
    on_redis = engine.run(wf)
    redis_hash = text(engine.store.backend.load_hash(wf.id))

    kit = given_workflow(twin, engine.registry)
    kit.handle(StartWorkflow(execution_id=twin.id))
    kit.run_until_quiet()
    in_kit = kit.workflow()

    assert in_kit.status == on_redis.status
    assert {s.ref_id: s.status for s in in_kit.stages} == {s.ref_id: s.status for s in on_redis.stages}
    assert counter_state(kit.backend.hashes[twin.id]) == counter_state(redis_hash)
    assert kit.pushed() == []
