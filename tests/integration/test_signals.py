"""Signals (WCP-23/24), suspend and approvals, end to end on real Redis and the embedded default.

What a user depends on: a suspended stage resumes once with the signal's data; a persistent
signal sent before the stage suspends is neither lost nor applied twice; a transient early one
is discarded and the event log says so; the workflow shows SUSPENDED while it only waits on
signals; the approval gate's approve / reject paths; the buffer's bound.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.errors import StageError, WorkflowNotFoundError
from stabilize_redis.handlers.signal_stage import SIGNAL_BUFFER_MAX_ENV, buffered_signals
from stabilize_redis.hitl import ApprovalTask, approve, reject
from stabilize_redis.queue.messages import SignalStage
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named
from workers.cli import main as cli_main

Target = tuple[str | None, str]
_S = WorkflowStatus


class WaitForSignal(Task):
    """Suspends until a signal is in its context, then succeeds with it; counts executions and
    records each signal it saw, per stage ref id."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.seen: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] = self.runs.get(stage.ref_id, 0) + 1
        name = stage.context.get("_signal_name")
        if name is None:
            return TaskResult.suspend(context={"waiting_for": "signal"})
        with self._lock:
            self.seen.setdefault(stage.ref_id, []).append((name, stage.context.get("_signal_data")))
        return TaskResult.success(outputs={"got": name, "data": stage.context.get("_signal_data")})


class Ok(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={f"{stage.ref_id}_done": True})


def engine(target: Target, **tasks: Task) -> Engine:
    eng = make_engine(target)
    for name, task in tasks.items():
        eng.registry.register(name, task)
    return eng


def event_types(eng: Engine, wf_id: str) -> list[str]:
    return [e["event_type"] for e in eng.events(wf_id)]


def two_stages() -> Workflow:
    """first -> gate: the gate is NOT_STARTED until the first stage has run."""
    return make_workflow(make_stage("first", "ok"), make_stage("gate", "wait", ["first"]))


def test_a_suspended_stage_resumes_once_with_the_signal_data(target: Target) -> None:
    waiting = WaitForSignal()
    eng = engine(target, wait=waiting)
    wf = make_workflow(make_stage("gate", "wait"))

    suspended = eng.run(wf)
    gate = stage_named(suspended, "gate")
    assert gate.status == _S.SUSPENDED and gate.tasks[0].status == _S.SUSPENDED
    assert gate.context["waiting_for"] == "signal"
    assert suspended.status == _S.SUSPENDED

    assert eng.client.signal(wf.id, "gate", "go", {"ticket": 42}) == gate.id
    eng.processor.process_all(timeout=20)

    done = eng.store.retrieve(wf.id)
    assert done.status == _S.SUCCEEDED
    assert stage_named(done, "gate").outputs == {"got": "go", "data": {"ticket": 42}}
    assert waiting.runs == {"gate": 2} and waiting.seen == {"gate": [("go", {"ticket": 42})]}
    assert event_types(eng, wf.id).count("stage.signaled") == 1


def test_a_persistent_signal_sent_before_the_suspension_resumes_it_at_once_and_exactly_once(
        target: Target) -> None:
    waiting = WaitForSignal()
    eng = engine(target, wait=waiting, ok=Ok())
    wf = two_stages()
    eng.client.submit(wf)

    eng.client.signal(wf.id, "gate", "early", {"n": 1})  # the gate has not even started
    eng.processor.process_all(timeout=20)

    done = eng.store.retrieve(wf.id)
    assert done.status == _S.SUCCEEDED
    assert waiting.runs == {"gate": 2} and waiting.seen == {"gate": [("early", {"n": 1})]}
    gate_id = stage_named(done, "gate").id
    gate_events = [e for e in eng.events(wf.id) if e["entity_id"] == gate_id]
    kinds = [e["event_type"] for e in gate_events]
    assert "signal.buffered" in kinds and "stage.suspended" not in kinds  # resumed in the suspend commit
    assert [e["data"]["how"] for e in gate_events if e["event_type"] == "stage.signaled"] == ["consumed"]
    assert buffered_signals(eng.store.backend, wf.id, gate_id) == []


