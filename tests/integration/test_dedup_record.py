"""The dedup record: every way the engine can hand a committed message back is a DUPLICATE, and
the record is bounded by the workflows Redis holds (it leaves with them).

A committed message's id is recorded with its workflow (``PartitionKeys.processed``). The copies
the engine can produce of a committed message - a zombie worker's late commit of the delivery it
still holds, a handler retry (a rescheduled copy promoted from the delayed set), a dead letter
replayed, an entry reclaimed from a worker presumed dead - are each delivered again here and must
change nothing and run no task code. Recovery and restore push *fresh* ids (their duplicates are
refused by the workflow's state and the recovery guard, see ``test_stalled_recovery``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.config import MemoryPolicy
from stabilize_redis.keys import CONSUMER_GROUP, ENTRY_ID_FIELD, ENTRY_PAYLOAD_FIELD
from stabilize_redis.queue.dispatch import Dispatcher
from stabilize_redis.queue.messages import RunTask, decode_message
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, wait_until

RealTarget = tuple[str, str]


@dataclass
class Recorder:
    """Wraps the processor's dispatcher and keeps every delivery it dispatched."""

    inner: Dispatcher
    seen: list[Delivery] = field(default_factory=list)

    def dispatch(self, delivery: Delivery) -> str:
        self.seen.append(delivery)
        return self.inner.dispatch(delivery)


class Counting(Task):
    def __init__(self) -> None:
        self.runs = 0

    def execute(self, stage: StageExecution) -> TaskResult:
        self.runs += 1
        return TaskResult.success(outputs={f"{stage.ref_id}_out": stage.ref_id})


def run_recorded(eng: Engine, stages: int = 3) -> tuple[Any, Recorder, Counting]:
    task = Counting()
    eng.registry.register("t", task)
    recorder = Recorder(eng.processor.dispatcher)
    eng.processor.dispatcher = recorder  # type: ignore[assignment]
    chain = [make_stage("s0")] + [make_stage(f"s{i}", requires={f"s{i - 1}"}) for i in range(1, stages)]
    wf = eng.run(make_workflow(*chain))
    eng.processor.dispatcher = recorder.inner
    assert wf.status == WorkflowStatus.SUCCEEDED
    return wf, recorder, task


def redeliver(eng: Engine, consumer: str = "late") -> list[str]:
    """Fetch everything on the ready streams as ``consumer`` and dispatch it: the outcomes."""
    backend = eng.queue.backend
    out = []
    while deliveries := backend.fetch(consumer, 100, None):
        out += [eng.processor.dispatcher.dispatch(d) for d in deliveries]
    return out


def state(eng: Engine, wf_id: str) -> tuple[int, int]:
    """The workflow's version and its number of events."""
    backend = eng.queue.backend
    ver = backend.client.hget(backend.part(wf_id).workflow(wf_id), "ver")
    return int(ver), len(backend.events(wf_id))


