"""JumpToStage: route a workflow to another stage (``TaskResult.jump_to``), in one commit.

The region is read in one round trip (``RedisBackend.read_region``) and the jump is one commit:

* **backward** (the source is the target, or lies downstream of it: a loop): the target, every
  stage all of whose upstreams are in that scope (a fan-in that also waits on a branch outside
  it is left alone), and the source go back to NOT_STARTED (``decisions.reset``);
* **forward**: the target's scope is reset likewise, the source SUCCEEDS, and the stages only
  the source led to that the target does not lead to are SKIPPED (if not started);
* the target gets the jump's context merged into its own, ``_jump_outputs`` (the jump's
  outputs), ``_jump_count`` and ``_jump_history``; the source keeps them too, so a loop counts
  across passes; the target starts in this same commit (no readiness check: a jump bypasses
  the target's join), over the outputs its upstreams hold *now*;
* counters are recounted from the new statuses; tasks running in the reset region are told to
  cancel, and whatever they still commit is a stale attempt (``StageRecord.attempt``) that is
  discarded.

A missing target, or a jump past ``_max_jumps`` (the workflow context's, else the source stage
context's, else 10; 0 forbids jumps), fails the source stage TERMINAL with ``jump_error`` in its
context, which ends the workflow TERMINAL like any TERMINAL stage. A JumpToStage of an earlier
run of the source (its ``attempt_token`` is not the source's run), or for a finished or canceled
workflow, changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from stabilize_redis.backend.graph_reads import read_descendants
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.claim import stale
from stabilize_redis.decisions.codec import StageRecord, meta_from_dict
from stabilize_redis.decisions.common import (
    JUMP_BYPASS,
    PENDING_JUMP,
    UnknownTarget,
    known_workflow,
    now_ms,
    stage_event_data,
)
from stabilize_redis.decisions.flow import settle_stage
from stabilize_redis.decisions.reset import finish_stage_as, recount, reset_children, reset_stage
from stabilize_redis.decisions.snapshot import Region, Snapshot
from stabilize_redis.decisions.sub_workflow import cancel_child
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteWorkflow, JumpToStage, Message, StartStage

log = logging.getLogger("stabilize_redis.handlers")

DEFAULT_MAX_JUMPS = 10
"""Jumps allowed per workflow when neither the workflow nor the source stage sets ``_max_jumps``."""

JUMP_ERROR = "jump_error"
"""Source stage context key: why its jump failed (missing target, too many jumps)."""


def max_jumps(workflow_context: dict[str, Any], stage_context: dict[str, Any]) -> int | str:
    """The ``_max_jumps`` in force (workflow context first, then the stage's, then the default),
    or the error text when the value set is not a non-negative integer."""
    for where, context in (("workflow", workflow_context), ("stage", stage_context)):
        value = context.get("_max_jumps")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"_max_jumps of the {where} context must be a non-negative integer, not {value!r}"
        return value
    return DEFAULT_MAX_JUMPS


class JumpToStageHandler(Handler):
    message_type = JumpToStage

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, JumpToStage)
        wid, sid = message.execution_id, message.stage_id
        kw: dict[str, Any] = {"execution_id": wid, "execution_type": message.execution_type}

        def decide(region: Snapshot) -> Transition:
            assert isinstance(region, Region)
            t = Transition(wid)
            meta = known_workflow(region)
            source = region.stages.get(sid)
            if source is None:
                raise UnknownTarget(f"stage {sid} of workflow {wid} does not exist")
            wf = meta_from_dict(meta)
            t.check_meta(region.meta_version)
            if wf.status.is_complete or wf.is_canceled:
                log.info("jump from %s in finished workflow %s ignored", source.stage.ref_id, wid)
                return t
            if stale(message, source):
                log.info("stale jump from %s (run %s, stage is at run %s) discarded", source.stage.ref_id,
                         message.attempt_token, source.attempt)
                return t
            source.stage.context.pop(PENDING_JUMP, None)  # decided now; the source is written below
            count = source.stage.context.get("_jump_count", 0)
            limit = max_jumps(wf.context, source.stage.context)
            if not isinstance(count, int) or isinstance(count, bool):
                count = 0
            if region.target_id is None:
                self._fail(t, source, f"Target stage not found: {message.target_stage_ref_id}", kw)
            elif isinstance(limit, str):
                self._fail(t, source, limit, kw)
            elif count >= limit:
                self._fail(t, source, f"Max jump count exceeded: {count}/{limit}", kw)
            else:
                self._jump(t, region, source, message, count + 1, kw)
            return t

        def read() -> Snapshot:
            region = self.backend.read_region(wid, sid, message.target_stage_ref_id, by_ref=True)
            resets = [region.stages[r] for r in {*region.scope, sid} if r in region.stages]
            region.descendants = read_descendants(self.backend, wid, resets)
            return region

        return self.transact(message, delivery, read,
                             decide)

    def _fail(self, t: Transition, source: StageRecord, reason: str, kw: dict[str, Any]) -> None:
        log.error("workflow %s: jump from stage %s failed: %s", t.workflow_id, source.stage.ref_id, reason)
        stage = source.stage
        stage.context[JUMP_ERROR] = reason
        finish_stage_as(source, WorkflowStatus.TERMINAL, now_ms())
        t.write_stage(source)
        t.event("stage.failed", "stage", source.id,
                stage_event_data(source, status="TERMINAL", end_time=stage.end_time, error=reason))
        if stage.parent_stage_id is None:
            settle_stage(t, source, kw, end_now=True)
        else:
            t.push(CompleteWorkflow(**kw))

    def _jump(self, t: Transition, region: Region, source: StageRecord, message: JumpToStage, number: int,
              kw: dict[str, Any]) -> None:
        assert region.target_id is not None
        stages = region.stages
        target = stages[region.target_id]
        now = now_ms()
        history = list(source.stage.context.get("_jump_history") or [])
        history.append({"from_stage": source.stage.ref_id, "to_stage": target.stage.ref_id,
                        "jump_number": number, "context_keys": list(message.jump_context)})
        reset = set(region.scope) | ({source.id} if region.backward else set())
        canceled: list[str] = []
        for rid in reset:
            cancel_child(t, stages[rid], kw, "its parent stage was reset by a jump")
            canceled += reset_stage(stages[rid])
            t.write_stage(stages[rid])
        canceled += reset_children(t, [stages[rid] for rid in reset], region.descendants)
        changed = list(reset)
        skipped: list[str] = []
        if not region.backward:
            finish_stage_as(source, WorkflowStatus.SUCCEEDED, now)
            t.write_stage(source)
            changed.append(source.id)
            for kid in region.skips:
                rec = stages.get(kid)
                if rec is not None and rec.stage.status == WorkflowStatus.NOT_STARTED:
                    finish_stage_as(rec, WorkflowStatus.SKIPPED, now)
                    t.write_stage(rec)
                    changed.append(kid)
                    skipped.append(rec.stage.ref_id)
        for rec in {source.id: source, target.id: target}.values():
            rec.stage.context["_jump_count"] = number
            rec.stage.context["_jump_history"] = history
        target.stage.context.update(message.jump_context)
        if message.jump_outputs:
            target.stage.context["_jump_outputs"] = message.jump_outputs
        recount(t, region, changed, reset, kw, started={target.id})
        for task_id in canceled:
            t.publish(self.backend.keys.cancel_channel, task_id)
        t.event("stage.jumped", "stage", source.id, stage_event_data(
            source, to_stage=target.stage.ref_id, jump_number=number,
            direction="backward" if region.backward else "forward",
            reset=sorted(stages[r].stage.ref_id for r in reset), skipped=sorted(skipped)))
        target.stage.context[JUMP_BYPASS] = True
        t.write_stage(target)
        t.push(StartStage(stage_id=target.id, **kw))