def test_a_transient_signal_sent_early_is_discarded_and_says_so(target: Target) -> None:
    waiting = WaitForSignal()
    eng = engine(target, wait=waiting, ok=Ok())
    wf = two_stages()
    eng.client.submit(wf)

    eng.client.signal(wf.id, "gate", "early", persistent=False)
    eng.processor.process_all(timeout=20)

    waits = eng.store.retrieve(wf.id)
    assert stage_named(waits, "gate").status == _S.SUSPENDED and waits.status == _S.SUSPENDED
    discarded = eng.events(wf.id, "signal.discarded")
    assert len(discarded) == 1 and discarded[0]["data"]["signal_name"] == "early"
    assert discarded[0]["data"]["stage_status"] in ("NOT_STARTED", "RUNNING")  # not suspended yet
    assert waiting.runs == {"gate": 1} and waiting.seen == {}

    eng.client.signal(wf.id, "gate", "now", persistent=False)  # a transient signal to a SUSPENDED stage works
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == _S.SUCCEEDED and waiting.seen == {"gate": [("now", {})]}


def test_a_signal_to_an_unknown_stage_is_dead_lettered_unknown_target(target: Target) -> None:
    eng = engine(target, wait=WaitForSignal())
    wf = make_workflow(make_stage("gate", "wait"))
    eng.run(wf)

    eng.queue.push(SignalStage(execution_id=wf.id, stage_id="no-such-stage", signal_name="go", persistent=True))
    eng.processor.process_all(timeout=20)

    dead = eng.store.backend.dead_letters()
    assert [d["reason"] for d in dead] == ["unknown_target"] and "no-such-stage" in dead[0]["error"]
    assert stage_named(eng.store.retrieve(wf.id), "gate").status == _S.SUSPENDED
    with pytest.raises(StageError):
        eng.client.signal(wf.id, "no-such-stage", "go")
    with pytest.raises(WorkflowNotFoundError):
        eng.client.signal("no-such-workflow", "gate", "go")