def test_committed_messages_are_recorded_with_their_workflow_not_in_the_partition_window(
        real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, _ = run_recorded(eng)
    backend = eng.queue.backend
    part = backend.part(wf.id)
    record = {m.decode() for m in backend.client.zrange(part.processed(wf.id), 0, -1)}
    assert record == {d.message_id for d in recorder.seen}
    assert sum(backend.client.zcard(p.done) for p in backend.keys.all_partitions()) == 0


def test_a_zombie_workers_late_commit_of_each_message_is_a_duplicate(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, task = run_recorded(eng)
    before = state(eng, wf.id)
    # The worker that held each delivery commits it again, late (its entry is long acked).
    outcomes = [eng.processor.dispatcher.dispatch(d) for d in recorder.seen]
    assert set(outcomes) == {"duplicate"}
    assert state(eng, wf.id) == before and task.runs == 3


def test_a_rescheduled_copy_promoted_from_the_delayed_set_is_a_duplicate(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, task = run_recorded(eng)
    before = state(eng, wf.id)
    backend = eng.queue.backend
    part = backend.part(wf.id)
    # What reschedule.lua leaves when a commit's reply was lost: the same id, due later.
    for d in recorder.seen:
        backend.client.hset(part.delayed_payloads, d.message_id, d.payload)
        backend.client.zadd(part.delayed, {d.message_id: 1})
    backend.promote()
    outcomes = redeliver(eng)
    assert len(outcomes) == len(recorder.seen) and set(outcomes) == {"duplicate"}
    assert state(eng, wf.id) == before and task.runs == 3


def test_a_replayed_dead_letter_of_a_processed_message_is_a_duplicate(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, task = run_recorded(eng)
    before = state(eng, wf.id)
    backend = eng.queue.backend
    part = backend.part(wf.id)
    run = next(d for d in recorder.seen if isinstance(decode_message(d.payload), RunTask))
    # A processed message that reached the dead-letter stream (a lost reply, then max attempts),
    # twice: a crash between a replay's enqueue and its drop leaves the letter to replay again.
    letters = [backend.client.xadd(part.dead, {ENTRY_ID_FIELD: run.message_id, ENTRY_PAYLOAD_FIELD: run.payload,
                                               "reason": "max_attempts", "attempts": 10, "error": "", "at": 0})
               for _ in range(2)]
    assert all(backend.replay_dead(part.index, letter.decode()) for letter in letters)
    assert redeliver(eng) == ["duplicate", "duplicate"]
    assert state(eng, wf.id) == before and task.runs == 3


def test_an_entry_reclaimed_from_a_presumed_dead_worker_is_a_duplicate(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, task = run_recorded(eng)
    before = state(eng, wf.id)
    backend = eng.queue.backend
    part = backend.part(wf.id)
    run = next(d for d in recorder.seen if isinstance(decode_message(d.payload), RunTask))
    backend.client.xadd(part.ready, {ENTRY_ID_FIELD: run.message_id, ENTRY_PAYLOAD_FIELD: run.payload})
    assert backend.fetch("stalled", 10, None)  # pending under a worker that stops answering
    reclaimed = backend.reclaim("live", min_idle_ms=0)
    assert [d.message_id for d in reclaimed] == [run.message_id]
    assert [eng.processor.dispatcher.dispatch(d) for d in reclaimed] == ["duplicate"]
    assert backend.client.xpending(part.ready, CONSUMER_GROUP)["pending"] == 0
    assert state(eng, wf.id) == before and task.runs == 3


def test_a_late_duplicate_for_a_deleted_workflow_is_dead_lettered_and_recreates_nothing(
        real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    wf, recorder, task = run_recorded(eng)
    backend = eng.queue.backend
    part = backend.part(wf.id)
    eng.store.delete(wf.id)  # as evict.lua does: hash, events and dedup record leave together
    assert backend.client.exists(part.workflow(wf.id), part.events(wf.id), part.processed(wf.id)) == 0
    run = next(d for d in recorder.seen if isinstance(decode_message(d.payload), RunTask))
    backend.client.xadd(part.ready, {ENTRY_ID_FIELD: run.message_id, ENTRY_PAYLOAD_FIELD: run.payload})
    assert redeliver(eng) == ["dead"]
    [letter] = backend.dead_letters()
    assert (letter["message_id"], letter["reason"]) == (run.message_id, "unknown_target")
    # Nothing of the workflow came back and its task did not run again.
    assert backend.client.exists(part.workflow(wf.id), part.events(wf.id), part.processed(wf.id)) == 0
    assert task.runs == 3


def test_dedup_record_stays_bounded_as_workflows_finish_and_are_deleted(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    eng.registry.register("t", Counting())
    backend = eng.queue.backend
    for _ in range(3):  # rounds: the record never holds more than the workflows present
        ids = [eng.run(make_workflow(make_stage("a"), make_stage("b", requires={"a"}))).id for _ in range(10)]
        records = [backend.part(w).processed(w) for w in ids]
        assert all(backend.client.zcard(r) >= 2 for r in records)
        for w in ids:
            eng.store.delete(w)
        assert backend.client.exists(*records) == 0
        assert sum(backend.client.zcard(p.done) for p in backend.keys.all_partitions()) == 0


def test_a_finished_workflow_expires_with_its_events_and_record_without_postgres(real_target: RealTarget) -> None:
    eng = make_engine(real_target)
    backend = eng.queue.backend
    backend.memory = MemoryPolicy(finished_ttl_s=0.2)
    wf, _, _ = run_recorded(eng)
    part = backend.part(wf.id)
    keys = [part.workflow(wf.id), part.events(wf.id), part.processed(wf.id)]
    assert all(0 < backend.client.pttl(k) <= 200 for k in keys)
    assert backend.client.zscore(part.expiring, wf.id) is not None
    wait_until(lambda: backend.client.exists(*keys) == 0, 5, "the finished workflow's keys to expire")
    backend.promote()  # the fetch path's promotion forgets it (its due time has passed)
    assert backend.client.zscore(part.expiring, wf.id) is None
    assert backend.client.zscore(part.workflows, wf.id) is None
