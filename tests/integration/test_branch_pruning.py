"""Dead-path elimination after an OR-split: a branch the split did not take is skipped, and so
is every stage all of whose upstreams were not taken - it never runs - while a stage with one
live upstream runs once; a loop pass that takes the branch runs it."""

from __future__ import annotations

import threading

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.models.stage import JoinType, SplitType
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named

Target = tuple[str | None, str]
S = WorkflowStatus


class Ran(Task):
    def __init__(self) -> None:
        self.ran: list[str] = []
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.ran.append(stage.ref_id)
        return TaskResult.success(outputs={"pass": int(stage.context.get("_jump_count", 0))})


def engine(target: Target) -> tuple[Engine, Ran]:
    eng = make_engine(target)
    ran = Ran()
    eng.registry.register("ran", ran)
    return eng, ran


def split(**conditions: str) -> StageExecution:
    return make_stage("root", "ran", split_type=SplitType.OR, split_conditions=conditions)


def test_the_whole_of_a_branch_the_split_did_not_take_is_skipped_and_never_runs(target: Target) -> None:
    eng, ran = engine(target)
    wf = eng.run(make_workflow(split(live="True", dead="False"), make_stage("live", "ran", ["root"]),
                               make_stage("live2", "ran", ["live"]), make_stage("dead", "ran", ["root"]),
                               make_stage("dead2", "ran", ["dead"]), make_stage("dead3", "ran", ["dead2"])))
    assert wf.status == S.SUCCEEDED
    assert sorted(ran.ran) == ["live", "live2", "root"]
    assert [stage_named(wf, r).status for r in ("dead", "dead2", "dead3")] == [S.SKIPPED] * 3


def test_a_join_whose_every_branch_was_not_taken_is_skipped_but_one_live_branch_runs_it(target: Target) -> None:
    eng, ran = engine(target)
    pruned = eng.run(make_workflow(split(live="True", b="False", c="False"), make_stage("live", "ran", ["root"]),
                                   make_stage("b", "ran", ["root"]), make_stage("c", "ran", ["root"]),
                                   make_stage("orjoin", "ran", ["b", "c"], join_type=JoinType.OR)))
    assert pruned.status == S.SUCCEEDED and stage_named(pruned, "orjoin").status == S.SKIPPED
    assert "orjoin" not in ran.ran
    ran.ran.clear()
    diamond = eng.run(make_workflow(split(left="True", right="False"), make_stage("left", "ran", ["root"]),
                                    make_stage("right", "ran", ["root"]), make_stage("join", "ran", ["left", "right"])))
    assert diamond.status == S.SUCCEEDED and ran.ran.count("join") == 1
    assert stage_named(diamond, "right").status == S.SKIPPED


def test_a_stage_skipped_by_its_own_setting_does_not_prune_its_downstreams(target: Target) -> None:
    eng, ran = engine(target)
    wf = eng.run(make_workflow(make_stage("a", "ran", context={"stageEnabled": False}), make_stage("b", "ran", ["a"])))
    assert wf.status == S.SUCCEEDED and stage_named(wf, "a").status == S.SKIPPED and ran.ran == ["b"]


class Router(Task):
    """Loops back to ``root`` once; the split takes ``dead`` only on the second pass."""

    def execute(self, stage: StageExecution) -> TaskResult:
        if int(stage.context.get("_jump_count", 0)) == 0:
            return TaskResult.jump_to("root", context={"second": True})
        return TaskResult.success()


def test_a_branch_not_taken_in_one_pass_runs_when_a_later_pass_takes_it(target: Target) -> None:
    eng, ran = engine(target)
    eng.registry.register("router", Router())
    root = make_stage("root", "ran", split_type=SplitType.OR,
                      split_conditions={"live": "True", "dead": "second == True"}, context={"second": False})
    wf = eng.run(make_workflow(root, make_stage("live", "ran", ["root"]), make_stage("dead", "ran", ["root"]),
                               make_stage("dead2", "ran", ["dead"]),
                               make_stage("router", "router", ["live", "dead2"], join_type=JoinType.OR)))
    assert wf.status == S.SUCCEEDED
    assert ran.ran.count("dead") == 1 and ran.ran.count("dead2") == 1  # only in the second pass
    assert stage_named(wf, "dead2").status == S.SUCCEEDED