class Watcher(Task):
    """Returns running() once, then records the workflow's status as its store shows it."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.polls = 0
        self.seen: list[tuple[_S, _S]] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        self.polls += 1
        if self.polls == 1:
            return TaskResult.running()
        wf = self.eng.store.retrieve(stage.execution.id)
        self.seen.append((wf.status, stage_named(wf, "gate").status))
        return TaskResult.success()


def test_the_workflow_shows_suspended_only_while_every_active_stage_waits_on_a_signal(target: Target) -> None:
    waiting = WaitForSignal()
    eng = engine(target, wait=waiting)
    watcher = Watcher(eng)
    eng.registry.register("watch", watcher)

    both = make_workflow(make_stage("gate", "wait"), make_stage("other", "wait"))
    shown = eng.run(both)
    assert [s.status for s in shown.stages] == [_S.SUSPENDED, _S.SUSPENDED] and shown.status == _S.SUSPENDED
    assert eng.client.status(both.id) == "SUSPENDED"
    eng.client.signal(both.id, "gate", "go")
    eng.processor.process_all(timeout=20)
    # the resumed gate ran to its end; "other" still waits, so the workflow again waits only on it
    assert stage_named(eng.store.retrieve(both.id), "gate").status == _S.SUCCEEDED
    assert eng.store.retrieve(both.id).status == _S.SUSPENDED
    eng.client.signal(both.id, "other", "go")
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(both.id).status == _S.SUCCEEDED

    busy = make_workflow(make_stage("gate", "wait"), make_stage("busy", "watch"))
    eng.run(busy)
    assert watcher.seen == [(_S.RUNNING, _S.SUSPENDED)]  # a stage still ran: not SUSPENDED
    # the busy branch ended after the gate suspended: now only the gate is left, waiting
    assert eng.store.retrieve(busy.id).status == _S.SUSPENDED and eng.client.status(busy.id) == "SUSPENDED"


def approval_workflow(**context: Any) -> Workflow:
    return make_workflow(make_stage("gate", "approval", context=context), make_stage("after", "ok", ["gate"]))


def test_approve_succeeds_the_gate_with_the_approval_outputs(target: Target) -> None:
    eng = engine(target, approval=ApprovalTask(), ok=Ok())
    wf = approval_workflow()
    gate = stage_named(eng.run(wf), "gate")
    assert gate.status == _S.SUSPENDED

    approve(eng.queue, wf.id, gate.id, {"user": "alice"})
    eng.processor.process_all(timeout=20)

    done = eng.store.retrieve(wf.id)
    assert done.status == _S.SUCCEEDED
    assert stage_named(done, "gate").outputs == {"approved": True, "approval": {"user": "alice"}}
    assert stage_named(done, "after").context["approved"] is True


def test_reject_fails_the_gate_terminal_or_continues_when_asked(target: Target) -> None:
    eng = engine(target, approval=ApprovalTask(), ok=Ok())
    stops = approval_workflow()
    reject(eng.queue, stops.id, stops.stages[0].id, {"reason": "no"})  # before it even suspends
    failed = eng.run(stops)
    assert failed.status == _S.TERMINAL
    gate = stage_named(failed, "gate")
    assert gate.status == _S.TERMINAL and gate.context["error"] == "Approval rejected"
    assert gate.context["approval"] == {"reason": "no"} and stage_named(failed, "after").status == _S.NOT_STARTED

    goes_on = approval_workflow(approval_reject_continues=True)
    eng.run(goes_on)
    reject(eng.queue, goes_on.id, goes_on.stages[0].id, {"reason": "meh"})
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(goes_on.id)
    assert stage_named(done, "gate").status == _S.FAILED_CONTINUE
    assert stage_named(done, "gate").outputs == {"approved": False, "approval": {"reason": "meh"}}
    assert stage_named(done, "after").status == _S.SUCCEEDED


def test_approve_with_a_store_refuses_a_stage_of_another_workflow(target: Target) -> None:
    eng = engine(target, approval=ApprovalTask(), ok=Ok())
    a, b = approval_workflow(), approval_workflow()
    eng.run(a)
    eng.run(b)
    with pytest.raises(ValueError, match="refusing to signal across workflows"):
        approve(eng.queue, b.id, a.stages[0].id, store=eng.store)
    approve(eng.queue, b.id, a.stages[0].id)  # without a store the handler refuses it
    eng.processor.process_all(timeout=20)
    assert stage_named(eng.store.retrieve(a.id), "gate").status == _S.SUSPENDED
    assert [d["reason"] for d in eng.store.backend.dead_letters()] == ["unknown_target"]


def test_persistent_signals_beyond_the_buffer_bound_are_dead_lettered(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNAL_BUFFER_MAX_ENV, "3")
    eng = engine(target, wait=WaitForSignal(), ok=Ok())
    wf = two_stages()
    eng.client.submit(wf)
    for i in range(5):
        eng.client.signal(wf.id, "gate", f"s{i}")
    eng.processor.process_all(timeout=20)

    dead = eng.store.backend.dead_letters()
    assert [d["reason"] for d in dead] == ["signal_buffer_full"] * 2
    gate_id = stage_named(eng.store.retrieve(wf.id), "gate").id
    # s0 was consumed by the suspension; s1, s2 are still buffered; s3, s4 did not fit
    assert [s["signal_name"] for s in buffered_signals(eng.store.backend, wf.id, gate_id)] == ["s1", "s2"]


def test_a_signal_to_a_finished_stage_is_refused_and_buffers_nothing(target: Target) -> None:
    eng = engine(target, ok=Ok())
    wf = make_workflow(make_stage("only", "ok"))
    assert eng.run(wf).status == _S.SUCCEEDED
    for _ in range(3):
        eng.client.signal(wf.id, "only", "late")
    eng.processor.process_all(timeout=20)
    assert len(eng.events(wf.id, "signal.refused")) == 3
    assert buffered_signals(eng.store.backend, wf.id, wf.stages[0].id) == []
    assert eng.queue.dlq_size() == 0


def test_the_signal_command_resumes_a_stage_by_its_ref_id(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    url_args = ["--url", target[0]] if target[0] else []
    ns = target[1]
    waiting = WaitForSignal()
    eng = engine(target, wait=waiting)
    wf = make_workflow(make_stage("gate", "wait"))
    eng.run(wf)

    assert cli_main(["signal", *url_args, "--namespace", ns, wf.id, "gate", "go", "--data", '{"k": 1}']) == 0
    assert "signal 'go'" in capsys.readouterr().out
    assert cli_main(["signal", *url_args, "--namespace", ns, wf.id, "gate", "go", "--data", "[1]"]) == 2
    assert cli_main(["signal", *url_args, "--namespace", ns, wf.id, "nope", "go"]) == 1
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == _S.SUCCEEDED and waiting.seen == {"gate": [("go", {"k": 1})]}


def test_canceling_a_workflow_that_waits_on_a_signal_ends_it_canceled(target: Target) -> None:
    eng = engine(target, wait=WaitForSignal())
    wf = make_workflow(make_stage("gate", "wait"))
    assert eng.run(wf).status == _S.SUSPENDED
    eng.client.cancel(wf.id, user="ops", reason="no longer needed")
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == _S.CANCELED and stage_named(done, "gate").status == _S.CANCELED
    eng.client.signal(wf.id, "gate", "go")  # too late: refused, nothing resumes
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == _S.CANCELED and len(eng.events(wf.id, "signal.refused")) == 1
