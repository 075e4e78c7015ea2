"""Nothing is accepted that the engine does not execute: every stage or workflow setting of the
support matrix that is not executed yet is refused by every entry point that stores a workflow,
naming the stage and the field, with nothing written; a task result the engine cannot honour
fails the task with an error naming the directive instead of leaving its workflow waiting on
nothing; a message type no handler executes is refused at push. Values stabilize stores with
``json.dumps(default=str)`` (a datetime in context) are stored the same way, as their string."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

import pytest

from stabilize_redis import (
    Orchestrator,
    StageExecution,
    Task,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowValidationError,
    support,
)
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.queue.messages import MESSAGE_TYPES, Message, StartWaitingWorkflows
from stabilize_redis.support import DIRECTIVES
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named
from tests.unit.test_support_matrix import REFUSED_USES, message_of, plain_workflow

Target = tuple[str | None, str]

ENTRY_POINTS: dict[str, Callable[[Engine, Workflow], Any]] = {
    "client.submit": lambda eng, wf: eng.client.submit(wf),
    "store.store": lambda eng, wf: eng.store.store(wf),
    "Orchestrator.start": lambda eng, wf: Orchestrator(eng.queue, store=eng.store).start(wf),
}


def assert_nothing_written(eng: Engine, wf: Workflow) -> None:
    assert eng.client.backend.workflow_ids() == []
    assert not eng.store.exists(wf.id)
    assert eng.queue.size() == 0
    assert eng.store.events(wf.id) == []


@pytest.mark.parametrize("use", list(REFUSED_USES))
def test_each_setting_not_executed_yet_is_refused_by_every_entry_point_naming_stage_and_field(
        target: Target, use: str) -> None:
    eng = make_engine(target)
    refused = REFUSED_USES[use]
    assert refused.entry.needs is not None
    for entry, store in ENTRY_POINTS.items():
        wf = plain_workflow()
        refused.apply(wf)

        with pytest.raises(WorkflowValidationError) as info:
            store(eng, wf)

        message = str(info.value)
        assert message.startswith(refused.where) and refused.entry.needs.refusal in message, (entry, message)
        assert_nothing_written(eng, wf)


# -- task results ------------------------------------------------------------------------------


class Returns(Task):
    """Returns ``result`` and counts its executions."""

    def __init__(self, result: TaskResult) -> None:
        self.result = result
        self.count = 0
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.count += 1
        return self.result


class Records(Task):
    """Records the context it sees and succeeds with ``outputs``."""

    def __init__(self, outputs: dict[str, Any] | None = None) -> None:
        self.outputs = outputs or {}
        self.seen: list[dict[str, Any]] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        self.seen.append(dict(stage.context))
        return TaskResult.success(outputs=self.outputs)


@pytest.mark.parametrize("directive", [key for key, entry in DIRECTIVES.items() if entry.refused])
def test_a_result_the_engine_cannot_honour_fails_the_task_terminal_naming_the_directive(
        target: Target, directive: str) -> None:
    eng = make_engine(target)
    entry = DIRECTIVES[directive]
    assert entry.needs is not None
    route, after = Returns(entry.example), Records()
    eng.registry.register("route", route)
    eng.registry.register("after", after)
    wf = make_workflow(make_stage("route", "route"), make_stage("after", "after", requires={"route"}))

    result = eng.run(wf)

    assert result.status == WorkflowStatus.TERMINAL, "the workflow ends; it does not wait on nothing"
    stage = stage_named(result, "route")
    assert stage.status == WorkflowStatus.TERMINAL and stage.tasks[0].status == WorkflowStatus.TERMINAL
    details = stage.context["exception"]["details"]
    assert details["exception_type"] == "NotExecutedError" and not details["transient"]
    assert details["error"].startswith("stage 'route': task 'route task' result: ")
    assert support.result_refusal(entry.example) in details["error"]
    assert route.count == 1, "refused once, never retried"
    assert after.seen == [] and stage_named(result, "after").status == WorkflowStatus.NOT_STARTED
    assert eng.queue.size() == 0 and eng.queue.dlq_size() == 0



# -- messages ----------------------------------------------------------------------------------


def test_push_of_a_message_type_no_handler_executes_is_refused_and_nothing_is_enqueued(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # every built-in type has a handler now: StartWaitingWorkflows plays one that has none
    name = "StartWaitingWorkflows"
    unbuilt = support.Feature("an unbuilt feature", "an unbuilt feature is not executed by this engine yet")
    monkeypatch.setitem(support.MESSAGE_TYPE_ENTRIES, name, support.needs_all(unbuilt))
    monkeypatch.setattr(support, "_accepted_here", set())
    eng = make_engine(target)
    wf = make_workflow(make_stage("a"))
    eng.client.submit(wf)
    before = eng.queue.size()
    pushes: dict[str, Callable[[Message], Any]] = {
        "client.queue.push": eng.client.queue.push, "RedisQueue.push": eng.queue.push,
        "RedisQueue.push delayed": lambda m: eng.queue.push(m, delay=5)}
    for how, push in pushes.items():
        message = message_of(MESSAGE_TYPES[name])
        if hasattr(message, "execution_id"):
            message.execution_id = wf.id  # type: ignore[attr-defined]

        with pytest.raises(ValueError, match=rf"^{name}: .* no handler for {name} is registered"):
            push(message)

        assert eng.queue.size() == before, how
    assert eng.queue.dlq_size() == 0


def test_a_message_max_attempts_the_engine_would_not_honour_is_refused_at_push(target: Target) -> None:
    eng = make_engine(target)
    wf = make_workflow(make_stage("a"))
    eng.client.submit(wf)
    before = eng.queue.size()

    with pytest.raises(ValueError, match=r"^CancelWorkflow\.max_attempts: .*message_max_attempts"):
        eng.queue.push(message_of(MESSAGE_TYPES["CancelWorkflow"], max_attempts=3))

    assert eng.queue.size() == before


class WaitingCounter(Handler):
    """A user's handler for StartWaitingWorkflows (standing in for a type without a built-in
    handler): acks each message and records its pipeline config id."""

    message_type = StartWaitingWorkflows

    def __init__(self, eng: Engine) -> None:
        super().__init__(eng.processor.context)
        self.signals: list[str] = []

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartWaitingWorkflows)
        self.signals.append(message.pipeline_config_id)
        return self.backend.commit(Transition(message.workflow_id), message, delivery)


def test_a_type_whose_handler_is_registered_in_this_process_is_accepted_and_handled(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "_accepted_here", set())  # process-wide: undone after the test
    # every built-in type has a handler now: StartWaitingWorkflows plays one that has none
    unbuilt = support.Feature("an unbuilt feature", "an unbuilt feature is not executed by this engine yet")
    monkeypatch.setitem(support.MESSAGE_TYPE_ENTRIES, "StartWaitingWorkflows", support.needs_all(unbuilt))
    eng = make_engine(target)
    wf = make_workflow(make_stage("a", "ok"))
    eng.registry.register("ok", Records())
    signal = StartWaitingWorkflows(pipeline_config_id="approve")
    with pytest.raises(ValueError, match="no handler for StartWaitingWorkflows"):
        eng.queue.push(signal)

    handler = WaitingCounter(eng)
    eng.processor.replace_handler(handler)
    eng.start(wf)
    eng.queue.push(signal)
    eng.processor.process_all(timeout=20)

    assert handler.signals == ["approve"]
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    assert eng.queue.size() == 0 and eng.queue.dlq_size() == 0


# -- values stored like stabilize's json default=str -------------------------------------------

WHEN = datetime.datetime(2030, 1, 2, 3, 4, 5)


@pytest.mark.parametrize("entry", ["client.submit", "Orchestrator.start"])
def test_a_datetime_in_context_and_results_is_stored_as_its_string_as_stabilize_does(
        target: Target, entry: str) -> None:
    eng = make_engine(target)
    first = Records(outputs={"done_at": WHEN, "day": WHEN.date()})
    second = Records()
    eng.registry.register("first", first)
    eng.registry.register("second", second)
    wf = make_workflow(make_stage("first", "first", context={"not_before": WHEN}),
                       make_stage("second", "second", requires={"first"}))
    wf.context["deadline"] = WHEN

    ENTRY_POINTS[entry](eng, wf)
    eng.processor.process_all(timeout=20)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert first.seen[0]["not_before"] == "2030-01-02 03:04:05"
    assert second.seen[0]["done_at"] == "2030-01-02 03:04:05" and second.seen[0]["day"] == "2030-01-02"
    assert result.context["deadline"] == "2030-01-02 03:04:05"
    assert stage_named(result, "first").outputs == {"done_at": "2030-01-02 03:04:05", "day": "2030-01-02"}
    assert wf.context["deadline"] is WHEN, "the caller's workflow object is left as it was given"
