"""JoinType.MULTI_MERGE (WCP-8): the stage runs once per upstream completion.

Runs are serialised, each over the outputs of the one upstream that triggered it; the stage's
own downstreams are released once, after its last run (multiplicity does not propagate, as in
stabilize). No polling: every step is a StartStage of the stage, released by a counter or sent
by the commit that ends a run.

* The join counter counts continuable upstream completions; its stored threshold starts at 1,
  so the first completion releases a StartStage.
* A StartStage (``merge_step``) starts a run over the earliest finished upstream not consumed
  yet (``_mm_trigger``; ``_mm_consumed`` lists the upstream ref ids consumed, in order). A run
  already in progress is left alone: its end sends the next StartStage.
* The commit that ends a continuable run (``handlers.complete_stage.finish_stage``) records it and
  sends a StartStage instead of releasing the downstreams.
* With no finished upstream left to consume: if every upstream has settled (continuable
  completions plus halted or unrunnable upstreams - the join and dead counters - make up all of
  them) the last run is over, the downstreams are released and the stage settles
  (``_mm_done``); otherwise the join counter's threshold is raised to one more than its current
  value, checked in the same commit, so the next completion releases the next StartStage. An
  upstream that STOPS sends its multi-merge downstreams a StartStage, since its halt may be what
  completes them.
* The previous runs' results are archived in ``_mm_firings`` ({trigger, outputs} each); the last
  run's outputs are the stage's outputs.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.decisions.claim import claim_ready_stage
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.flow import activated_downstreams, is_multi_merge, release_after_completion
from stabilize_redis.decisions.reset import reset_stage
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import dead_counter, join_counter, stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.tasks.registry import TaskRegistry

MM_CONSUMED = "_mm_consumed"
MM_TRIGGER = "_mm_trigger"
MM_FIRINGS = "_mm_firings"
MM_DONE = "_mm_done"




def merge_counters(stage_id: str) -> list[str]:
    """The counters a multi-merge step reads for its stage."""
    return [join_counter(stage_id), dead_counter(stage_id)]


def merge_step(registry: TaskRegistry | None, t: Transition, snap: Snapshot, rec: StageRecord,
               kw: dict[str, Any]) -> None:
    """Decide a StartStage of multi-merge stage ``rec`` into ``t`` (module docstring). ``snap``
    holds its upstreams and ``merge_counters``; and its downstreams with the settle counters
    when ``rec`` has finished a run (for the final release)."""
    stage = rec.stage
    if stage.status in (WorkflowStatus.RUNNING, WorkflowStatus.PAUSED, WorkflowStatus.SUSPENDED) \
            or stage.context.get(MM_DONE) or (stage.status.is_complete and stage.status.is_halt):
        return
    ups = [snap.stages[u] for u in rec.up if u in snap.stages]
    for up in ups:
        t.check(stage_field(up.id), up.version)
    consumed = list(stage.context.get(MM_CONSUMED) or [])
    waiting = sorted((u for u in ups if u.stage.status.is_complete and not u.stage.status.is_halt
                      and u.stage.ref_id not in consumed), key=lambda u: (u.stage.end_time or 0, u.rank))
    if waiting:
        nxt = waiting[0]
        firings = list(stage.context.get(MM_FIRINGS) or [])
        if stage.status != WorkflowStatus.NOT_STARTED:  # a run ended: archive it, then a fresh run
            firings.append({"trigger": stage.context.get(MM_TRIGGER), "outputs": stage.outputs})
            reset_stage(rec)
        stage.context[MM_FIRINGS] = firings
        stage.context[MM_CONSUMED] = [*consumed, nxt.stage.ref_id]
        stage.context[MM_TRIGGER] = nxt.stage.ref_id
        t.write_stage(rec)
        claim_ready_stage(registry, t, rec, [nxt], kw)
        return
    if stage.status == WorkflowStatus.NOT_STARTED:
        return
    joined, dead = snap.counters.get(join_counter(rec.id), 0), snap.counters.get(dead_counter(rec.id), 0)
    t.expect_counter(join_counter(rec.id), joined)
    if joined + dead >= len(rec.up):
        stage.context[MM_DONE] = True
        t.write_stage(rec)
        refs = {d: snap.stages[d].stage.ref_id for d in rec.down if d in snap.stages}
        release_after_completion(t, snap, rec, kw, activated_downstreams(rec, refs, snap.ancestors.get(rec.id)),
                                 registry)
        return
    t.expect_counter(dead_counter(rec.id), dead)
    t.set_threshold(join_counter(rec.id), joined + 1)


__all__ = ["MM_CONSUMED", "MM_DONE", "MM_FIRINGS", "MM_TRIGGER", "is_multi_merge", "merge_counters", "merge_step"]
