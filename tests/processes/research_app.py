"""Task registry of the research-analyst test (``tests/processes/test_research_analyst.py``): the
seed README's multi-agent shape with the model calls replaced by plain functions.

plan -> researcher_0..2 -> synthesize (2 of 3, findings collected) -> review_a | review_b ->
router (first verdict) -> approval (human) -> publish. The router loops back to ``plan`` while
the reviewers' confidence is low; the planner answers the feedback it was sent, which is what
makes the reviewers confident in the second pass.

Contracts the test relies on:

* Every execution appends a JSON record to the list ``<ns>:test:runs:<wf>``: ``ref``, ``pid``,
  ``pass`` (the planner's pass number, read from the context), ``n`` (the how-manieth execution
  of that stage in that pass) and ``event`` - ``start`` when it begins, ``done`` with what it
  produced just before it returns (never for an execution killed in between).
* A researcher whose stage context has ``hold: true`` blocks after its ``start`` record until
  the test creates ``<ns>:test:release:<wf>:<pass>`` (or its cancellation token fires: it then
  records ``canceled`` and returns canceled). It holds a worker thread while it waits, so a
  worker killed then dies mid-task.
* The router decides only once the test creates ``<ns>:test:route:<wf>:<pass>``; until then it
  returns RUNNING and is polled every 50 ms (no thread is held while it waits).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

import redis

from stabilize_redis import RetryableTask, StageExecution, TaskRegistry, TaskResult, is_cancellation_requested
from stabilize_redis.hitl import ApprovalTask

_client = redis.Redis.from_url(os.environ["STZ_TEST_URL"])
_ns = os.environ["STZ_TEST_NS"]

CONFIDENT = 0.85
HOLD_LIMIT_S = 30.0


def runs_key(wf: str) -> str:
    return f"{_ns}:test:runs:{wf}"


def _pass(stage: StageExecution) -> int:
    """The pass the planner announced (its ``pass`` output, fresh in every pass)."""
    return int(stage.context["pass"])


def _start(stage: StageExecution, pass_no: int) -> int:
    """Count and record the start of one execution; returns its number within the pass."""
    wf = stage.execution.id
    n = int(_client.hincrby(f"{_ns}:test:n:{wf}", f"{stage.ref_id}:{pass_no}", 1))
    _record(stage, pass_no, n, "start")
    return n


def _record(stage: StageExecution, pass_no: int, n: int, event: str, **data: Any) -> None:
    entry = {"ref": stage.ref_id, "pid": os.getpid(), "pass": pass_no, "n": n, "event": event, **data}
    _client.rpush(runs_key(stage.execution.id), json.dumps(entry))


def planner(stage: StageExecution) -> TaskResult:
    """Splits the question into three parts. In a pass after a loop-back (``_jump_count`` in its
    context) it outputs the router's ``feedback`` as ``addressed_feedback``."""
    pass_no = int(stage.context.get("_jump_count", 0)) + 1
    n = _start(stage, pass_no)
    question = str(stage.context["question"])
    outputs: dict[str, Any] = {"pass": pass_no, "parts": [f"{question} / part {i}" for i in range(3)]}
    if stage.context.get("feedback"):
        outputs["addressed_feedback"] = stage.context["feedback"]
    _record(stage, pass_no, n, "done", outputs=outputs)
    return TaskResult.success(outputs=outputs)


def researcher(stage: StageExecution) -> TaskResult:
    """Outputs ``finding``: its part of the plan and the pass. Blocks first when ``hold`` is set."""
    pass_no = _pass(stage)
    n = _start(stage, pass_no)
    if stage.context.get("hold"):
        release = f"{_ns}:test:release:{stage.execution.id}:{pass_no}"
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not _client.exists(release):
            if is_cancellation_requested():
                _record(stage, pass_no, n, "canceled")
                return TaskResult.canceled()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{release} was never set")
            time.sleep(0.01)
    part = stage.context["parts"][int(stage.context["index"])]
    finding = f"{part}: answered in pass {pass_no}"
    _record(stage, pass_no, n, "done", finding=finding)
    return TaskResult.success(outputs={"finding": finding})


def synthesize(stage: StageExecution) -> TaskResult:
    """Outputs ``findings``: the list the ``collect`` reducer put under ``finding``."""
    pass_no = _pass(stage)
    n = _start(stage, pass_no)
    findings = list(stage.context.get("finding") or [])
    _record(stage, pass_no, n, "done", findings=findings)
    return TaskResult.success(outputs={"findings": findings, "summary": " | ".join(findings)})


def reviewer(stage: StageExecution) -> TaskResult:
    """Outputs a ``verdict`` and a ``confidence``: confident only once the plan answered feedback."""
    pass_no = _pass(stage)
    n = _start(stage, pass_no)
    confidence = 0.92 if stage.context.get("addressed_feedback") else 0.55
    verdict = "accept" if confidence >= CONFIDENT else "refine"
    outputs = {"verdict": verdict, "confidence": confidence, "reviewed_by": stage.ref_id}
    _record(stage, pass_no, n, "done", outputs=outputs)
    return TaskResult.success(outputs=outputs)


class Router(RetryableTask):
    """First verdict in: loops back to ``plan`` with feedback while the confidence is low, else
    succeeds. Waits (RUNNING, polled) for the test's go-ahead for the pass before deciding."""

    def get_timeout(self) -> timedelta:
        return timedelta(seconds=60)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(milliseconds=50)

    def execute(self, stage: StageExecution) -> TaskResult:
        pass_no = _pass(stage)
        if not _client.exists(f"{_ns}:test:route:{stage.execution.id}:{pass_no}"):
            return TaskResult.running()
        n = _start(stage, pass_no)
        confidence = float(stage.context["confidence"])
        if confidence < CONFIDENT:
            feedback = f"pass {pass_no}: confidence {confidence} is too low, tighten the numbers"
            _record(stage, pass_no, n, "done", decision="loop", feedback=feedback)
            return TaskResult.jump_to("plan", context={"feedback": feedback})
        _record(stage, pass_no, n, "done", decision="accept")
        return TaskResult.success(outputs={"routed": "accept"})


def publish(stage: StageExecution) -> TaskResult:
    """Records the approved result: the approval, its data and the findings it approved."""
    pass_no = _pass(stage)
    n = _start(stage, pass_no)
    result = {"approved": stage.context.get("approved"), "approval": stage.context.get("approval"),
              "findings": stage.context.get("findings")}
    _record(stage, pass_no, n, "done", result=result)
    return TaskResult.success(outputs={"published": True})


registry = TaskRegistry()
registry.register("planner", planner)
registry.register("researcher", researcher)
registry.register("synthesize", synthesize)
registry.register("reviewer", reviewer)
registry.register("router", Router)
registry.register("approval", ApprovalTask)
registry.register("publish", publish)
