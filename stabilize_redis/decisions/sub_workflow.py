"""Sub-workflows (WCP-22): the parent's side of the protocol, as decisions. Pure.

A ``tasks.sub_workflow.SubWorkflowTask`` suspends its stage with the child's definition under
``SUB_WORKFLOW_START`` in its result's context. The commit that suspends the stage
(``handlers.signal_stage.commit_suspension``) calls ``start_child``: the definition leaves the
context, the stage records the child's id (``SUB_WORKFLOW_ID``, derived from the parent workflow,
the stage and the stage's run, so a redelivered RunTask or a re-decided commit never makes a
second child, and a re-run of the stage - a loop - makes a new one) and a StartSubWorkflow is
sent to the child's partition in the same commit (through the outbox when that partition is
another one: ``backend.redis_backend.RedisBackend.commit``).

The child's CompleteWorkflow commit sends the parent stage a persistent SignalStage named
``SUB_WORKFLOW_DONE`` (``done_signal``) carrying its id, final status and outputs; a persistent
signal is buffered if the stage is not suspended yet, so it is applied exactly once whichever
commits first. Cancelling the waiting stage (CancelStage, a cancel region, the workflow's
cancel) sends the child a CancelWorkflow in the same commit (``cancel_child``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import CancelWorkflow, SignalStage, StartSubWorkflow

SUB_WORKFLOW_CONFIG = "_sub_workflow_config"
"""Stage context key (stabilize's): the child as data - ``name``, ``application``, ``context``,
``stages`` (dicts of StageExecution fields, tasks as dicts of TaskExecution fields)."""

SUB_WORKFLOW_ID = "_sub_workflow_id"
"""Stage context key (stabilize's): the id of the child this run of the stage started."""

SUB_WORKFLOW_START = "_sub_workflow_start"
"""Key of a SubWorkflowTask's suspend result context: the child's definition, taken out by the
suspending commit and sent in StartSubWorkflow (never stored)."""

SUB_WORKFLOW_DONE = "_sub_workflow_done"
"""Name of the signal a child's final commit sends its parent stage."""

PARENT_WORKFLOW = "_parent_workflow_id"
"""Child workflow context key (stabilize's): the parent workflow's id."""

PARENT_STAGE = "_parent_stage_id"
"""Child workflow context key: the id of the parent stage waiting for it."""

RECURSION_DEPTH = "_recursion_depth"
MAX_RECURSION_DEPTH = "_max_recursion_depth"
DEFAULT_MAX_RECURSION_DEPTH = 10

STARTED_EVENT = "sub_workflow.started"
"""Event type (stage: the parent stage): its child was sent its StartSubWorkflow (data:
``sub_workflow_id``)."""

_HALTED = {WorkflowStatus.TERMINAL.name, WorkflowStatus.CANCELED.name, WorkflowStatus.STOPPED.name}


def child_workflow_id(parent_id: str, stage_id: str, run: int) -> str:
    """The id of the child started by run ``run`` of stage ``stage_id`` of ``parent_id``."""
    return f"{parent_id}.sub.{stage_id}.{run}"


def child_definition(config: dict[str, Any], depth: int, limit: int) -> dict[str, Any]:
    """The definition of the child ``config`` (a ``_sub_workflow_config``) describes, at
    recursion depth ``depth`` (the parent's plus one) of at most ``limit``."""
    return {
        "name": config.get("name") or f"sub-workflow-depth-{depth}",
        "application": config.get("application") or "stabilize",
        "context": {**(config.get("context") or {}), RECURSION_DEPTH: depth, MAX_RECURSION_DEPTH: limit},
        "stages": config.get("stages"),
    }


def start_message(parent_id: str, stage_id: str, child_id: str, definition: dict[str, Any],
                  execution_type: str) -> StartSubWorkflow:
    """The StartSubWorkflow of child ``child_id`` of stage ``stage_id`` of ``parent_id``; the
    child's context learns its parent (``PARENT_WORKFLOW``, ``PARENT_STAGE``)."""
    context = {**(definition.get("context") or {}), PARENT_WORKFLOW: parent_id, PARENT_STAGE: stage_id}
    return StartSubWorkflow(execution_id=child_id, execution_type=execution_type, parent_execution_id=parent_id,
                            parent_stage_id=stage_id, definition={**definition, "context": context})


def start_child(t: Transition, rec: StageRecord, kw: dict[str, Any]) -> None:
    """If ``rec``'s context holds a child's definition (``SUB_WORKFLOW_START``), take it out,
    record the child's id and send the child its StartSubWorkflow, into ``t``."""
    definition = rec.stage.context.pop(SUB_WORKFLOW_START, None)
    if not isinstance(definition, dict):
        return
    child = child_workflow_id(t.workflow_id, rec.id, rec.attempt)
    rec.stage.context[SUB_WORKFLOW_ID] = child
    t.push(start_message(t.workflow_id, rec.id, child, definition, kw["execution_type"]))
    t.event(STARTED_EVENT, "stage", rec.id, {"sub_workflow_id": child})


def resend_start(stage: StageExecution, parent_id: str, execution_type: str) -> StartSubWorkflow | None:
    """For recovery: the StartSubWorkflow again for a stage that waits for a child (a no-op
    where the child exists), rebuilt from its ``_sub_workflow_config``; None otherwise."""
    config, depth = stage.context.get(SUB_WORKFLOW_CONFIG), stage.context.get(RECURSION_DEPTH)
    limit = stage.context.get(MAX_RECURSION_DEPTH, DEFAULT_MAX_RECURSION_DEPTH)
    if stage.status != WorkflowStatus.SUSPENDED or not awaits_child(stage) or not isinstance(config, dict) \
            or not isinstance(depth, int) or not isinstance(limit, int):
        return None
    return start_message(parent_id, stage.id, str(stage.context[SUB_WORKFLOW_ID]),
                         child_definition(config, depth, limit), execution_type)


def awaits_child(stage: StageExecution) -> bool:
    """Whether ``stage`` (unfinished) waits for a child it started: such a stage is SUSPENDED but
    keeps its workflow busy (it does not wait on a person)."""
    return bool(stage.context.get(SUB_WORKFLOW_ID)) and not stage.status.is_complete \
        and not child_result_matches(stage.context)


def child_result_matches(context: dict[str, Any]) -> bool:
    """Whether the context's last signal is the done signal of the child it records."""
    data = context.get("_signal_data")
    return context.get("_signal_name") == SUB_WORKFLOW_DONE and isinstance(data, dict) \
        and data.get("sub_workflow_id") == context.get(SUB_WORKFLOW_ID) is not None


def cancel_child(t: Transition, rec: StageRecord, kw: dict[str, Any], reason: str) -> None:
    """``rec`` is being canceled in ``t``: if it waits for a child, cancel the child too."""
    if awaits_child(rec.stage):
        t.push(CancelWorkflow(execution_id=str(rec.stage.context[SUB_WORKFLOW_ID]),
                              execution_type=kw["execution_type"], user="parent", reason=reason))


def is_child(context: Any) -> bool:
    """Whether a workflow with this context is a child (its end must tell its parent, which only
    CompleteWorkflow does: the fused success path of ``decisions.flow`` leaves such a workflow to
    it)."""
    return isinstance(context, dict) and bool(context.get(PARENT_WORKFLOW)) and bool(context.get(PARENT_STAGE))


def done_signal(context: dict[str, Any], workflow_id: str, execution_type: str, status: WorkflowStatus,
                stages: Iterable[StageRecord]) -> SignalStage | None:
    """The signal a child ending with ``status`` sends its parent stage (None for a workflow that
    is nobody's child): its id, status and outputs (its top-level stages' outputs merged in rank
    order, a later stage's value winning)."""
    parent, stage = context.get(PARENT_WORKFLOW), context.get(PARENT_STAGE)
    if not isinstance(parent, str) or not isinstance(stage, str) or not parent or not stage:
        return None
    outputs: dict[str, Any] = {}
    for rec in sorted(stages, key=lambda r: r.rank):
        if rec.stage.parent_stage_id is None:
            outputs.update(rec.stage.outputs)
    return SignalStage(execution_id=parent, execution_type=execution_type, stage_id=stage,
                       signal_name=SUB_WORKFLOW_DONE, persistent=True,
                       signal_data={"sub_workflow_id": workflow_id, "sub_workflow_status": status.name,
                                    "sub_workflow_outputs": outputs})


def halted(status_name: str) -> bool:
    return status_name in _HALTED


__all__ = ["DEFAULT_MAX_RECURSION_DEPTH", "MAX_RECURSION_DEPTH", "PARENT_STAGE", "PARENT_WORKFLOW",
           "RECURSION_DEPTH", "STARTED_EVENT", "SUB_WORKFLOW_CONFIG", "SUB_WORKFLOW_DONE", "SUB_WORKFLOW_ID",
           "SUB_WORKFLOW_START", "awaits_child", "cancel_child", "child_definition", "child_result_matches",
           "child_workflow_id", "done_signal", "halted", "is_child", "resend_start", "start_child", "start_message"]
