"""Ancestors' outputs by reference (``decisions.views``): a stage stores its own data only, its
task still sees every ancestor's outputs merged, a loop's later pass never sees an earlier
pass's values, and a plain AND join starts from its counter without reading its upstreams."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import decode_stage
from stabilize_redis.keys import stage_field
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


class Emit(Task):
    """Outputs ``out_<ref id>``; records the context each stage saw (merged, as a dict)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.seen[stage.ref_id] = dict(stage.context)
        return TaskResult.success(outputs={f"out_{stage.ref_id}": stage.ref_id, "path": [stage.ref_id]})


def stored_context(eng: Any, wf_id: str, stage_id: str) -> dict[str, Any]:
    backend = eng.store.backend
    raw = backend.client.hget(backend.part(wf_id).workflow(wf_id), stage_field(stage_id))
    return decode_stage(raw).stage.context


def test_a_chain_stage_sees_every_ancestor_output_but_stores_only_its_own_context(target: Target) -> None:
    emit = Emit()
    eng = make_engine(target)
    eng.registry.register("emit", emit)
    n = 60
    stages = [make_stage(f"s{i}", "emit", [f"s{i - 1}"] if i else [], context={"mine": i}) for i in range(n)]
    wf = eng.run(make_workflow(*stages))

    assert wf.status == WorkflowStatus.SUCCEEDED
    last = emit.seen[f"s{n - 1}"]
    assert {k for k in last if k.startswith("out_")} == {f"out_s{i}" for i in range(n - 1)}
    assert last["path"] == [f"s{i}" for i in range(n - 1)]  # lists concatenated in rank order
    assert last["mine"] == n - 1  # its own context on top
    for i in (1, n // 2, n - 1):  # nothing copied from the ancestors into the stored record
        assert stored_context(eng, wf.id, stage_named(wf, f"s{i}").id) == {"mine": i}
    # a retrieved workflow's stages still show their ancestors' outputs
    assert stage_named(wf, f"s{n - 1}").context["out_s0"] == "s0"
    assert json.loads(json.dumps(stage_named(wf, "s2").context))["path"] == ["s0", "s1"]


def test_a_loop_pass_does_not_see_a_key_the_earlier_pass_output_and_this_one_did_not(target: Target) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"draft": [], "review": []}

    class Draft(Task):
        def execute(self, stage: StageExecution) -> TaskResult:
            runs["draft"].append(dict(stage.context))
            first = len(runs["draft"]) == 1
            return TaskResult.success(outputs={"version": len(runs["draft"]), **({"scratch": "only once"} if first else {})})

    class Review(Task):
        def execute(self, stage: StageExecution) -> TaskResult:
            runs["review"].append(dict(stage.context))
            if len(runs["review"]) == 1:
                return TaskResult.jump_to("draft")
            return TaskResult.success()

    eng = make_engine(target)
    eng.registry.register("draft", Draft())
    eng.registry.register("review", Review())
    wf = eng.run(make_workflow(make_stage("draft", "draft"), make_stage("review", "review", ["draft"])))

    assert wf.status == WorkflowStatus.SUCCEEDED
    assert [(r.get("version"), r.get("scratch")) for r in runs["review"]] == [(1, "only once"), (2, None)]
    assert "scratch" not in stage_named(wf, "review").context


@pytest.mark.parametrize("width", [40])
def test_a_plain_and_join_starts_from_its_counter_and_sees_every_branch(target: Target, width: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    emit = Emit()
    eng = make_engine(target)
    eng.registry.register("emit", emit)
    mids = [make_stage(f"m{i}", "emit", ["start"]) for i in range(width)]
    wf = make_workflow(make_stage("start", "emit"), *mids, make_stage("join", "emit", [m.ref_id for m in mids]))
    join_id = stage_named(wf, "join").id
    upstream_reads: list[str] = []
    original = RedisBackend.read

    def spy(self: RedisBackend, workflow_id: str, stage_ids: Any = (), **kw: Any) -> Any:
        if join_id in stage_ids and kw.get("with_upstreams"):
            upstream_reads.append(workflow_id)
        return original(self, workflow_id, stage_ids, **kw)

    monkeypatch.setattr(RedisBackend, "read", spy)
    result = eng.run(wf)

    assert result.status == WorkflowStatus.SUCCEEDED
    assert upstream_reads == []  # its StartStage read the join and its counter, no upstream
    seen = emit.seen["join"]
    assert {k for k in seen if k.startswith("out_m")} == {f"out_m{i}" for i in range(width)}
    assert seen["path"][0] == "start" and sorted(seen["path"][1:]) == sorted(f"m{i}" for i in range(width))


def test_an_or_split_join_whose_branches_were_all_pruned_is_still_pruned(target: Target) -> None:
    emit = Emit()
    eng = make_engine(target)
    eng.registry.register("emit", emit)
    wf = eng.run(make_workflow(
        make_stage("route", "emit", split_type=__import__("stabilize_redis").SplitType.OR,
                   split_conditions={"a": "False", "b": "False", "c": "True"}),
        make_stage("a", "emit", ["route"]), make_stage("b", "emit", ["route"]), make_stage("c", "emit", ["route"]),
        make_stage("ab", "emit", ["a", "b"])))

    assert wf.status == WorkflowStatus.SUCCEEDED
    assert stage_named(wf, "ab").status == WorkflowStatus.SKIPPED and "ab" not in emit.seen
    assert emit.seen["c"]["out_route"] == "route"


def test_a_redis_error_while_a_task_reads_its_ancestors_retries_the_message_not_the_task(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    failures = [1]
    original = redis.Redis.hmget

    def flaky(self: Any, name: Any, keys: Any, *args: Any) -> Any:
        if failures and any(str(k).startswith("o:") for k in keys):
            failures.pop()
            raise RedisConnectionError("connection reset while reading")
        return original(self, name, keys, *args)

    class Reader(Task):
        calls = 0

        def execute(self, stage: StageExecution) -> TaskResult:
            Reader.calls += 1
            return TaskResult.success(outputs={"got": stage.context["out_a"]})

    eng = make_engine(target)
    monkeypatch.setattr(redis.Redis, "hmget", flaky)
    eng.registry.register("emit", Emit())
    eng.registry.register("reader", Reader())
    wf = eng.run(make_workflow(make_stage("a", "emit"), make_stage("b", "reader", ["a"])))

    assert wf.status == WorkflowStatus.SUCCEEDED
    assert stage_named(wf, "b").outputs == {"got": "a"}
    assert failures == [] and Reader.calls == 2  # the failed read ran the task again, not failed it
    assert not stage_named(wf, "b").tasks[0].task_exception_details


def test_an_or_split_condition_sees_the_ancestors_outputs(target: Target) -> None:
    class Env(Task):
        def execute(self, stage: StageExecution) -> TaskResult:
            return TaskResult.success(outputs={"env": "prod"})

    from stabilize_redis import SplitType

    emit = Emit()
    eng = make_engine(target)
    eng.registry.register("emit", emit)
    eng.registry.register("env", Env())
    wf = eng.run(make_workflow(
        make_stage("config", "env"),
        make_stage("route", "emit", ["config"], split_type=SplitType.OR,
                   split_conditions={"prod": "env == 'prod'", "dev": "env == 'dev'"}),
        make_stage("prod", "emit", ["route"]), make_stage("dev", "emit", ["route"])))

    assert wf.status == WorkflowStatus.SUCCEEDED
    assert stage_named(wf, "prod").status == WorkflowStatus.SUCCEEDED and "prod" in emit.seen
    assert stage_named(wf, "dev").status == WorkflowStatus.SKIPPED and "dev" not in emit.seen
