"""Applying a stage's ``output_reducers`` when it starts: the step of ``decisions.claim``.

Which branches: the upstreams that released the join - of the upstreams the claim was given,
those that finished continuably (SUCCEEDED, FAILED_CONTINUE, SKIPPED) when the start was decided;
for an N-of-M join, the ones that counted (one that finishes after the join started does not
contribute), for a discriminator or a single upstream (the fused start in the completing
commit) that one upstream. Their versions are in the start's read set (StartStage checks every
upstream it read; the fused path writes the upstream itself), so the combination is exact under
concurrency: a CONFLICT re-reads and decides, and reduces, again. Branch values are taken in the
upstreams' topological order (their rank), which is also the order of the default merge - so
``last`` is what the default merge keeps for a scalar.

What lands in the stage's context, for every key of ``output_reducers`` (stabilize's rule: the
reducer's value is authoritative, the stage's own context value under that key is not used):
the combined value when at least one branch produced the key; otherwise the key as the default
merge of the stage's ancestors has it, or no key. A stage with no upstream branches (an initial
stage, a synthetic stage started by its parent) reduces nothing and resolves no reducer name.

Failure: a name that resolves to no reducer, a reducer that raises, or one that returns a value
no store can keep (``codec.stored_form``: NaN, a set, ...) fails the stage. The error - naming
the stage, the key and the reducer - is put in the stage's context as ``exception.details.error``
(where a failing stage builder puts its error) and ``OUTPUT_REDUCER_ERROR``; the stage is marked
``beforeStagePlanningFailed`` and started through ContinueParentStage, which fails it with its
failure status (TERMINAL unless its failure policy says otherwise), runs its on-failure stages
and settles it - its tasks never run, and the workflow is never left waiting. A new run of the
stage (restart, jump) clears that failure and reduces again.

User code in a decision: a reducer registered with ``register_reducer`` runs here, inside the
decision of the worker that starts the join (the StartStage handler, or the RunTask/CompleteStage
commit that completes a single upstream). The choice is deliberate - reducing later, in RunTask,
would mean storing every branch's values with the stage or reading the upstreams again - and
the price is a contract such a reducer must keep: a deterministic function of the list it is
given, with no side effects and no I/O, quick, registered in every worker process (at import of
the ``--app`` module). It may run more than once for one start (every CONFLICT re-decides) and
is given copies of the values, so it cannot change an upstream's stored outputs.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from stabilize_redis.decisions.codec import StageRecord, StateEncodingError, stored_form
from stabilize_redis.decisions.common import stage_event_data
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.models.stage import OUTPUT_REDUCERS_KEY, PLANNING_FAILED
from stabilize_redis.reducers import get_reducer

log = logging.getLogger("stabilize_redis.handlers")

OUTPUT_REDUCER_ERROR = "outputReducerError"
"""Stage context key: why the stage's output reducers failed (the stage failed with it)."""

REDUCER_FAILED = "stage.reducer_failed"
"""Event type: a stage's output reducer failed; data: ref_id, key, reducer, error."""

EXCEPTION_KEY = "exception"


class ReducerFailure(Exception):
    """One key's reduction failed; ``str`` is the message stored with the stage."""

    def __init__(self, key: str, reducer: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.reducer = reducer


def stage_reducers(rec: StageRecord) -> dict[str, Any]:
    """``rec``'s ``output_reducers`` (or, when that field is empty, its context's
    ``_output_reducers``): key -> reducer name."""
    configured = rec.stage.output_reducers or rec.stage.context.get(OUTPUT_REDUCERS_KEY) or {}
    return dict(configured) if isinstance(configured, dict) else {}


def counted_branches(ups: list[StageRecord]) -> list[StageRecord]:
    """Of ``ups``, those that finished continuably, in topological (rank) order."""
    done = [u for u in ups if u.stage.status.is_complete and not u.stage.status.is_halt]
    return sorted(done, key=lambda u: (u.rank, u.stage.ref_id))


def _reduce_key(ref_id: str, key: str, name: Any, values: list[Any]) -> Any:
    """``values`` (non-empty) combined by the reducer ``name``, as context stores it."""
    reducer = get_reducer(name)
    assert reducer is not None
    where = f"stage {ref_id!r}: output reducer {name!r} for key {key!r}"
    try:
        value = reducer(copy.deepcopy(values))
    except Exception as e:  # noqa: BLE001 - a registered reducer is user code
        raise ReducerFailure(key, name, f"{where} failed: {type(e).__name__}: {e}") from None
    try:
        return stored_form(value, "context." + key)
    except StateEncodingError as e:
        raise ReducerFailure(key, name, f"{where} returned a value that cannot be stored: {e}") from None


def _clear_previous_failure(context: dict[str, Any]) -> None:
    """A new run of the stage: the failure an earlier run's reducers recorded is not this run's."""
    error = context.pop(OUTPUT_REDUCER_ERROR, None)
    if error is None:
        return
    context.pop(PLANNING_FAILED, None)
    if context.get(EXCEPTION_KEY) == {"details": {"error": error}}:
        del context[EXCEPTION_KEY]


def reduce_fan_in(t: Transition, rec: StageRecord, ups: list[StageRecord]) -> bool:
    """Apply ``rec``'s output reducers over ``counted_branches(ups)`` to its own context (called
    by ``claim_ready_stage``). A key no branch produced is left to the ancestors' default merge,
    which a task reads through its view (``decisions.views``). Returns False when a reducer
    failed: the failure is recorded (see the module docstring) and the caller must start the
    stage through ContinueParentStage, which fails it. True otherwise (also when the stage has no
    reducers, or no upstream branches)."""
    context = rec.stage.context
    _clear_previous_failure(context)
    reducers = stage_reducers(rec)
    if not reducers or not ups:
        return True
    branches = counted_branches(ups)
    combined: dict[str, Any] = {}
    try:
        for key, name in reducers.items():
            if get_reducer(name) is None:
                raise ReducerFailure(key, name, f"stage {rec.stage.ref_id!r}: unknown output reducer "
                                                f"{name!r} for key {key!r}")
            values = [b.stage.outputs[key] for b in branches if key in b.stage.outputs]
            if values:
                combined[key] = _reduce_key(rec.stage.ref_id, key, name, values)
    except ReducerFailure as failure:
        _record_failure(t, rec, failure)
        return False
    for key in reducers:
        if key in combined:
            context[key] = combined[key]
        else:
            context.pop(key, None)
    return True


def _record_failure(t: Transition, rec: StageRecord, failure: ReducerFailure) -> None:
    message = str(failure)
    log.error("workflow %s, stage %s (%s): %s; the stage fails", t.workflow_id, rec.stage.ref_id, rec.id, message)
    context = rec.stage.context
    context[OUTPUT_REDUCER_ERROR] = message
    context[EXCEPTION_KEY] = {"details": {"error": message}}
    context[PLANNING_FAILED] = True
    t.event(REDUCER_FAILED, "stage", rec.id, stage_event_data(
        rec, key=failure.key, reducer=failure.reducer if isinstance(failure.reducer, str) else repr(failure.reducer),
        error=message))


__all__ = ["OUTPUT_REDUCER_ERROR", "REDUCER_FAILED", "counted_branches", "reduce_fan_in", "stage_reducers"]
