"""Mutual exclusion (WCP-17/39/40): stages of one workflow sharing a ``mutex_key`` never run at
the same time; a blocked stage waits in the mutex's queue and is started by the commit that ends
the holder (whatever its status), in the order the stages started waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus, is_cancellation_requested
from stabilize_redis.models.stage import SyntheticStageOwner
from stabilize_redis.queue.messages import CancelStage, StartStage
from stabilize_redis.validation import WorkflowValidationError
from tests.integration.interleave import interleave
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until
from tests.integration.test_interleavings import handle

Target = tuple[str | None, str]
S = WorkflowStatus


class Recorder(Task):
    """Records (ref id, start, end) of every execution. Context ``work_s``: how long the work
    takes; ``fail``: end TERMINAL; ``until_canceled``: run until the cancellation token fires;
    ``after_running``: first wait until that stage (a ref id) is RUNNING."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.intervals: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def runs(self, ref: str) -> int:
        return sum(1 for r, _, _ in self.intervals if r == ref)

    def order(self) -> list[str]:
        return [r for r, _, _ in sorted(self.intervals, key=lambda i: i[1])]

    def execute(self, stage: StageExecution) -> TaskResult:
        start = time.monotonic()
        if stage.context.get("after_running"):  # until that stage of the workflow is RUNNING
            ref, wid = stage.context["after_running"], stage.execution.id
            wait_until(lambda: stage_named(self.eng.store.retrieve(wid), ref).status == S.RUNNING, 10, ref)
        if stage.context.get("until_canceled"):
            deadline = start + 20
            while not is_cancellation_requested() and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            time.sleep(float(stage.context.get("work_s", 0.0)))
        with self._lock:
            self.intervals.append((stage.ref_id, start, time.monotonic()))
        if stage.context.get("fail"):
            return TaskResult.terminal("boom")
        return TaskResult.success(outputs={f"done_{stage.ref_id}": True})

    def overlaps(self, refs: set[str]) -> list[tuple[str, str]]:
        mine = sorted((i for i in self.intervals if i[0] in refs), key=lambda i: i[1])
        return [(a[0], b[0]) for a, b in zip(mine, mine[1:], strict=False) if b[1] < a[2]]


def engine(target: Target) -> tuple[Engine, Recorder]:
    eng = make_engine(target)
    rec = Recorder(eng)
    eng.registry.register("rec", rec)
    return eng, rec


@contextmanager
def threaded(eng: Engine, concurrency: int = 8) -> Iterator[None]:
    """A background processor with ``concurrency`` task threads: the branches run in parallel."""
    proc = eng.new_processor(concurrency=concurrency)
    proc.start()
    try:
        yield
    finally:
        proc.stop(timeout=10)


def waiting_order(eng: Engine, wf_id: str) -> list[str]:
    return [e["entity_id"] for e in eng.events(wf_id, "mutex.waiting")]


def test_stages_sharing_a_mutex_never_overlap_and_waiters_run_in_arrival_order(target: Target) -> None:
    eng, rec = engine(target)
    critical = [make_stage(r, "rec", ["root"], {"work_s": 0.05}, mutex_key="db") for r in ("a", "b", "c", "d")]
    wf = make_workflow(make_stage("root", "rec"), *critical, make_stage("free", "rec", ["root"], {"work_s": 0.05}),
                       make_stage("done", "rec", ["a", "b", "c", "d", "free"]))
    with threaded(eng):
        eng.client.submit(wf)
        done = eng.client.wait(wf.id, timeout=30)
    assert done.status == S.SUCCEEDED, [(s.ref_id, s.status.name) for s in done.stages]
    assert rec.overlaps({"a", "b", "c", "d"}) == []
    assert all(rec.runs(r) == 1 for r in ("a", "b", "c", "d", "free"))
    ids = {stage_named(done, r).id: r for r in "abcd"}
    waited = [ids[i] for i in waiting_order(eng, wf.id)]
    ran = [r for r in rec.order() if r in "abcd"]
    assert len(waited) == 3 and ran[1:] == waited, "the waiters run in the order they started waiting"
    stage_windows = sorted((stage_named(done, r).start_time or 0, stage_named(done, r).end_time or 0) for r in "abcd")
    assert all(b[0] >= a[1] for a, b in zip(stage_windows, stage_windows[1:], strict=False)), \
        "a holder's stage ends before the next one starts"


def test_a_holder_that_fails_hands_the_mutex_to_the_next_waiter(target: Target) -> None:
    eng, rec = engine(target)
    wf = make_workflow(make_stage("root", "rec"),
                       make_stage("a", "rec", ["root"], {"fail": True, "failPipeline": False}, mutex_key="db"),
                       make_stage("b", "rec", ["root"], mutex_key="db"))
    done = eng.run(wf)
    assert stage_named(done, "a").status == S.STOPPED
    assert stage_named(done, "b").status == S.SUCCEEDED and rec.runs("b") == 1
    assert done.status == S.SUCCEEDED
    assert rec.order() == ["root", "a", "b"]


