"""RestartStage: run a finished stage again, with everything downstream of it, in one commit.

Contract (stabilize's rules, on the commit protocol):

* the stage must have finished (any final status: typically TERMINAL, CANCELED or STOPPED) and
  its join must still be met by its upstreams as they are now (they finished continuably);
* the stage and its fan-in aware downstream scope (``RedisBackend.read_region`` in restart
  mode: a downstream that also waits on a branch outside the scope is left alone) go back to
  NOT_STARTED (``decisions.reset``: tasks, outputs and join tracking cleared, the stage's run
  raised so a message of the old run is discarded as stale); the stages beyond the scope that
  never ran because the restarted region halted (settled as unable to run) are re-armed by
  the recount (``decisions.reset.recount``), so they run once their upstreams finish;
* a finished workflow goes back to RUNNING with its end time cleared; the restarted stages are
  taken off the settled count, which re-arms the completion flag, so the commit that settles
  the last of them releases CompleteWorkflow once more;
* the stage starts in the same commit (its first task with it).

Refused (a log line and a ``stage.restart_refused`` event, nothing else changes): a workflow
that was canceled (as stabilize: a canceled workflow is not revived), a stage that has not
finished (still running, paused or never started), a synthetic stage (restart its top-level
parent), a stage whose upstreams no longer satisfy its join. A workflow or stage that does not
exist in Redis (never submitted, or finished and evicted to PostgreSQL) dead-letters the
message as ``unknown_target`` naming it, as for every message.
"""

from __future__ import annotations

import logging
from typing import Any

from stabilize_redis.backend.graph_reads import read_descendants
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import claim_ready_stage
from stabilize_redis.decisions.codec import meta_from_dict
from stabilize_redis.decisions.common import UnknownTarget, known_workflow, stage_event_data
from stabilize_redis.decisions.layout import join_gate, meta_extras
from stabilize_redis.decisions.reset import activates, recount, reset_children, reset_stage
from stabilize_redis.decisions.snapshot import Region, Snapshot
from stabilize_redis.decisions.sub_workflow import cancel_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.keys import stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import Message, RestartStage

log = logging.getLogger("stabilize_redis.handlers")

REFUSED_EVENT = "stage.restart_refused"
"""Event appended when a RestartStage is refused; ``data["reason"]`` says why."""
RESTARTED_EVENT = "stage.restarted"
"""Event appended by the commit that restarts a stage; ``data["reset"]`` lists the ref ids reset."""


class RestartStageHandler(Handler):
    message_type = RestartStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, RestartStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def read() -> Snapshot:
            region = self.backend.read_region(wid, sid, sid, by_ref=False)
            region.descendants = read_descendants(self.backend, wid, [region.stages[r] for r in region.scope
                                                                      if r in region.stages])
            return region

        def decide(snap: Snapshot) -> Transition:
            assert isinstance(snap, Region)
            t = Transition(wid)
            meta = known_workflow(snap)
            rec = snap.stages.get(sid)
            if rec is None or snap.target_id is None:
                raise UnknownTarget(f"stage {sid} of workflow {wid} does not exist")
            wf = meta_from_dict(meta)
            t.check_meta(snap.meta_version)
            stage = rec.stage
            ups = [snap.stages[u] for u in rec.up if u in snap.stages]
            ready = [u for u in ups if u.stage.status.is_complete and not u.stage.status.is_halt
                     and activates(u, rec)]
            reason = None
            if wf.is_canceled:
                reason = "the workflow was canceled"
            elif stage.parent_stage_id is not None:
                reason = "it is a synthetic stage; restart its top-level parent"
            elif not stage.status.is_complete:
                reason = f"it has not finished (it is {stage.status.name})"
            elif len(ready) < join_gate(stage, len(ups)):
                reason = "its upstreams no longer satisfy its join"
            if reason is not None:
                log.warning("RestartStage of stage %s (%s) in workflow %s refused: %s", stage.ref_id, sid, wid, reason)
                t.check(stage_field(sid), rec.version)
                t.event(REFUSED_EVENT, "stage", sid, stage_event_data(rec, status=stage.status.name, reason=reason))
                return t
            previous = stage.status.name
            canceled: list[str] = []
            for rid in snap.scope:
                cancel_child(t, snap.stages[rid], kw, "its parent stage was restarted")
                canceled += reset_stage(snap.stages[rid])
                t.write_stage(snap.stages[rid])
            canceled += reset_children(t, [snap.stages[r] for r in snap.scope], snap.descendants)
            if wf.status.is_complete:
                wf.status = WorkflowStatus.RUNNING
                wf.end_time = None
                t.write_meta(wf, meta_extras(meta), snap.meta_version)
            recount(t, snap, snap.scope, set(snap.scope), kw, started={sid})
            for task_id in canceled:
                t.publish(self.backend.keys.cancel_channel, task_id)
            t.event(RESTARTED_EVENT, "stage", sid, stage_event_data(
                rec, previous_status=previous, reset=sorted(snap.stages[r].stage.ref_id for r in snap.scope)))
            log.info("workflow %s: stage %s restarted (was %s)", wid, stage.ref_id, previous)
            claim_ready_stage(self.ctx.registry, t, rec, ready, kw)
            return t

        return self.transact(message, delivery, read, decide)
