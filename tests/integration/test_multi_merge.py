"""JoinType.MULTI_MERGE (WCP-8): one run per upstream completion, serialised, each over that
upstream's outputs; the stage's downstreams run once, after its last run."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from stabilize_redis import JoinType, StageExecution, Task, TaskResult, WorkflowStatus
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]


class Mark(Task):
    """Counts runs per stage and records the context of each run of ``mm``."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.mm_contexts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] += 1
            if stage.ref_id == "mm":
                self.mm_contexts.append(dict(stage.context))
            n = self.runs[stage.ref_id]
        return TaskResult.success(outputs={"n": n, f"from_{stage.ref_id}": True})


class Stops(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.stopped()


def fan_in(*upstreams: str, join: JoinType = JoinType.MULTI_MERGE, task: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    task = task or {}
    return make_workflow(
        make_stage("root", "mark"),
        *[make_stage(u, task.get(u, "mark"), ["root"]) for u in upstreams],
        make_stage("mm", "mark", list(upstreams), join_type=join),
        make_stage("down", "mark", ["mm"]),
    )


def test_a_multi_merge_runs_once_per_upstream_each_over_that_upstreams_outputs(target: Target) -> None:
    mark = Mark()
    eng = make_engine(target)
    eng.registry.register("mark", mark)
    done = eng.run(fan_in("a", "b", "c"))
    assert done.status == WorkflowStatus.SUCCEEDED
    assert mark.runs["mm"] == 3 and mark.runs["down"] == 1
    triggers = [c["_mm_trigger"] for c in mark.mm_contexts]
    assert sorted(triggers) == ["a", "b", "c"]
    for ctx in mark.mm_contexts:
        own = [k for k in ("from_a", "from_b", "from_c") if ctx.get(k)]
        assert own == [f"from_{ctx['_mm_trigger']}"], "each run sees only its trigger's outputs"
    mm = stage_named(done, "mm")
    assert sorted(mm.context["_mm_consumed"]) == ["a", "b", "c"]
    assert len(mm.context["_mm_firings"]) == 2 and mm.outputs["n"] == 3


def test_an_and_join_over_the_same_graph_still_runs_once(target: Target) -> None:
    mark = Mark()
    eng = make_engine(target)
    eng.registry.register("mark", mark)
    done = eng.run(fan_in("a", "b", join=JoinType.AND))
    assert done.status == WorkflowStatus.SUCCEEDED
    assert mark.runs["mm"] == 1


def test_a_stopped_upstream_ends_the_merge_after_the_runs_of_the_others(target: Target) -> None:
    mark = Mark()
    eng = make_engine(target)
    eng.registry.register("mark", mark)
    eng.registry.register("stops", Stops())
    done = eng.run(fan_in("a", "b", "c", task={"b": "stops"}))
    assert mark.runs["mm"] == 2
    assert sorted(stage_named(done, "mm").context["_mm_consumed"]) == ["a", "c"]
    assert mark.runs["down"] == 1
    assert stage_named(done, "b").status == WorkflowStatus.STOPPED
    assert done.status.is_complete


def test_a_multi_merge_whose_upstreams_all_stop_never_runs(target: Target) -> None:
    mark = Mark()
    eng = make_engine(target)
    eng.registry.register("mark", mark)
    eng.registry.register("stops", Stops())
    done = eng.run(fan_in("a", "b", task={"a": "stops", "b": "stops"}))
    assert mark.runs["mm"] == 0 and mark.runs["down"] == 0
    assert done.status.is_complete
