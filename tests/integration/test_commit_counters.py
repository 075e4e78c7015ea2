"""``lua/commit.lua``'s counter steps, called directly (real Redis and the embedded fakeredis):
thresholds stored beside counters, the reset/recount step, settling stages (with the stages
that can no longer start) and the one release of CompleteWorkflow."""

from __future__ import annotations

import json

from stabilize_redis import RedisWorkflowStore, Workflow
from stabilize_redis.backend.redis_backend import CommitOutcome, RedisBackend
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import (
    COMPLETION_FIELD,
    HALTED_COUNTER,
    SETTLED_COUNTER,
    counter_field,
    join_counter,
    settled_flag_field,
)
from stabilize_redis.queue.messages import CompleteWorkflow, StartStage
from tests.integration.support import make_stage, make_workflow

Target = tuple[str | None, str]


def stored(target: Target, wf: Workflow) -> RedisBackend:
    url, ns = target
    store = RedisWorkflowStore(url, namespace=ns)
    store.store(wf)
    return store.backend


def field(backend: RedisBackend, wf: Workflow, name: str) -> bytes | None:
    value: bytes | None = backend.client.hget(backend.part(wf.id).workflow(wf.id), name)
    return value


def queued(backend: RedisBackend, wf: Workflow) -> list[tuple[str, str]]:
    """(type, stage id) of every message on the workflow's ready stream, oldest first."""
    out = []
    for _, entry in backend.client.xrange(backend.part(wf.id).ready):
        data = json.loads(entry[b"m"])
        out.append((data["type"], data.get("stage_id", "")))
    return out


def commit(backend: RedisBackend, t: Transition) -> str:
    return backend.commit(t, None, None)


def ids(wf: Workflow) -> dict[str, str]:
    return {s.ref_id: s.id for s in wf.stages}


def two_stages(target: Target) -> tuple[Workflow, RedisBackend, dict[str, str]]:
    """Top-level stages a and x side by side, stored: (workflow, backend, stage id by ref)."""
    wf = make_workflow(make_stage("a"), make_stage("x"))
    return wf, stored(target, wf), ids(wf)


def settle(backend: RedisBackend, wf: Workflow, *stages: tuple[str, bool]) -> str:
    """Commit settling each (stage id, halted), each releasing CompleteWorkflow."""
    t = Transition(wf.id)
    for sid, halted in stages:
        t.settle(sid, halted, CompleteWorkflow(execution_id=wf.id))
    return commit(backend, t)


def join_of_three(target: Target) -> tuple[Workflow, RedisBackend, str]:
    """Stages a, b, c and j joining all three, stored: (workflow, backend, j's id)."""
    wf = make_workflow(make_stage("a"), make_stage("b"), make_stage("c"), make_stage("j", requires={"a", "b", "c"}))
    return wf, stored(target, wf), ids(wf)["j"]


def count_join(backend: RedisBackend, wf: Workflow, j: str) -> str:
    """Commit one count toward j's join, releasing its StartStage."""
    t = Transition(wf.id)
    t.count(join_counter(j), StartStage(execution_id=wf.id, stage_id=j))
    return commit(backend, t)


def test_a_join_is_released_by_the_count_that_reaches_its_stored_threshold(target: Target) -> None:
    wf, backend, j = join_of_three(target)
    for n in range(3):
        assert count_join(backend, wf, j) == CommitOutcome.OK
        assert queued(backend, wf) == ([("StartStage", j)] if n == 2 else [])
    assert field(backend, wf, counter_field(join_counter(j))) == b"3"


def test_a_reset_stores_a_new_threshold_that_later_counts_are_released_by(target: Target) -> None:
    wf, backend, j = join_of_three(target)
    count_join(backend, wf, j)
    reset = Transition(wf.id)
    reset.reset_counter(join_counter(j), 0, threshold=2)
    commit(backend, reset)
    assert field(backend, wf, counter_field(join_counter(j))) == b"0"
    for n in range(2):
        count_join(backend, wf, j)
        assert queued(backend, wf) == ([("StartStage", j)] if n == 1 else [])


