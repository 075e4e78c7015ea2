"""SubWorkflowTask (WCP-22, recursion): run a child workflow and finish with its result.

Context keys (stabilize's): ``_sub_workflow_config`` (``name``, ``application``, ``context``,
``stages`` as data: dicts of StageExecution fields, tasks as dicts of TaskExecution fields, see
``models.definition``), ``_recursion_depth`` (0 at the top), ``_max_recursion_depth`` (default
10). Outputs: ``sub_workflow_id``, ``sub_workflow_status``, ``sub_workflow_outputs`` (the
child's top-level stages' outputs merged in rank order).

Where stabilize starts the child from inside the task and polls it every 5 seconds, here the
task only checks the definition (a bad one fails the task TERMINAL with the error, before
anything starts) and suspends: the commit that suspends the stage sends the child its
StartSubWorkflow, and the child's final commit sends the stage its result as a signal
(``decisions.sub_workflow``), which runs this task again to finish - nothing polls, and a
redelivered start never makes a second child. A child that does not succeed fails the task
TERMINAL (``Child workflow failed with status X``); canceling the stage cancels the child.
The stage is SUSPENDED while the child runs, but its workflow stays RUNNING (it waits on a
workflow, not on a person).
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.decisions.sub_workflow import (
    DEFAULT_MAX_RECURSION_DEPTH,
    MAX_RECURSION_DEPTH,
    RECURSION_DEPTH,
    SUB_WORKFLOW_CONFIG,
    SUB_WORKFLOW_ID,
    SUB_WORKFLOW_START,
    child_definition,
    child_result_matches,
    halted,
)
from stabilize_redis.models.definition import workflow_from_definition
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.tasks.interface import Task
from stabilize_redis.tasks.result import TaskResult
from stabilize_redis.validation import validate_workflow


def _depth(context: dict[str, Any], key: str, default: int) -> int | str:
    value = context.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{key} must be a non-negative integer, not {value!r}"
    return value


class SubWorkflowTask(Task):
    """Starts the child ``_sub_workflow_config`` describes and ends with its outcome."""

    @property
    def aliases(self) -> list[str]:
        return ["subWorkflow", "sub_workflow", "childWorkflow"]

    def execute(self, stage: StageExecution) -> TaskResult:
        context = stage.context
        if child_result_matches(context):
            return self._finish(context["_signal_data"])
        if context.get(SUB_WORKFLOW_ID):
            return TaskResult.suspend()  # resumed by another signal: the child still runs
        depth = _depth(context, RECURSION_DEPTH, 0)
        limit = _depth(context, MAX_RECURSION_DEPTH, DEFAULT_MAX_RECURSION_DEPTH)
        for problem in (depth, limit):
            if isinstance(problem, str):
                return TaskResult.terminal(problem)
        assert isinstance(depth, int) and isinstance(limit, int)
        if depth >= limit:
            return TaskResult.terminal(f"Maximum recursion depth ({limit}) exceeded",
                                       context={RECURSION_DEPTH: depth})
        config = context.get(SUB_WORKFLOW_CONFIG)
        if not config:
            return TaskResult.terminal(f"No {SUB_WORKFLOW_CONFIG} in context")
        if not isinstance(config, dict):
            return TaskResult.terminal(f"{SUB_WORKFLOW_CONFIG} must be an object, not {type(config).__name__}")
        definition = child_definition(config, depth + 1, limit)
        try:
            validate_workflow(workflow_from_definition(definition, "definition-check"))
        except ValueError as e:
            return TaskResult.terminal(f"Failed to start child workflow: {e}")
        return TaskResult.suspend(context={SUB_WORKFLOW_START: definition, RECURSION_DEPTH: depth + 1})

    @staticmethod
    def _finish(data: dict[str, Any]) -> TaskResult:
        child, status = data.get("sub_workflow_id"), str(data.get("sub_workflow_status"))
        if status == "SUCCEEDED":
            return TaskResult.success(outputs={"sub_workflow_id": child, "sub_workflow_status": status,
                                               "sub_workflow_outputs": data.get("sub_workflow_outputs") or {}})
        if halted(status):
            error = data.get("error") or f"Child workflow failed with status {status}"
            return TaskResult.terminal(str(error), context={"sub_workflow_id": child, "sub_workflow_status": status})
        return TaskResult.success(outputs={"sub_workflow_id": child, "sub_workflow_status": status})


__all__ = ["SubWorkflowTask"]
