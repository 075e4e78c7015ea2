"""Deferred choice (WCP-16): of the stages sharing a ``deferred_choice_group``, the first whose
start commits wins, and in that same commit its siblings become CANCELED without running. Pure:
it adds to a Transition, never touches Redis.

The choice is one versioned field of the workflow hash (``keys.choice_field``): absent until
decided, then the winner's id. The start that decides it writes the field guarded by the
version it read, so of two starts racing on two siblings exactly one commits; the other
CONFLICTs, re-reads, finds the winner and cancels its own stage instead. The group's members
are laid out at submit (``keys.choice_members_field``); their records are read with the field,
so the winner's commit cancels each one still NOT_STARTED (guarded by its version). A member
the winner's commit did not cancel (added later, or a StartStage already in flight) loses when
its own start is decided. A loser settles like any canceled top-level stage (halted: the
downstreams that can no longer start settle with it), so the workflow completes by the settled
count, with the status ``CompleteWorkflow`` gives a workflow with a CANCELED stage.
A reset winner (a jump or restart) runs again: the choice stays made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import now_ms, stage_event_data
from stabilize_redis.decisions.milestones import wake_watchers
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import choice_field, stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CompleteWorkflow

CHOICE_WON = "choice.won"
"""Event type: a stage won its deferred choice group (data: group, canceled sibling ref ids)."""
CHOICE_LOST = "choice.lost"
"""Event type: a stage of a decided deferred choice group was canceled (data: group, winner)."""


@dataclass
class ChoiceState:
    """One deferred choice group as read: the winner (None: undecided), the field's version,
    and the ids of the group's top-level stages laid out at submit."""

    group: str
    version: int = 0
    winner: str | None = None
    members: list[str] = field(default_factory=list)


CHOICE_LOST_TO = "deferredChoiceLostTo"
"""Context key of a stage its deferred choice group's winner canceled: the winner's ref id. The
workflow's outcome treats such a stage as not taken (SKIPPED), not as a cancellation."""


def cancel_unstarted(t: Transition, rec: StageRecord, kw: dict[str, Any], **data: Any) -> None:
    """``rec`` (NOT_STARTED) becomes CANCELED in ``t`` without running: its tasks CANCELED, a
    ``stage.canceled`` event (with ``data``), and - top-level - settled as halted, releasing
    CompleteWorkflow if that settles the last top-level stage."""
    now = now_ms()
    rec.stage.status = WorkflowStatus.CANCELED
    rec.stage.end_time = now
    rec.stage.context[CHOICE_LOST_TO] = data.get("won_by")
    for task in rec.stage.tasks:
        if not task.status.is_complete:
            task.status = WorkflowStatus.CANCELED
            task.end_time = now
    t.write_stage(rec)
    wake_watchers(t, rec, kw)  # a milestone among the losers: its watchers decide again
    t.event("stage.canceled", "stage", rec.id, stage_event_data(rec, status="CANCELED", **data))
    if rec.stage.parent_stage_id is None:
        t.settle(rec.id, True, CompleteWorkflow(**kw))


def choose(t: Transition, state: ChoiceState, rec: StageRecord, records: Mapping[str, StageRecord],
           kw: dict[str, Any]) -> bool:
    """``rec`` (ready, enabled, about to start) takes its group's choice in ``t``. True: it won
    now (the field written, every member in ``records`` still NOT_STARTED canceled) or had won
    before (a re-run); False: another member won, and ``rec`` is canceled in ``t``. The field's
    version is in the read set either way."""
    name = choice_field(state.group)
    t.check(name, state.version)
    if state.winner == rec.id:
        return True
    if state.winner is not None:
        winner = records.get(state.winner)
        cancel_unstarted(t, rec, kw, deferred_choice_group=state.group,
                         won_by=winner.stage.ref_id if winner is not None else state.winner)
        t.event(CHOICE_LOST, "stage", rec.id, {"group": state.group, "winner": state.winner})
        return False
    state.winner = rec.id
    t.writes[name] = rec.id.encode()
    canceled: list[str] = []
    for mid in state.members:
        sibling = records.get(mid)
        if mid == rec.id or sibling is None or sibling.stage.status != WorkflowStatus.NOT_STARTED:
            continue
        cancel_unstarted(t, sibling, kw, deferred_choice_group=state.group, won_by=rec.stage.ref_id)
        canceled.append(sibling.stage.ref_id)
    for mid in state.members:  # the decision depended on every member's status
        sibling = records.get(mid)
        if sibling is not None and stage_field(mid) not in t.writes:
            t.check(stage_field(mid), sibling.version)
    t.event(CHOICE_WON, "stage", rec.id, {"group": state.group, "canceled": sorted(canceled)})
    return True
