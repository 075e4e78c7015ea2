"""Invalid workflows are rejected at submit with a message naming the stage and the field, and
nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_redis import (
    Client,
    JoinType,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowValidationError,
    connect,
)
from tests.integration.support import make_stage

Target = tuple[str | None, str]


def unvalidated(*stages: StageExecution, context: dict[str, Any] | None = None) -> Workflow:
    """A workflow built without Workflow.create's validation, as a client might send it."""
    return Workflow(application="itest", name="invalid", stages=list(stages), context=dict(context or {}))


def assert_nothing_written(client: Client, wf: Workflow) -> None:
    assert client.backend.workflow_ids() == []
    assert not client.store.exists(wf.id)
    assert client.queue.size() == 0
    assert client.events(wf.id) == []


def no_impl_stage() -> StageExecution:
    stage = make_stage("build", "compile")
    stage.tasks.append(TaskExecution.create(name="publish", implementing_class=""))
    return stage


CASES: dict[str, tuple[Any, list[str]]] = {
    "duplicate-ref": (lambda: [make_stage("a"), make_stage("a")], ["duplicate_ref", "'a'"]),
    "unknown-requisite": (lambda: [make_stage("a"), make_stage("b", requires={"ghost"})],
                          ["unknown_ref", "'b'", "'ghost'"]),
    "self-edge": (lambda: [make_stage("a", requires={"a"})], ["self_edge", "'a'"]),
    "cycle": (lambda: [make_stage("a", requires={"c"}), make_stage("b", requires={"a"}),
                       make_stage("c", requires={"b"}), make_stage("d", requires={"c"})],
              ["cycle", "'a'", "'b'", "'c'"]),
    "empty-implementing-class": (lambda: [no_impl_stage()], ["'build'", "tasks[1].implementing_class"]),
    # A datetime is stored as its str, like stabilize's default=str (test_unsupported_rejected.py);
    # an object whose str is only a repr is refused.
    "object-in-context": (lambda: [make_stage("a"), make_stage("when", requires={"a"},
                                                               context={"schedule": {"at": complex(1, 2)}})],
                          ["'when'", "context.schedule.at", "complex"]),
    "set-in-context": (lambda: [make_stage("tagged", context={"tags": {"x", "y"}})], ["'tagged'", "context.tags", "set"]),
    "set-in-list-in-outputs": (lambda: [make_stage("out", outputs={"rows": [1, {"x"}]})],
                               ["'out'", "outputs.rows[1]", "set"]),
    "non-string-key": (lambda: [make_stage("keys", context={"by_id": {1: "one"}})], ["'keys'", "context.by_id", "1"]),
    "n-of-m-threshold": (lambda: [make_stage("a"), make_stage("j", requires={"a"}, join_type=JoinType.N_OF_M,
                                                             join_threshold=2)], ["'j'", "join_threshold"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_workflow_is_rejected_naming_stage_and_field(target: Target, case: str) -> None:
    url, ns = target
    client = connect(url, ns)
    build, expected = CASES[case]
    wf = unvalidated(*build())

    with pytest.raises(WorkflowValidationError) as info:
        client.submit(wf)

    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert_nothing_written(client, wf)


def test_non_serializable_workflow_context_is_rejected_naming_the_key(target: Target) -> None:
    url, ns = target
    client = connect(url, ns)
    wf = unvalidated(make_stage("a"), context={"deadline": complex(1, 2)})

    with pytest.raises(WorkflowValidationError, match=r"context\.deadline.*complex"):
        client.submit(wf)

    assert_nothing_written(client, wf)


def test_workflow_without_stages_is_rejected(target: Target) -> None:
    url, ns = target
    client = connect(url, ns)
    wf = unvalidated()

    with pytest.raises(WorkflowValidationError, match="stages"):
        client.submit(wf)

    assert_nothing_written(client, wf)


def test_valid_workflow_is_accepted_after_a_rejected_one(target: Target) -> None:
    url, ns = target
    client = connect(url, ns)
    with pytest.raises(WorkflowValidationError):
        client.submit(unvalidated(make_stage("a", requires={"a"})))

    good = unvalidated(make_stage("a"), make_stage("b", requires={"a"}))
    assert client.submit(good) == good.id

    assert client.backend.workflow_ids() == [good.id]
    assert client.status(good.id) == "RUNNING"  # submit starts it: StartStage of "a" is queued
    assert client.queue.size() == 1
