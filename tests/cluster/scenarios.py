"""The integration suite's core cases as scenarios any engine runs: a chain, a fan-out/fan-in,
a failing stage, a jump (loop), a signal and a cancel. Each submits its workflows, waits for
the outcome (with a deadline) and checks what a user sees; the tasks count their runs so every
scenario can assert each ran exactly as often as it should."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from tests.integration.support import Engine, make_stage, make_workflow, stage_named, wait_until

_S = WorkflowStatus


class Recorder(Task):
    """Runs ``step(stage, n)`` on the n-th run of a (workflow, ref id); counts every run."""

    def __init__(self, step: Callable[[StageExecution, int], TaskResult]) -> None:
        self.step = step
        self.runs: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[(stage.execution.id, stage.ref_id)] += 1
            n = self.runs[(stage.execution.id, stage.ref_id)]
        return self.step(stage, n)


def _ok(stage: StageExecution, n: int) -> TaskResult:
    return TaskResult.success(outputs={f"{stage.ref_id}_out": stage.ref_id})


def _fail(stage: StageExecution, n: int) -> TaskResult:
    return TaskResult.terminal(f"{stage.ref_id} broke")


def _loop(stage: StageExecution, n: int) -> TaskResult:
    if n < 3:
        return TaskResult.jump_to("work", context={"pass": n})
    return TaskResult.success(outputs={"passes": n})


def _wait_signal(stage: StageExecution, n: int) -> TaskResult:
    if stage.context.get("_signal_name") is None:
        return TaskResult.suspend()
    return TaskResult.success(outputs={"signal": stage.context["_signal_name"], "data": stage.context["_signal_data"]})


def register(eng: Engine) -> dict[str, Recorder]:
    """Register the scenarios' tasks on ``eng``; the recorders by task name."""
    tasks = {"ok": Recorder(_ok), "fail": Recorder(_fail), "loop": Recorder(_loop), "signal": Recorder(_wait_signal)}
    for name, task in tasks.items():
        eng.registry.register(name, task)
    return tasks


def _finished(eng: Engine, wf_id: str) -> Workflow | None:
    wf = eng.store.retrieve(wf_id)
    return wf if wf.status.is_complete else None


def _done(eng: Engine, wf: Workflow, timeout: float = 30.0) -> Workflow:
    return wait_until(lambda: _finished(eng, wf.id), timeout, f"workflow {wf.id} to finish")


def chains(eng: Engine, tasks: dict[str, Recorder], count: int = 12) -> None:
    """``count`` chains a -> b -> c (spread over the partitions): each succeeds, each stage ran
    once, the last sees the first's output."""
    wfs = [make_workflow(make_stage("a", "ok"), make_stage("b", "ok", ["a"]), make_stage("c", "ok", ["b"]))
           for _ in range(count)]
    for wf in wfs:
        eng.client.submit(wf)
    for wf in wfs:
        done = _done(eng, wf)
        assert done.status == _S.SUCCEEDED, (wf.id, done.status)
        assert stage_named(done, "c").context.get("a_out") == "a"
        assert all(tasks["ok"].runs[(wf.id, ref)] == 1 for ref in "abc")


def fan_out_fan_in(eng: Engine, tasks: dict[str, Recorder], width: int = 6) -> None:
    """start -> ``width`` branches -> join: the join runs once, after all, seeing every output."""
    branches = [make_stage(f"b{i}", "ok", ["start"]) for i in range(width)]
    wf = make_workflow(make_stage("start", "ok"), *branches, make_stage("join", "ok", [b.ref_id for b in branches]))
    eng.client.submit(wf)
    done = _done(eng, wf)
    assert done.status == _S.SUCCEEDED
    join = stage_named(done, "join")
    assert all(join.context.get(f"b{i}_out") == f"b{i}" for i in range(width))
    assert tasks["ok"].runs[(wf.id, "join")] == 1
    assert all(tasks["ok"].runs[(wf.id, f"b{i}")] == 1 for i in range(width))


def failing_stage(eng: Engine, tasks: dict[str, Recorder]) -> None:
    """a -> broken -> never: the workflow is TERMINAL, ``never`` never ran."""
    wf = make_workflow(make_stage("a", "ok"), make_stage("broken", "fail", ["a"]), make_stage("never", "ok", ["broken"]))
    eng.client.submit(wf)
    done = _done(eng, wf)
    assert done.status == _S.TERMINAL
    assert stage_named(done, "broken").status == _S.TERMINAL
    assert tasks["ok"].runs[(wf.id, "never")] == 0


def jump_loop(eng: Engine, tasks: dict[str, Recorder]) -> None:
    """work -> review; review jumps back to work twice, then succeeds: work ran three times."""
    wf = make_workflow(make_stage("work", "ok"), make_stage("review", "loop", ["work"]))
    eng.client.submit(wf)
    done = _done(eng, wf)
    assert done.status == _S.SUCCEEDED
    assert tasks["ok"].runs[(wf.id, "work")] == 3 and tasks["loop"].runs[(wf.id, "review")] == 3
    assert stage_named(done, "review").outputs == {"passes": 3}


def signal(eng: Engine, tasks: dict[str, Recorder]) -> None:
    """A gate suspends; a signal resumes it once with the signal's data."""
    wf = make_workflow(make_stage("gate", "signal"), make_stage("after", "ok", ["gate"]))
    eng.client.submit(wf)
    wait_until(lambda: eng.client.status(wf.id) == "SUSPENDED", 30, "the gate to suspend")
    eng.client.signal(wf.id, "gate", "go", {"ticket": 7})
    done = _done(eng, wf)
    assert done.status == _S.SUCCEEDED
    assert stage_named(done, "gate").outputs == {"signal": "go", "data": {"ticket": 7}}
    assert tasks["signal"].runs[(wf.id, "gate")] == 2 and tasks["ok"].runs[(wf.id, "after")] == 1


def cancel(eng: Engine, tasks: dict[str, Recorder]) -> None:
    """A workflow waiting on a signal is canceled: CANCELED, its next stage never ran."""
    wf = make_workflow(make_stage("gate", "signal"), make_stage("after", "ok", ["gate"]))
    eng.client.submit(wf)
    wait_until(lambda: eng.client.status(wf.id) == "SUSPENDED", 30, "the gate to suspend")
    eng.client.cancel(wf.id, user="tester", reason="not needed")
    done = _done(eng, wf)
    assert done.status == _S.CANCELED
    assert tasks["ok"].runs[(wf.id, "after")] == 0


ALL: dict[str, Callable[[Engine, dict[str, Recorder]], Any]] = {
    "chains": chains, "fan_out_fan_in": fan_out_fan_in, "failing_stage": failing_stage,
    "jump_loop": jump_loop, "signal": signal, "cancel": cancel,
}
