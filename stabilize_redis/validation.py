"""Submit-time validation: a workflow that cannot run, holds a value that cannot be stored, or
uses a setting the engine does not execute (``support``) is rejected with a message naming the
stage and the field, before anything is written.

``validate_storable`` is run by every path that stores a new workflow (``client.submit``,
``RedisWorkflowStore.store``, ``Orchestrator.start``, through ``layout.lay_out``);
``validate_workflow`` adds what the engine needs to run it.
"""

from __future__ import annotations

from stabilize_redis.dag.topological import validate_stage_graph
from stabilize_redis.decisions.codec import StateEncodingError, ensure_plain, ensure_text
from stabilize_redis.models.stage import JoinType, StageExecution
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.support import NotExecutedError, check_workflow


class WorkflowValidationError(ValueError):
    """The workflow is invalid; the message names the stage (ref_id) and field."""


_COLUMNS = ("id", "application", "name")
"""Text columns of the PostgreSQL snapshot row that must hold a string."""
_WORKFLOW_FIELDS = ("origin", "canceled_by", "cancellation_reason", "start_time", "end_time",
                    "start_time_expiry", "max_concurrent_executions")
_STAGE_FIELDS = ("id", "ref_id", "type", "name", "parent_stage_id", "deferred_choice_group",
                 "milestone_ref_id", "milestone_status", "mutex_key", "cancel_region", "start_time",
                 "end_time", "start_time_expiry", "scheduled_time", "join_threshold", "split_conditions")
_TASK_FIELDS = ("id", "name", "implementing_class", "start_time", "end_time", "task_exception_details")


def validate_storable(wf: Workflow) -> None:
    """Raise WorkflowValidationError unless every value of ``wf`` can be stored in Redis and
    PostgreSQL and encoded as msgpack and JSON (``codec.ensure_plain``: no NaN or Infinity, no
    NUL in any string or key, integers within 64 bits, nesting within ``codec.MAX_DEPTH``) —
    context, outputs, trigger, names, ids, times and every other stored field — and every
    setting is one the engine executes (``support.check_workflow``: e.g. ``stage 'a':
    mutex_key: mutual exclusion ... is not executed by this engine yet``). The workflow's id,
    application and name must be strings, ``pipeline_config_id`` a string or None (they are
    PostgreSQL text columns). In context and outputs, ``codec.TEXT_TYPES`` values (a
    ``datetime``) are accepted: they are stored as their ``str``, like stabilize's
    ``default=str``. The message names the key path, e.g. ``stage 'build': context.a.b[3]: ...``."""
    try:
        _check_workflow(wf)
        check_workflow(wf)
    except (StateEncodingError, NotExecutedError) as e:
        raise WorkflowValidationError(str(e)) from None


def _check_workflow(wf: Workflow) -> None:
    for name in _COLUMNS:
        ensure_text(getattr(wf, name), f"workflow {name}")
    ensure_text(wf.pipeline_config_id, "workflow pipeline_config_id", optional=True)
    for name in _WORKFLOW_FIELDS:
        ensure_plain(getattr(wf, name), f"workflow {name}")
    ensure_plain(wf.context, "workflow context", as_text=True)
    if wf.trigger is not None:
        ensure_plain(wf.trigger.to_dict(), "workflow trigger")
    for stage in wf.stages:
        _check_stage(stage)


def _check_stage(stage: StageExecution) -> None:
    where = f"stage {stage.ref_id!r}: "
    for name in _STAGE_FIELDS:
        ensure_plain(getattr(stage, name), where + name)
    ensure_plain(stage.context, where + "context", as_text=True)
    ensure_plain(stage.outputs, where + "outputs", as_text=True)
    ensure_plain(sorted(stage.requisite_stage_ref_ids, key=repr), where + "requisite_stage_ref_ids")
    ensure_plain(list(stage.finalizer_names), where + "finalizer_names")
    if stage.mi_config is not None:
        ensure_plain(stage.mi_config.to_dict(), where + "mi_config")
    for i, task in enumerate(stage.tasks):
        for name in _TASK_FIELDS:  # exception details, like context, keep a datetime as its str
            ensure_plain(getattr(task, name), f"{where}tasks[{i}].{name}", as_text=name == "task_exception_details")


def validate_workflow(wf: Workflow) -> None:
    """Raise WorkflowValidationError for anything that would stop the workflow from running."""
    if not wf.stages:
        raise WorkflowValidationError(f"workflow {wf.name!r}: stages: a workflow needs at least one stage")
    for stage in wf.stages:
        where = f"stage {stage.ref_id!r}"
        if not stage.ref_id:
            raise WorkflowValidationError(f"stage {stage.name!r}: ref_id: must not be empty")
        for i, task in enumerate(stage.tasks):
            if not task.implementing_class:
                raise WorkflowValidationError(
                    f"{where}: tasks[{i}].implementing_class: must name a registered task")
        if stage.join_type == JoinType.N_OF_M and stage.join_threshold > len(stage.requisite_stage_ref_ids):
            raise WorkflowValidationError(
                f"{where}: join_threshold: {stage.join_threshold} exceeds its "
                f"{len(stage.requisite_stage_ref_ids)} upstream stages")
    validate_storable(wf)
    try:
        validate_stage_graph(wf.stages)
    except ValueError as e:
        raise WorkflowValidationError(str(e)) from None
