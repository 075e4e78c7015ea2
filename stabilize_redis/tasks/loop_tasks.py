"""The built-in tasks of the loops ``stages.loop_builder.LoopBuilder`` builds.

Every ``TaskRegistry`` resolves these names without registration (``BUILTIN_TASKS``; a task a
user registers under the same name takes precedence): ``LoopConditionTask``, ``LoopBackTask``
and ``LoopEntryTask``. stabilize's LoopBuilder references the first two, but stabilize ships
neither, so its loops fail with "no task found" - here they run.

Conditions are evaluated with the engine's bounded evaluator (``stabilize_redis.expressions``)
over the checking stage's context, the values the last pass carried (``_jump_outputs``) and
``loop_iteration`` (passes of the body completed so far, from 0). Looping is a
``TaskResult.jump_to`` (``handlers.jump_to_stage``): each pass re-runs the body with fresh
upstream values; the values a pass produced (the body's outputs) are carried to the next pass:
the condition of a while loop outputs them to the body, the entry of a repeat-until loop outputs
them over its seeds. A condition that cannot be evaluated fails the checking stage TERMINAL with
the reason in its context (``error``). A loop that runs out of ``_loop_max_iterations`` passes
ends as stabilize's does: it is exhausted - its last stage (a while loop's loop-back, a
repeat-until's condition) ends FAILED_CONTINUE with the output ``loop_exhausted`` and the last
pass's values, ``error`` saying why, and the stages after the loop run.

Context keys (set by LoopBuilder): ``_loop_id`` (the loop's ref prefix), ``_loop_type``
(``while`` | ``repeat_until``), ``_loop_condition``, ``_loop_max_iterations``,
``_loop_iteration``, ``_loop_target_ref_id`` (where a pass jumps back to), ``_loop_exit_ref_id``
(a while loop's exit: its loop-back stage), ``_loop_exit`` (the jump number of a while
loop's exit jump) and ``_loop_exhausted`` (that exit ran out of passes). The output ``<loop id>_iteration`` gives the body, and every stage after,
the pass number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize_redis.expressions import ExpressionError, evaluate_expression
from stabilize_redis.tasks.interface import NoOpTask, Task, WaitTask
from stabilize_redis.tasks.result import TaskResult
from stabilize_redis.tasks.sub_workflow import SubWorkflowTask

if TYPE_CHECKING:
    from stabilize_redis.models.stage.stage import StageExecution

LOOP_ID = "_loop_id"
LOOP_TYPE = "_loop_type"
LOOP_CONDITION = "_loop_condition"
LOOP_MAX_ITERATIONS = "_loop_max_iterations"
LOOP_ITERATION = "_loop_iteration"
LOOP_TARGET = "_loop_target_ref_id"
LOOP_EXIT_REF = "_loop_exit_ref_id"
LOOP_EXIT = "_loop_exit"
LOOP_EXHAUSTED = "_loop_exhausted"
EXHAUSTED_OUTPUT = "loop_exhausted"
WHILE = "while"
REPEAT_UNTIL = "repeat_until"
DEFAULT_MAX_ITERATIONS = 100


def iteration_output(loop_id: str) -> str:
    """The output key carrying loop ``loop_id``'s pass number (0-based) to its body and beyond."""
    return f"{loop_id}_iteration"


def _count(value: Any, default: int) -> int | None:
    """``value`` as a non-negative int (``default`` when unset), or None when it is not one."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def carried(context: dict[str, Any]) -> dict[str, Any]:
    """The values a pass hands back to its condition: the stage's context without the engine's
    and the loop's own keys (those starting with ``_``)."""
    return {k: v for k, v in context.items() if not k.startswith("_")}


def latest_values(context: dict[str, Any]) -> dict[str, Any]:
    """The loop's values as the latest pass left them: the stage's own values (``carried``) with
    the values the last jump carried (``_jump_outputs``) over them."""
    jumped = context.get("_jump_outputs")
    return {**carried(context), **(jumped if isinstance(jumped, dict) else {})}


