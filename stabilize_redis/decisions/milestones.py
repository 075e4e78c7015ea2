"""Milestones (WCP-18): a stage with ``milestone_ref_id``/``milestone_status`` (the *watcher*)
starts only while the top-level stage of that ref id (the *milestone*) is in that status, and is
SKIPPED once the milestone has passed it. Pure: it adds to a Transition, never touches Redis.

"Passed" (``passed``): the milestone's status differs from the required one and can no longer
become it in this run - it has finished (any final status), or the required status is
NOT_STARTED and it has started. So a watcher of ``RUNNING`` starts while the milestone runs
(PAUSED or SUSPENDED do not count as RUNNING), waits while it has not started, and is skipped
once it finished; a watcher of a final status (``SUCCEEDED``) waits while the milestone has
not finished and is skipped if it finished otherwise. A milestone ref id naming no top-level
stage skips the watcher (stabilize's rule: the milestone cannot be verified). A reset
(jump, restart) of the milestone starts a new run: a watcher decided after it sees the new run.

No polling: at submit every milestone gets the ids of its watchers in its context
(``WATCHERS``, laid out by ``decisions.layout``), and each commit that changes the milestone's
status - its start (``claim.claim_ready_stage``), its end (``complete_stage.settle_finished``),
its skip or cancellation (SkipStage, CancelStage, CancelRegion) - sends every watcher a
StartStage. A watcher starts only through StartStage, whose read holds the milestone's record;
its decision (start, wait or skip) has the milestone's version in its read set, so a status
change landing between read and commit makes it CONFLICT and be decided again. A watcher that
waits has therefore either been decided on the milestone's latest status or will get the
StartStage of the change that came after its read: it is never left waiting on a change it
missed. A StartStage for a watcher that is not waiting (not ready yet, already started or
finished) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.common import stage_event_data
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import SkipStage, StartStage

WATCHERS = "_milestoneWatchers"
"""Context key of a milestone stage: the ids of the stages whose ``milestone_ref_id`` names it
(written at submit; a status change of the milestone sends each a StartStage)."""

MILESTONE_PASSED = "milestonePassed"
"""Context key of a watcher skipped because its milestone passed: the milestone's status then."""

MILESTONE_WAITING = "milestone.waiting"
MILESTONE_REACHED = "milestone.reached"
MILESTONE_SKIPPED = "milestone.passed"
"""Event types (data: milestone ref id, required status, the milestone's status)."""

Gate = Callable[[Transition, StageRecord], bool]
"""What ``claim.claim_ready_stage`` asks before starting a stage (True: start it in ``t``)."""


def needs_milestone(stage: StageExecution) -> bool:
    """Whether ``stage`` is a watcher (both fields set, as stabilize gates only then): it may
    start only where its milestone was read (StartStage)."""
    return bool(stage.milestone_ref_id and stage.milestone_status)


def required_status(stage: StageExecution) -> WorkflowStatus | None:
    """The status ``stage``'s milestone must be in (None: not a status name)."""
    try:
        return WorkflowStatus[stage.milestone_status or ""]
    except KeyError:
        return None


def passed(status: WorkflowStatus, required: WorkflowStatus) -> bool:
    """The milestone, in ``status``, can no longer be in ``required`` in this run."""
    return status != required and (status.is_complete or required == WorkflowStatus.NOT_STARTED)


def watchers_by_milestone(stages: Iterable[StageExecution]) -> dict[str, list[str]]:
    """Milestone stage id -> ids of its watchers, for a workflow's ``stages``: a watcher's
    milestone is the first top-level stage with its ``milestone_ref_id``."""
    by_ref: dict[str, str] = {}
    listed = list(stages)
    for stage in listed:
        if stage.parent_stage_id is None:
            by_ref.setdefault(stage.ref_id, stage.id)
    out: dict[str, list[str]] = {}
    for stage in listed:
        mid = by_ref.get(stage.milestone_ref_id or "") if needs_milestone(stage) else None
        if mid is not None and mid != stage.id:
            out.setdefault(mid, []).append(stage.id)
    return out


def wake_watchers(t: Transition, rec: StageRecord, kw: dict[str, Any]) -> None:
    """``rec``'s status changes in ``t``: every watcher of it gets a StartStage, which decides
    it again on the new status."""
    for wid in rec.stage.context.get(WATCHERS) or ():
        t.push(StartStage(stage_id=str(wid), **kw))


def milestone_gate(records: Mapping[str, StageRecord], milestone_id: str | None,
                   kw: dict[str, Any]) -> Gate:
    """The gate of a watcher whose milestone is ``records[milestone_id]`` (``milestone_id``
    None, or a record missing: no such top-level stage). It passes while the milestone is in
    the required status; it sends the watcher a SkipStage (and records why) if the milestone
    passed it or does not exist; otherwise the watcher waits. The milestone's version is in
    the read set whatever it decides."""

    def gate(t: Transition, rec: StageRecord) -> bool:
        stage = rec.stage
        required = required_status(stage)
        milestone = records.get(milestone_id) if milestone_id is not None else None
        if milestone is not None:
            t.check(stage_field(milestone.id), milestone.version)
        data = {"milestone_ref_id": stage.milestone_ref_id, "milestone_status": stage.milestone_status,
                "status": milestone.stage.status.name if milestone is not None else None}
        if milestone is None or required is None or passed(milestone.stage.status, required):
            stage.context[MILESTONE_PASSED] = data["status"] or "missing"
            t.write_stage(rec)
            t.push(SkipStage(stage_id=rec.id, **kw))
            t.event(MILESTONE_SKIPPED, "stage", rec.id, stage_event_data(rec, **data))
            return False
        if milestone.stage.status != required:
            t.event(MILESTONE_WAITING, "stage", rec.id, stage_event_data(rec, **data))
            return False
        t.event(MILESTONE_REACHED, "stage", rec.id, stage_event_data(rec, **data))
        return True

    return gate


def both(first: Gate | None, second: Gate | None) -> Gate | None:
    """A gate passing when ``first`` and then ``second`` pass (either None: the other)."""
    if first is None or second is None:
        return first or second

    def gate(t: Transition, rec: StageRecord) -> bool:
        return first(t, rec) and second(t, rec)

    return gate