def test_a_halted_stage_settles_with_its_unreachable_downstreams_and_completion_is_released_once(
        target: Target) -> None:
    wf = make_workflow(make_stage("a"), make_stage("b", requires={"a"}), make_stage("c", requires={"b"}),
                       make_stage("x"))
    backend, s = stored(target, wf), ids(wf)
    settle(backend, wf, (s["a"], True))
    assert [field(backend, wf, settled_flag_field(s[r])) for r in "abcx"] == [b"h", b"h", b"h", None]
    assert field(backend, wf, counter_field(SETTLED_COUNTER)) == b"3"
    assert field(backend, wf, counter_field(HALTED_COUNTER)) == b"3"
    assert queued(backend, wf) == []
    for _ in range(2):  # the second settle of x (a redelivery, a racing path) counts nothing
        settle(backend, wf, (s["x"], False))
    late = Transition(wf.id)
    late.request_completion(CompleteWorkflow(execution_id=wf.id))
    commit(backend, late)
    assert field(backend, wf, counter_field(SETTLED_COUNTER)) == b"4"
    assert queued(backend, wf) == [("CompleteWorkflow", "")]
    assert field(backend, wf, COMPLETION_FIELD) == b"1"


def test_a_requested_completion_is_released_once_and_the_settled_count_adds_none(target: Target) -> None:
    wf, backend, s = two_stages(target)
    fail = Transition(wf.id)
    fail.settle(s["a"], True, CompleteWorkflow(execution_id=wf.id))
    fail.request_completion(CompleteWorkflow(execution_id=wf.id))
    commit(backend, fail)
    assert queued(backend, wf) == [("CompleteWorkflow", "")]
    settle(backend, wf, (s["x"], True))
    assert queued(backend, wf) == [("CompleteWorkflow", "")]


def test_unsettling_takes_a_stage_off_the_count_and_completion_can_be_released_again(target: Target) -> None:
    wf, backend, s = two_stages(target)
    settle(backend, wf, (s["a"], False), (s["x"], True))
    assert len(queued(backend, wf)) == 1
    again = Transition(wf.id)
    again.unsettle(s["x"])
    again.unsettle(s["x"])
    commit(backend, again)
    assert field(backend, wf, counter_field(SETTLED_COUNTER)) == b"1"
    assert field(backend, wf, counter_field(HALTED_COUNTER)) == b"0"
    assert field(backend, wf, settled_flag_field(s["x"])) is None
    assert field(backend, wf, COMPLETION_FIELD) is None
    settle(backend, wf, (s["x"], False))
    assert queued(backend, wf) == [("CompleteWorkflow", ""), ("CompleteWorkflow", "")]


def test_a_reset_that_leaves_every_stage_settled_releases_the_completion(target: Target) -> None:
    wf, backend, s = two_stages(target)
    settle(backend, wf, (s["a"], False))
    removed = Transition(wf.id)  # x removed from the graph: one top-level stage is left
    removed.set_threshold(SETTLED_COUNTER, 1)
    removed.complete_when_settled(CompleteWorkflow(execution_id=wf.id))
    commit(backend, removed)
    assert queued(backend, wf) == [("CompleteWorkflow", "")]


def test_a_counter_value_the_decision_read_is_checked(target: Target) -> None:
    wf, backend, s = two_stages(target)
    settle(backend, wf, (s["x"], False))
    stale = Transition(wf.id)
    stale.expect_counter(SETTLED_COUNTER, 0)
    stale.settle(s["a"], False, None)
    assert commit(backend, stale) == CommitOutcome.CONFLICT
    assert field(backend, wf, settled_flag_field(s["a"])) is None
    assert field(backend, wf, counter_field(SETTLED_COUNTER)) == b"1"