class LoopConditionTask(Task):
    """Check a loop's condition. While loop (the check before the body): true - the body runs
    (SUCCEEDED, outputting the latest values for it), unless it already ran
    ``_loop_max_iterations`` times (then exhausted, see the module docstring); false - a forward
    jump to the loop-back stage, which ends the loop (the body is SKIPPED). Repeat-until (the
    check after the body): true - the loop ends (SUCCEEDED); false - a jump back to the entry
    for another pass carrying the pass's values, unless that would exceed
    ``_loop_max_iterations`` (exhausted: FAILED_CONTINUE)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        ctx = stage.context
        loop_id = str(ctx.get(LOOP_ID) or stage.ref_id)
        kind = ctx.get(LOOP_TYPE)
        limit = _count(ctx.get(LOOP_MAX_ITERATIONS), DEFAULT_MAX_ITERATIONS)
        if limit is None:
            return TaskResult.terminal(f"loop '{loop_id}': {LOOP_MAX_ITERATIONS} must be a non-negative integer, "
                                       f"not {ctx.get(LOOP_MAX_ITERATIONS)!r}")
        source = ctx.get(LOOP_ITERATION) if kind == WHILE else ctx.get(iteration_output(loop_id))
        iteration = _count(source, 0)
        if iteration is None:
            return TaskResult.terminal(f"loop '{loop_id}': iteration count {source!r} is not a non-negative integer")
        condition = ctx.get(LOOP_CONDITION)
        if not isinstance(condition, str):
            return TaskResult.terminal(f"loop '{loop_id}': {LOOP_CONDITION} must be an expression string")
        values = latest_values(ctx)
        scope = {**ctx, **values, "loop_iteration": iteration}
        try:
            holds = bool(evaluate_expression(condition, scope))
        except ExpressionError as e:
            return TaskResult.terminal(f"loop '{loop_id}': condition {condition!r} could not be evaluated: {e}")
        if kind == WHILE:
            return self._while(ctx, loop_id, condition, holds, iteration, limit)
        if kind == REPEAT_UNTIL:
            return self._repeat_until(ctx, loop_id, condition, holds, iteration, limit)
        return TaskResult.terminal(f"loop '{loop_id}': unknown {LOOP_TYPE} {kind!r}")

    @staticmethod
    def _while(ctx: dict[str, Any], loop_id: str, condition: str, holds: bool, iteration: int,
               limit: int) -> TaskResult:
        exhausted = holds and iteration >= limit
        if not holds or exhausted:
            exit_ref = ctx.get(LOOP_EXIT_REF)
            if not isinstance(exit_ref, str):
                return TaskResult.terminal(f"loop '{loop_id}': {LOOP_EXIT_REF} is not set")
            jumps = ctx.get("_jump_count", 0)
            number = (jumps if isinstance(jumps, int) else 0) + 1
            last = ctx.get("_jump_outputs")
            exit_context: dict[str, Any] = {LOOP_EXIT: number}
            if exhausted:
                exit_context[LOOP_EXHAUSTED] = (f"loop '{loop_id}' reached its max_iterations ({limit}) with its "
                                                f"condition {condition!r} still true")
            return TaskResult.jump_to(exit_ref, context=exit_context,
                                      outputs=dict(last) if isinstance(last, dict) else {})
        return TaskResult.success(outputs={**latest_values(ctx), iteration_output(loop_id): iteration})

    @staticmethod
    def _repeat_until(ctx: dict[str, Any], loop_id: str, condition: str, holds: bool, iteration: int,
                      limit: int) -> TaskResult:
        if holds:
            return TaskResult.success()
        if iteration + 1 >= limit:
            return TaskResult.failed_continue(
                f"loop '{loop_id}' reached its max_iterations ({limit}) without its condition {condition!r} "
                f"becoming true", outputs={EXHAUSTED_OUTPUT: True})
        target = ctx.get(LOOP_TARGET)
        if not isinstance(target, str):
            return TaskResult.terminal(f"loop '{loop_id}': {LOOP_TARGET} is not set")
        return TaskResult.jump_to(target, context={LOOP_ITERATION: iteration + 1}, outputs=carried(ctx))


class LoopBackTask(Task):
    """End a pass of a while loop: jump back to the condition check with the next pass number
    and the values the pass produced (``carried``); or, when this stage was reached by the
    condition's exit jump, end the loop (SUCCEEDED, with the last pass's values as outputs)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        ctx = stage.context
        loop_id = str(ctx.get(LOOP_ID) or stage.ref_id)
        exit_number = ctx.get(LOOP_EXIT)
        if exit_number is not None and exit_number == ctx.get("_jump_count"):
            last = ctx.get("_jump_outputs")
            values = dict(last) if isinstance(last, dict) else {}
            why = ctx.get(LOOP_EXHAUSTED)
            if isinstance(why, str):  # the condition ran out of passes: the loop ends, the workflow goes on
                return TaskResult.failed_continue(why, outputs={**values, EXHAUSTED_OUTPUT: True})
            return TaskResult.success(outputs=values)
        target = ctx.get(LOOP_TARGET)
        if not isinstance(target, str):
            return TaskResult.terminal(f"loop '{loop_id}': {LOOP_TARGET} is not set")
        iteration = _count(ctx.get(iteration_output(loop_id)), 0)
        if iteration is None:
            return TaskResult.terminal(f"loop '{loop_id}': iteration count is not a non-negative integer")
        return TaskResult.jump_to(target, context={LOOP_ITERATION: iteration + 1}, outputs=carried(ctx))


class LoopEntryTask(Task):
    """Start a pass of a repeat-until loop: output the loop's values - its seeds (the entry's
    context without ``_`` keys) with the previous pass's values over them (``latest_values``) -
    and the pass number (``<loop id>_iteration``, from ``_loop_iteration``, which the
    condition's jump back raises)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        ctx = stage.context
        loop_id = str(ctx.get(LOOP_ID) or stage.ref_id)
        iteration = _count(ctx.get(LOOP_ITERATION), 0)
        if iteration is None:
            return TaskResult.terminal(f"loop '{loop_id}': {LOOP_ITERATION} must be a non-negative integer")
        return TaskResult.success(outputs={**latest_values(ctx), iteration_output(loop_id): iteration})


BUILTIN_TASKS: dict[str, type[Task]] = {
    "LoopConditionTask": LoopConditionTask,
    "LoopBackTask": LoopBackTask,
    "LoopEntryTask": LoopEntryTask,
    "NoOpTask": NoOpTask,
    "noop": NoOpTask,
    "WaitTask": WaitTask,
    "wait": WaitTask,
    "SubWorkflowTask": SubWorkflowTask,
    "subWorkflow": SubWorkflowTask,
    "sub_workflow": SubWorkflowTask,
    "childWorkflow": SubWorkflowTask,
}
"""Task names every TaskRegistry resolves without registration (a registered name wins): the
loop tasks, and - as in stabilize - ``NoOpTask``/``noop``, ``WaitTask``/``wait`` and
``SubWorkflowTask`` (``subWorkflow``, ``sub_workflow``, ``childWorkflow``)."""