def test_canceling_the_holder_hands_the_mutex_on_and_a_canceled_waiter_leaves_the_queue(target: Target) -> None:
    eng, rec = engine(target)
    # a takes the mutex first (root waits for it to run); b and c then wait, in either order.
    wf = make_workflow(make_stage("a", "rec", context={"until_canceled": True}, mutex_key="db"),
                       make_stage("root", "rec", context={"after_running": "a"}),
                       make_stage("b", "rec", ["root"], mutex_key="db"),
                       make_stage("c", "rec", ["root"], mutex_key="db"))
    with threaded(eng):
        eng.client.submit(wf)
        wait_until(lambda: len(waiting_order(eng, wf.id)) == 2, 10, "two stages waiting for the mutex")
        holder = "a"
        first_waiter, last_waiter = (next(r for r in "bc" if stage_named(wf, r).id == i)
                                     for i in waiting_order(eng, wf.id))
        for ref in (first_waiter, holder):  # the first waiter leaves, then the holder is canceled
            eng.queue.push(CancelStage(execution_id=wf.id, stage_id=stage_named(wf, ref).id))
            # one at a time: the holder's cancel landing first would hand the waiter the mutex
            wait_until(lambda r=ref: stage_named(eng.store.retrieve(wf.id), r).status == S.CANCELED, 10, f"{ref} canceled")
        done = eng.client.wait(wf.id, timeout=30)
    assert done.status.is_complete
    assert stage_named(done, holder).status == S.CANCELED
    assert stage_named(done, first_waiter).status == S.CANCELED and rec.runs(first_waiter) == 0
    assert stage_named(done, last_waiter).status == S.SUCCEEDED and rec.runs(last_waiter) == 1


def test_racing_starts_cannot_both_take_the_mutex(target: Target) -> None:
    eng, rec = engine(target)
    wf = make_workflow(make_stage("a", "rec", mutex_key="db"), make_stage("b", "rec", mutex_key="db"))
    eng.client.submit(wf)  # both initial stages are sent a StartStage (they start only there)
    start_a, start_b = (StartStage(execution_id=wf.id, stage_id=stage_named(wf, r).id) for r in "ab")

    result = interleave(eng.store.backend, handle(eng, start_a), handle(eng, start_b))

    assert result.conflicts == 1, "both starts read the free mutex; the second commit must conflict"
    now = eng.store.retrieve(wf.id)
    assert sorted(stage_named(now, r).status.name for r in "ab") == ["NOT_STARTED", "RUNNING"]
    eng.processor.process_all(timeout=10)
    done = eng.store.retrieve(wf.id)
    assert done.status == S.SUCCEEDED and rec.runs("a") == rec.runs("b") == 1
    assert rec.overlaps({"a", "b"}) == []


def test_a_jump_that_resets_the_holder_hands_the_mutex_to_the_waiter(target: Target) -> None:
    eng, rec = engine(target)
    jumped: list[str] = []

    def loop_once(stage: StageExecution) -> TaskResult:
        if not jumped:
            jumped.append(stage.ref_id)
            return TaskResult.jump_to("a")
        return TaskResult.success()

    eng.registry.register("loop", loop_once)
    # a holds the mutex until its second task jumps back to a: a is reset and b, waiting, runs.
    a = make_stage("a", "rec", ["root"], mutex_key="db")
    a.tasks[0].stage_end = False
    a.tasks.append(type(a.tasks[0]).create(name="loop", implementing_class="loop", stage_end=True))
    wf = make_workflow(make_stage("root", "rec"), a, make_stage("b", "rec", ["root"], mutex_key="db"))
    done = eng.run(wf)
    assert done.status == S.SUCCEEDED, [(s.ref_id, s.status.name) for s in done.stages]
    assert rec.runs("a") == 2 and rec.runs("b") == 1
    assert rec.overlaps({"a", "b"}) == []


@pytest.mark.parametrize("field", ["mutex_key", "deferred_choice_group"])
def test_an_exclusion_on_a_synthetic_stage_is_refused_at_submit(target: Target, field: str) -> None:
    eng, _ = engine(target)
    parent = make_stage("parent", "rec")
    child = make_stage("child", "rec")
    setattr(child, field, "x")
    child.parent_stage_id = parent.id
    child.synthetic_stage_owner = SyntheticStageOwner.STAGE_BEFORE
    with pytest.raises(WorkflowValidationError, match=f"stage 'child': {field}: .*synthetic stage"):
        eng.client.submit(make_workflow(parent, child))
