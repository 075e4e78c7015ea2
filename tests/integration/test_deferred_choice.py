"""Deferred choice (WCP-16): of the stages of one ``deferred_choice_group``, the first whose start
commits runs, and that same commit cancels its siblings: their tasks never run, and they settle
like any canceled stage, so the workflow completes."""

from __future__ import annotations

from collections import Counter

from stabilize_redis import JoinType, StageExecution, TaskResult, WorkflowStatus
from stabilize_redis.queue.messages import RestartStage, StartStage
from tests.integration.interleave import interleave
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named
from tests.integration.test_interleavings import handle

Target = tuple[str | None, str]
S = WorkflowStatus


def engine(target: Target) -> tuple[Engine, Counter[str]]:
    eng = make_engine(target)
    runs: Counter[str] = Counter()

    def count(stage: StageExecution) -> TaskResult:
        runs[stage.ref_id] += 1
        return TaskResult.success(outputs={"picked": stage.ref_id})

    eng.registry.register("count", count)
    return eng, runs


def test_the_first_start_wins_and_its_siblings_are_canceled_without_running(target: Target) -> None:
    eng, runs = engine(target)
    wf = make_workflow(make_stage("root", "count"),
                       *[make_stage(r, "count", ["root"], deferred_choice_group="reply") for r in ("agent", "manager",
                                                                                                   "bot")],
                       make_stage("close", "count", ["agent", "manager", "bot"], join_type=JoinType.DISCRIMINATOR))
    done = eng.run(wf)
    statuses = {r: stage_named(done, r).status for r in ("agent", "manager", "bot")}
    winners = [r for r, s in statuses.items() if s == S.SUCCEEDED]
    assert len(winners) == 1 and list(statuses.values()).count(S.CANCELED) == 2, statuses
    assert sum(runs[r] for r in statuses) == 1 and runs[winners[0]] == 1, "no loser's task ran"
    losers = {stage_named(done, r).id for r in statuses if r not in winners}
    assert not losers & {e["entity_id"] for e in eng.events(wf.id, "stage.started")}, "a loser never started"
    won = eng.events(wf.id, "choice.won")
    assert len(won) == 1 and won[0]["data"]["canceled"] == sorted(r for r in statuses if r not in winners)
    assert stage_named(done, "close").status == S.SUCCEEDED and runs["close"] == 1
    assert stage_named(done, "close").context["picked"] == winners[0]
    assert done.status == S.SUCCEEDED, "the losing branches were not taken: the workflow succeeds"
    assert all(stage_named(done, r).context["deferredChoiceLostTo"] == winners[0] for r in statuses
               if r not in winners)


def test_racing_starts_of_two_siblings_cannot_both_win(target: Target) -> None:
    eng, runs = engine(target)
    wf = make_workflow(make_stage("a", "count", deferred_choice_group="g"),
                       make_stage("b", "count", deferred_choice_group="g"))
    eng.client.submit(wf)  # both initial stages are sent a StartStage (they start only there)
    start_a, start_b = (StartStage(execution_id=wf.id, stage_id=stage_named(wf, r).id) for r in "ab")

    result = interleave(eng.store.backend, handle(eng, start_a), handle(eng, start_b))

    assert result.conflicts == 1, "both starts read the undecided choice; the second commit must conflict"
    now = eng.store.retrieve(wf.id)
    assert stage_named(now, "a").status == S.RUNNING and stage_named(now, "b").status == S.CANCELED
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert runs == Counter({"a": 1})
    assert done.status.is_complete


def test_a_restarted_winner_runs_again_and_the_choice_stays_made(target: Target) -> None:
    eng, runs = engine(target)
    wf = make_workflow(make_stage("a", "count", deferred_choice_group="g"),
                       make_stage("b", "count", deferred_choice_group="g"))
    first = eng.run(wf)
    winner = next(r for r in "ab" if stage_named(first, r).status == S.SUCCEEDED)
    loser = "b" if winner == "a" else "a"
    eng.queue.push(RestartStage(execution_id=wf.id, stage_id=stage_named(first, winner).id))
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert runs[winner] == 2 and runs[loser] == 0
    assert stage_named(done, winner).status == S.SUCCEEDED and stage_named(done, loser).status == S.CANCELED

