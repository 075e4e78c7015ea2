"""Delivering any message twice is harmless.

Every delivery is dispatched a second time right after the first (same message id: the commit
must answer DUPLICATE), and a fresh copy (new message id) of each StartWorkflow, StartStage,
StartTask, CompleteTask, CompleteStage, CompleteWorkflow and SkipStage is pushed and processed
later (the status guards must make it a no-op). The engine fuses StartTask into StartStage and
CompleteTask/CompleteStage into RunTask on the common path, so after such a fused transition the
test also pushes the StartTask/CompleteTask/CompleteStage message stabilize would have sent for
it. At the end every transition appears exactly once in the event log."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis import SkippableTask, StageExecution, Task, TaskExecution, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.persistence.redis_store import RedisWorkflowStore
from stabilize_redis.queue.dispatch import Dispatcher
from stabilize_redis.queue.messages import (
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    Message,
    RunTask,
    SkipStage,
    StartStage,
    StartTask,
    StartWorkflow,
    decode_message,
)
from stabilize_redis.queue.redis_queue import RedisQueue
from tests.integration.support import (
    Engine,
    count_by_entity,
    make_engine,
    make_stage,
    make_workflow,
    stage_named,
    wait_until,
)

Target = tuple[str | None, str]

FRESH_COPY_TYPES = (StartWorkflow, StartStage, StartTask, CompleteTask, CompleteStage, CompleteWorkflow, SkipStage)


@dataclass
class Dispatched:
    kind: str
    message_id: str
    first: str
    second: str


@dataclass
class TwiceDispatcher:
    """Wraps the processor's dispatcher: each delivery is dispatched twice; fresh copies are
    pushed for the processor to deliver later (copies are not copied again)."""

    inner: Dispatcher
    queue: RedisQueue
    store: RedisWorkflowStore
    fresh_copies: bool = True
    log: list[Dispatched] = field(default_factory=list)
    copies: set[str] = field(default_factory=set)
    copied_kinds: set[str] = field(default_factory=set)

    def dispatch(self, delivery: Delivery) -> str:
        message = decode_message(delivery.payload)
        first = self.inner.dispatch(delivery)
        second = self.inner.dispatch(delivery)
        self.log.append(Dispatched(type(message).__name__, delivery.message_id, first, second))
        if self.fresh_copies and delivery.message_id not in self.copies:
            if isinstance(message, FRESH_COPY_TYPES):
                copy = decode_message(delivery.payload)
                copy.message_id = None
                self._push(copy)
            self._push_classic_follow_ups(message)
        return first

    def _push(self, message: Message) -> None:
        self.queue.push(message)
        assert message.message_id is not None
        self.copies.add(message.message_id)
        self.copied_kinds.add(type(message).__name__)

    def _push_classic_follow_ups(self, message: Message) -> None:
        """The StartTask / CompleteTask / CompleteStage / CompleteWorkflow of a transition the
        engine fused."""
        if not isinstance(message, StartStage | RunTask):
            return
        wf = self.store.retrieve(message.execution_id)
        stage = wf.stage_by_id(message.stage_id)
        kw: dict[str, Any] = {"execution_id": wf.id, "execution_type": message.execution_type,
                              "stage_id": stage.id}
        if isinstance(message, StartStage):
            if stage.tasks and stage.tasks[0].status != WorkflowStatus.NOT_STARTED:
                self._push(StartTask(task_id=stage.tasks[0].id, **kw))
            return
        task: TaskExecution = next(t for t in stage.tasks if t.id == message.task_id)
        if task.status.is_complete:
            self._push(CompleteTask(task_id=task.id, status=task.status, **kw))
        if stage.status.is_complete:
            self._push(CompleteStage(**kw))
        if wf.status.is_complete:
            self._push(CompleteWorkflow(execution_id=wf.id, execution_type=message.execution_type))


class CountingTask(Task):
    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        with self._lock:
            self.runs[stage.ref_id] = n = self.runs.get(stage.ref_id, 0) + 1
        if stage.context.get("poll_once") and n == 1:
            return TaskResult.running()
        return TaskResult.success(outputs={f"{stage.ref_id}_done": True})


class DisabledOptional(SkippableTask):
    def __init__(self) -> None:
        self.ran = 0

    def is_enabled(self, stage: StageExecution) -> bool:
        return False

    def do_execute(self, stage: StageExecution) -> TaskResult:
        self.ran += 1
        return TaskResult.success()


def redelivery_workflow() -> Any:
    #  a -> b (disabled optional task, then a task polled once) -> join
    #  a -> gate (no tasks)                                     -> join
    #  skipped (stageEnabled False)                             -> join
    b = make_stage("b", None, requires={"a"}, context={"poll_once": True})
    b.tasks = [
        TaskExecution.create(name="optional", implementing_class="optional", stage_start=True),
        TaskExecution.create(name="work", implementing_class="count", stage_end=True),
    ]
    return make_workflow(
        make_stage("a", "count"),
        b,
        make_stage("gate", None, requires={"a"}),
        make_stage("skipped", "count", context={"stageEnabled": False}),
        make_stage("join", "count", requires={"b", "gate", "skipped"}),
    )


def run_step_by_step(eng: Engine, twice: TwiceDispatcher, wf: Any, max_steps: int = 1000) -> None:
    eng.processor.dispatcher = twice  # type: ignore[assignment]
    eng.start(wf)
    steps = 0
    while eng.queue.size() > 0:
        assert steps < max_steps, f"still {eng.queue.size()} messages after {steps} steps"
        eng.processor.process_one()
        steps += 1


def setup(target: Target, fresh_copies: bool = True) -> tuple[Engine, CountingTask, DisabledOptional, TwiceDispatcher]:
    eng = make_engine(target)
    task, optional = CountingTask(), DisabledOptional()
    eng.registry.register("count", task)
    eng.registry.register("optional", optional)
    twice = TwiceDispatcher(eng.processor.dispatcher, eng.queue, eng.store, fresh_copies=fresh_copies)
    return eng, task, optional, twice


def test_every_message_delivered_twice_and_copied_gives_each_transition_once(target: Target) -> None:
    eng, task, optional, twice = setup(target)
    wf = redelivery_workflow()

    run_step_by_step(eng, twice, wf)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    assert {s.ref_id: s.status for s in result.stages} == {
        "a": WorkflowStatus.SUCCEEDED, "b": WorkflowStatus.SUCCEEDED, "gate": WorkflowStatus.SUCCEEDED,
        "skipped": WorkflowStatus.SKIPPED, "join": WorkflowStatus.SUCCEEDED}
    b = stage_named(result, "b")
    assert [t.status for t in b.tasks] == [WorkflowStatus.SKIPPED, WorkflowStatus.SUCCEEDED]
    assert optional.ran == 0
    # Every message type was delivered twice, and a fresh copy of each type was processed.
    kinds = {d.kind for d in twice.log}
    assert {"StartWorkflow", "StartStage", "StartTask", "RunTask", "CompleteTask", "CompleteStage",
            "CompleteWorkflow", "SkipStage"} <= kinds
    assert {t.__name__ for t in FRESH_COPY_TYPES} <= twice.copied_kinds
    assert twice.copies <= {d.message_id for d in twice.log}

    events = eng.events(wf.id)
    ran = [s for s in result.stages if s.ref_id != "skipped"]
    assert count_by_entity(events, "stage.started") == {s.id: 1 for s in ran}
    assert count_by_entity(events, "stage.completed") == {s.id: 1 for s in ran}
    assert count_by_entity(events, "stage.skipped") == {stage_named(result, "skipped").id: 1}
    # a disabled SkippableTask is begun like any task and skipped by RunTask (its is_enabled is
    # user code, which decisions never call): it is started once and ends SKIPPED, never run
    started_tasks = [t for s in ran for t in s.tasks if t.status in (WorkflowStatus.SUCCEEDED, WorkflowStatus.SKIPPED)]
    assert count_by_entity(events, "task.started") == {t.id: 1 for t in started_tasks}
    finished_tasks = [t for s in ran for t in s.tasks]
    assert count_by_entity(events, "task.completed") == {t.id: 1 for t in finished_tasks}
    assert count_by_entity(events, "workflow.started") == {wf.id: 1}
    assert count_by_entity(events, "workflow.completed") == {wf.id: 1}
    assert not [e for e in events if e["event_type"].endswith((".failed", ".canceled"))]
    assert stage_named(result, "join").context["b_done"] is True
    assert eng.queue.counts()["dead"] == 0


def test_redelivery_of_the_same_message_id_is_recognised_as_duplicate(target: Target) -> None:
    eng, _, _, twice = setup(target, fresh_copies=False)
    wf = redelivery_workflow()

    run_step_by_step(eng, twice, wf)

    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    assert all(d.first == "ok" for d in twice.log), [d for d in twice.log if d.first != "ok"]
    assert all(d.second == "duplicate" for d in twice.log), [d for d in twice.log if d.second != "duplicate"]
    events = eng.events(wf.id)
    assert count_by_entity(events, "workflow.completed") == {wf.id: 1}
    assert max(count_by_entity(events, "stage.started").values()) == 1


def test_redelivered_run_task_does_not_run_task_code_again(target: Target) -> None:
    """A RunTask whose result is already committed is a duplicate: redelivering it (same id)
    must not execute the user's task a second time (stabilize checks its dedup record before
    calling the handler)."""
    eng, task, _, twice = setup(target, fresh_copies=False)
    wf = redelivery_workflow()

    run_step_by_step(eng, twice, wf)

    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    run_tasks = [d for d in twice.log if d.kind == RunTask.__name__]
    assert run_tasks and all(d.second == "duplicate" for d in run_tasks)
    # b's task is polled once (running), then succeeds: two executions; the others one each.
    assert task.runs == {"a": 1, "b": 2, "join": 1}


def test_fresh_copy_of_a_skipped_task_completion_is_a_no_op(target: Target) -> None:
    """A disabled SkippableTask is begun and skipped by RunTask; a CompleteTask(SKIPPED) for it
    pushed afterwards (a copy, or an older engine's message), arriving while the stage's next
    task still runs, must not complete the skipped task again nor start the next one twice."""
    eng, task, optional, _ = setup(target)
    b = make_stage("b", None, context={"poll_once": True})
    b.tasks = [
        TaskExecution.create(name="optional", implementing_class="optional", stage_start=True),
        TaskExecution.create(name="work", implementing_class="count", stage_end=True),
    ]
    wf = make_workflow(b)
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() is not None and task.runs.get("b", 0) >= 1, 10,
               "the next task to have run once (it polls once)")
    skipped = stage_named(eng.store.retrieve(wf.id), "b").tasks[0]
    assert skipped.status == WorkflowStatus.SKIPPED
    eng.queue.push(CompleteTask(execution_id=wf.id, stage_id=b.id, task_id=skipped.id, status=WorkflowStatus.SKIPPED))
    eng.processor.process_all(timeout=20)

    result = eng.store.retrieve(wf.id)
    assert result.status == WorkflowStatus.SUCCEEDED
    skipped_task, work = stage_named(result, "b").tasks
    assert skipped_task.status == WorkflowStatus.SKIPPED and optional.ran == 0
    events = eng.events(wf.id)
    assert count_by_entity(events, "task.completed") == {skipped_task.id: 1, work.id: 1}
    assert count_by_entity(events, "task.started") == {skipped_task.id: 1, work.id: 1}
    assert task.runs == {"b": 2}


def test_submitting_the_same_workflow_twice_runs_it_once(target: Target) -> None:
    eng, task, _, _ = setup(target)
    wf = make_workflow(make_stage("a", "count"), make_stage("b", "count", requires={"a"}))

    eng.client.submit(wf)
    eng.client.submit(wf)
    eng.processor.process_all(timeout=10)

    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
    assert task.runs == {"a": 1, "b": 1}
    events = eng.events(wf.id)
    assert count_by_entity(events, "workflow.created") == {wf.id: 1}
    assert count_by_entity(events, "workflow.started") == {wf.id: 1}
    assert count_by_entity(events, "workflow.completed") == {wf.id: 1}
    assert eng.client.backend.workflow_ids() == [wf.id]
