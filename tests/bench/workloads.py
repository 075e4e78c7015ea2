"""Workload shapes shared by both sides of the benchmark.

This module must import nothing outside the standard library: it is loaded by the
driver (our venv) and by ``bench_stabilize.py`` (stabilize's venv). The workflow
classes are passed in as ``api``, any object with ``Workflow``, ``StageExecution`` and
``TaskExecution`` attributes (the ``stabilize`` or ``stabilize_redis`` module), since
both engines expose the same model API.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TASK_NAME = "noop_bench"
LOOP_TASK_NAME = "loop_back_bench"
LOOP_BODY = 10  # stages in the loop
LOOP_PASSES = 10  # times the loop body runs: LOOP_PASSES - 1 jumps back to LOOP_TARGET
LOOP_TARGET = "s0"
ACTIVE_STATUS_NAMES = ("NOT_STARTED", "RUNNING", "PAUSED", "SUSPENDED", "BUFFERED")


@dataclass(frozen=True)
class Shape:
    """A workload: ``count`` workflows, each with ``stages`` single-task stages."""

    name: str
    count: int
    stages: int
    doc: str


SHAPES: dict[str, Shape] = {
    "W1": Shape("W1", 50, 10, "50 workflows x 10-stage chain"),
    "W2": Shape("W2", 10, 52, "10 workflows x (1 -> 50 parallel -> 1)"),
    "W3": Shape("W3", 1000, 1, "1000 single-stage workflows"),
    "L1": Shape("L1", 1, 100, "one 100-stage chain (per-hop latency)"),
    "LOOP": Shape(
        "LOOP",
        1,
        LOOP_BODY * LOOP_PASSES,
        "one 10-stage loop run 10 times via TaskResult.jump_to (100 stage runs)",
    ),
}
"""``stages`` is stage runs: LOOP runs each of its 10 stages 10 times."""

SINGLE = ("L1", "LOOP")  # one workflow whatever the scale


def workflow_count(name: str, scale: float) -> int:
    """Number of workflows for a workload after scaling (L1 and LOOP are always one workflow)."""
    shape = SHAPES[name]
    if name in SINGLE:
        return 1
    return max(1, round(shape.count * scale))


def _stage(api: Any, ref: str, requisites: set[str], task_name: str = TASK_NAME) -> Any:
    task = api.TaskExecution.create(name=ref, implementing_class=task_name, stage_start=True, stage_end=True)
    return api.StageExecution(
        ref_id=ref,
        type=task_name,
        name=ref,
        context={},
        tasks=[task],
        requisite_stage_ref_ids=requisites,
    )


def _chain(api: Any, length: int) -> list[Any]:
    return [_stage(api, f"s{i}", {f"s{i - 1}"} if i else set()) for i in range(length)]


def _fan(api: Any, width: int) -> list[Any]:
    stages = [_stage(api, "head", set())]
    stages += [_stage(api, f"p{i}", {"head"}) for i in range(width)]
    stages.append(_stage(api, "tail", {f"p{i}" for i in range(width)}))
    return stages


def build(api: Any, name: str, application: str, index: int) -> Any:
    """Build workflow number ``index`` of workload ``name``."""
    if name in ("W1", "L1"):
        stages = _chain(api, SHAPES[name].stages)
    elif name == "W2":
        stages = _fan(api, 50)
    elif name == "W3":
        stages = [_stage(api, "only", set())]
    elif name == "LOOP":
        stages = _chain(api, LOOP_BODY - 1)
        last = f"s{LOOP_BODY - 1}"
        stages.append(_stage(api, last, {f"s{LOOP_BODY - 2}"}, LOOP_TASK_NAME))
    else:
        raise ValueError(f"unknown workload {name!r}")
    return api.Workflow.create(application=application, name=f"{name}-{index}", stages=stages)


def warmup_workflow(api: Any, application: str) -> Any:
    """A one-stage workflow run (untimed) before each measurement."""
    return api.Workflow.create(application=application, name="warmup", stages=[_stage(api, "only", set())])


def loop_should_jump(stage_context: Mapping[str, Any]) -> bool:
    """The LOOP's last-stage decision: jump back to LOOP_TARGET while fewer than
    LOOP_PASSES - 1 jumps were made. Reads ``_jump_count``, which a backward jump records in the
    source stage's context (stabilize's rule), so no bench state is carried between passes."""
    return int(stage_context.get("_jump_count") or 0) < LOOP_PASSES - 1


UNSUPPORTED = "unsupported"


def _failure_text(workflow: Any) -> tuple[str, str]:
    """(exception type, message) of the first failed stage's recorded error, else ("", "")."""
    for stage in workflow.stages:
        context = stage.context if isinstance(stage.context, dict) else {}
        if context.get("jump_error"):
            return "jump_error", f"stage {stage.ref_id!r}: {context['jump_error']}"
        sources = [context.get("exception")] + [
            t.task_exception_details.get("exception") for t in stage.tasks
        ]
        for found in sources:
            details = found.get("details") if isinstance(found, dict) else None
            if isinstance(details, dict) and details.get("exception_type"):
                return str(details["exception_type"]), str(details.get("error", ""))
    return "", ""


