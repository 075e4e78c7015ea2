"""``LoopBuilder``: structured loops (WCP-21) built from ordinary stages and jumps, with
stabilize's API (``while_loop``, ``repeat_until``).

The stages it returns work as they are: the tasks they name (``LoopConditionTask``,
``LoopBackTask``, ``LoopEntryTask``) are built in and resolved by every ``TaskRegistry``
(``tasks.loop_tasks``), and each pass is a ``TaskResult.jump_to`` that re-runs the body with
fresh upstream values. Put the returned stages in the workflow; stages that follow the loop
require its last stage (``stages[-1].ref_id``); the first one (``stages[0]``) may be given
requisites of its own. The body stages' ``requisite_stage_ref_ids`` are replaced: they run in
the order given.

Limits: ``max_iterations`` bounds the passes of the body; one more fails the checking stage
TERMINAL naming the loop. The loop's jumps are allowed by a ``_max_jumps`` in the jumping
stages' context (``max_iterations + 1``); a ``_max_jumps`` set in the workflow context takes
precedence over it (``handlers.jump_to_stage``), so it must leave room for the loop's jumps.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.models.stage.stage import StageExecution
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.tasks.loop_tasks import (
    DEFAULT_MAX_ITERATIONS,
    LOOP_CONDITION,
    LOOP_EXIT_REF,
    LOOP_ID,
    LOOP_ITERATION,
    LOOP_MAX_ITERATIONS,
    LOOP_TARGET,
    LOOP_TYPE,
    REPEAT_UNTIL,
    WHILE,
)


def _one_task(stage: StageExecution, name: str, implementing_class: str) -> StageExecution:
    stage.tasks = [TaskExecution.create(name=name, implementing_class=implementing_class,
                                        stage_start=True, stage_end=True)]
    return stage


def _check(max_iterations: int, body_stages: list[StageExecution]) -> None:
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive integer, not {max_iterations!r}")
    if not body_stages:
        raise ValueError("a loop needs at least one body stage")


def _chained(body_stages: list[StageExecution], after: str) -> list[StageExecution]:
    """``body_stages`` as a chain after stage ``after`` (each requires the one before it)."""
    previous = after
    for body in body_stages:
        body.requisite_stage_ref_ids = {previous}
        previous = body.ref_id
    return body_stages


class LoopBuilder:
    """Builds the stages of a structured loop; see the module docstring."""

    @staticmethod
    def while_loop(
        condition: str,
        body_stages: list[StageExecution],
        loop_ref_prefix: str = "loop",
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        context: dict[str, Any] | None = None,
    ) -> list[StageExecution]:
        """Check ``condition``, run the body while it holds, then continue after the loop.

        Returns ``[<prefix>_condition, *body_stages, <prefix>_loopback]``. The condition is
        evaluated over the condition stage's context (``context`` seeds it), the values the
        last pass produced (the body's outputs, carried back by the loop-back stage) and
        ``loop_iteration`` (passes so far, from 0). When it is false the body is SKIPPED and the
        loop-back stage SUCCEEDS with the last pass's values as outputs. The body sees its pass
        number as the output ``<prefix>_iteration``. Raises ValueError for an empty body or a
        ``max_iterations`` below 1."""
        _check(max_iterations, body_stages)
        condition_ref, loopback_ref = f"{loop_ref_prefix}_condition", f"{loop_ref_prefix}_loopback"
        jumps = max_iterations + 1  # one jump back per pass, and the exit jump
        check = _one_task(StageExecution.create(
            type="noop", name=f"{loop_ref_prefix} condition check", ref_id=condition_ref,
            context={**(context or {}), LOOP_ID: loop_ref_prefix, LOOP_TYPE: WHILE, LOOP_CONDITION: condition,
                     LOOP_MAX_ITERATIONS: max_iterations, LOOP_ITERATION: 0, LOOP_EXIT_REF: loopback_ref,
                     "_max_jumps": jumps},
        ), "Loop Condition Check", "LoopConditionTask")
        stages = [check, *_chained(body_stages, condition_ref)]
        previous = stages[-1].ref_id
        back = _one_task(StageExecution.create(
            type="noop", name=f"{loop_ref_prefix} loop back", ref_id=loopback_ref,
            context={LOOP_ID: loop_ref_prefix, LOOP_TYPE: WHILE, LOOP_TARGET: condition_ref, "_max_jumps": jumps},
            requisite_stage_ref_ids={previous},
        ), "Loop Back", "LoopBackTask")
        stages.append(back)
        return stages

    @staticmethod
    def repeat_until(
        condition: str,
        body_stages: list[StageExecution],
        loop_ref_prefix: str = "loop",
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        context: dict[str, Any] | None = None,
    ) -> list[StageExecution]:
        """Run the body, then check ``condition``; repeat until it holds.

        Returns ``[<prefix>_entry, *body_stages, <prefix>_condition]``. The condition is
        evaluated over the condition stage's context - the body's outputs of this pass, fresh
        each pass - and ``loop_iteration`` (passes before this one, from 0). ``context`` seeds
        the entry stage, whose outputs hand it to the body and the stages after. The body sees its pass number as the output
        ``<prefix>_iteration``. After ``max_iterations`` passes without the condition holding,
        the condition stage fails TERMINAL. Raises ValueError for an empty body or a
        ``max_iterations`` below 1."""
        _check(max_iterations, body_stages)
        entry_ref, condition_ref = f"{loop_ref_prefix}_entry", f"{loop_ref_prefix}_condition"
        entry = _one_task(StageExecution.create(
            type="noop", name=f"{loop_ref_prefix} entry", ref_id=entry_ref,
            context={**(context or {}), LOOP_ID: loop_ref_prefix, LOOP_TYPE: REPEAT_UNTIL, LOOP_ITERATION: 0},
        ), "Loop Entry", "LoopEntryTask")
        stages = [entry, *_chained(body_stages, entry_ref)]
        previous = stages[-1].ref_id
        check = _one_task(StageExecution.create(
            type="noop", name=f"{loop_ref_prefix} condition check", ref_id=condition_ref,
            context={LOOP_ID: loop_ref_prefix, LOOP_TYPE: REPEAT_UNTIL, LOOP_CONDITION: condition,
                     LOOP_MAX_ITERATIONS: max_iterations, LOOP_TARGET: entry_ref, "_max_jumps": max_iterations},
            requisite_stage_ref_ids={previous},
        ), "Loop Condition Check", "LoopConditionTask")
        stages.append(check)
        return stages


__all__ = ["LoopBuilder"]
