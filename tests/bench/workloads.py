"""Workload shapes shared by both sides of the benchmark.

This module must import nothing outside the standard library: it is loaded by the
driver (our venv) and by ``bench_stabilize.py`` (stabilize's venv). The workflow
classes are passed in as ``api``, any object with ``Workflow``, ``StageExecution`` and
``TaskExecution`` attributes (the ``stabilize`` or ``stabilize_redis`` module), since
both engines expose the same model API.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

TASK_NAME = "noop_bench"
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
}


def workflow_count(name: str, scale: float) -> int:
    """Number of workflows for a workload after scaling (L1 is always one workflow)."""
    shape = SHAPES[name]
    if name == "L1":
        return 1
    return max(1, round(shape.count * scale))


def _stage(api: Any, ref: str, requisites: set[str]) -> Any:
    task = api.TaskExecution.create(name=ref, implementing_class=TASK_NAME, stage_start=True, stage_end=True)
    return api.StageExecution(
        ref_id=ref,
        type=TASK_NAME,
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
    else:
        raise ValueError(f"unknown workload {name!r}")
    return api.Workflow.create(application=application, name=f"{name}-{index}", stages=stages)


def warmup_workflow(api: Any, application: str) -> Any:
    """A one-stage workflow run (untimed) before each measurement."""
    return api.Workflow.create(application=application, name="warmup", stages=[_stage(api, "only", set())])


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
    row.update(extra or {})
    return row