def loop_outcome(workflow: Any) -> tuple[str, str]:
    """Classify a finished LOOP workflow: ("ok", "") when it SUCCEEDED after LOOP_PASSES - 1
    jumps; (UNSUPPORTED, why) when the engine refused the jump (the task failed with
    NotExecutedError); ("wrong", what happened) for anything else."""
    if workflow is None:
        return "wrong", "the workflow did not finish in time"
    status = getattr(workflow.status, "name", str(workflow.status))
    last = next((s for s in workflow.stages if s.ref_id == f"s{LOOP_BODY - 1}"), None)
    jumps = last.context.get("_jump_count") if last is not None else None
    if status == "SUCCEEDED":
        if jumps == LOOP_PASSES - 1:
            return "ok", ""
        return "wrong", f"SUCCEEDED with _jump_count={jumps!r} on the last stage, expected {LOOP_PASSES - 1}"
    kind, text = _failure_text(workflow)
    if kind == "NotExecutedError":
        return UNSUPPORTED, text
    return "wrong", f"{status} after _jump_count={jumps!r}: {kind} {text}".rstrip()


def chain_hops_ms(workflow: Any) -> list[float]:
    """Gaps between consecutive chain stages' end times (engine-recorded, epoch ms)."""
    ends: dict[str, float] = {s.ref_id: s.end_time for s in workflow.stages if s.end_time is not None}
    n = len(workflow.stages)
    return [
        float(ends[f"s{i + 1}"] - ends[f"s{i}"])
        for i in range(n - 1)
        if f"s{i}" in ends and f"s{i + 1}" in ends
    ]


def summarize(
    name: str,
    engine: str,
    workers: str,
    wall: float,
    workflows: list[Any],
    expected: int,
    extra: dict[str, Any] | None = None,
    t0_epoch: float | None = None,
) -> dict[str, Any]:
    """One result row. ``workflows`` are the final Workflow objects (None for lost ones).

    ``wall`` is the harness's own first-submit-to-seen-all-terminal time. With ``t0_epoch``
    (time.time() at the first submit) and every workflow carrying an engine-recorded
    ``end_time`` (epoch ms), the reported wall is ``max(end_time) - t0`` instead, so the
    harness's way of noticing completion does not count against either engine.
    """
    stages = expected * SHAPES[name].stages
    failures = sum(
        1 for wf in workflows if wf is None or getattr(wf.status, "name", str(wf.status)) != "SUCCEEDED"
    )
    failures += expected - len(workflows)
    ends = [wf.end_time for wf in workflows if wf is not None and wf.end_time is not None]
    detect_wall = wall
    if t0_epoch is not None and ends and len(ends) == expected:
        wall = max(ends) / 1000.0 - t0_epoch
    row: dict[str, Any] = {
        "workload": name,
        "engine": engine,
        "workers": workers,
        "workflows": expected,
        "stages": stages,
        "wall_s": wall,
        "stages_per_s": stages / wall if wall > 0 else 0.0,
        "failures": failures,
        "wall_source": "max workflow end_time - first submit" if wall != detect_wall else "harness",
        "detect_wall_s": detect_wall,
    }
    if name == "L1" and workflows and workflows[0] is not None:
        hops = chain_hops_ms(workflows[0])
        row["hop_source"] = "stage end_time (engine, epoch ms)"
        row["hop_ms_median"] = statistics.median(hops) if hops else None
        row["hop_ms_mean"] = statistics.fmean(hops) if hops else None
        row["hop_ms_wall"] = wall * 1000.0 / stages
    row["wall_ms_per_stage"] = wall * 1000.0 / stages
    row.update(extra or {})
    if name == "LOOP":
        return _judge_loop(row, workflows[0] if workflows else None)
    return row


def _judge_loop(row: dict[str, Any], workflow: Any) -> dict[str, Any]:
    """The LOOP row as measured when the loop ran as specified; an ``unsupported`` row (no
    numbers) when the engine refused the jump; an ``error`` row (no numbers) otherwise."""
    verdict, why = loop_outcome(workflow)
    if verdict == "ok":
        return row
    kept = {k: row[k] for k in ("workload", "engine", "workers")}
    if verdict == UNSUPPORTED:
        return {**kept, UNSUPPORTED: why}
    return {**kept, "error": f"loop did not run as specified: {why}"}


def add_cpu(row: dict[str, Any], worker_cpu_s: float | None, server_cpu_s: float | None) -> None:
    """Per-stage CPU columns of a measured row (a row without ``stages`` is left alone)."""
    stages = row.get("stages")
    if not stages:
        return
    if worker_cpu_s is not None:
        row["worker_cpu_s"] = worker_cpu_s
        row["worker_cpu_us_per_stage"] = worker_cpu_s * 1e6 / stages
    if server_cpu_s is not None:
        row["server_cpu_s"] = server_cpu_s
        row["server_cpu_us_per_stage"] = server_cpu_s * 1e6 / stages
