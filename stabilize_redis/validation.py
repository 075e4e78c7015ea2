"""Submit-time validation: a workflow that cannot run is rejected with a message naming the
stage and the field, before anything is written."""

from __future__ import annotations

from stabilize_redis.backend.codec import StateEncodingError, ensure_plain
from stabilize_redis.dag.topological import validate_stage_graph
from stabilize_redis.models.stage import JoinType
from stabilize_redis.models.workflow import Workflow


class WorkflowValidationError(ValueError):
    """The workflow is invalid; the message names the stage (ref_id) and field."""


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
        try:
            ensure_plain(stage.context, f"{where}: context")
            ensure_plain(stage.outputs, f"{where}: outputs")
        except StateEncodingError as e:
            raise WorkflowValidationError(str(e)) from None
    try:
        ensure_plain(wf.context, "workflow context")
        validate_stage_graph(wf.stages)
    except (StateEncodingError, ValueError) as e:
        raise WorkflowValidationError(str(e)) from None
