"""Whether a workflow waits only on signals - the rule behind its SUSPENDED status. Pure.

A RUNNING workflow waits only on signals when some stage is SUSPENDED and no stage keeps it
busy: none RUNNING, PAUSED or BUFFERED, none SUSPENDED on a child workflow it started
(``decisions.sub_workflow.awaits_child``), and no top-level stage NOT_STARTED but released to
start (no upstream, or its join counter at its stored threshold: a StartStage is on its way).
The commit that suspends a stage applies it to what it read (``handlers.signal_stage``) and
writes the meta SUSPENDED; every read of the whole workflow (``layout.workflow_from_hash``:
``store.retrieve``, the client, the status command, restores) applies it to the stored state,
so a workflow whose last busy branch ended after a stage suspended shows SUSPENDED too.
"""

from __future__ import annotations

from collections.abc import Mapping

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.sub_workflow import awaits_child
from stabilize_redis.keys import join_counter
from stabilize_redis.models.status import WorkflowStatus

_S = WorkflowStatus
BUSY = (_S.RUNNING, _S.PAUSED, _S.BUFFERED)


def blocker(stages: Mapping[str, StageRecord], counters: Mapping[str, int], thresholds: Mapping[str, int],
            waiting_id: str | None = None) -> str | None:
    """The id of a stage that keeps the workflow from waiting only on signals (module
    docstring), or None. ``waiting_id``: a stage being suspended (counted as waiting);
    ``counters``/``thresholds`` hold the stages' join counters (``keys.join_counter``)."""
    for sid, rec in stages.items():
        status = rec.stage.status
        if awaits_child(rec.stage):
            return sid  # suspended on a child workflow, which runs
        if sid == waiting_id or status == _S.SUSPENDED or status.is_complete:
            continue
        if status in BUSY:
            return sid
        if status == _S.NOT_STARTED and rec.stage.parent_stage_id is None:
            limit = thresholds.get(join_counter(sid))
            if not rec.up or (limit is not None and counters.get(join_counter(sid), 0) >= limit):
                return sid
    return None


def waits_only_on_signals(stages: Mapping[str, StageRecord], counters: Mapping[str, int],
                          thresholds: Mapping[str, int]) -> bool:
    """Some stage is SUSPENDED and none keeps the workflow busy (``blocker``)."""
    return any(r.stage.status == _S.SUSPENDED for r in stages.values()) and \
        blocker(stages, counters, thresholds) is None


__all__ = ["BUSY", "blocker", "waits_only_on_signals"]
