"""Concurrency limits per pipeline_config_id (is_limit_concurrent, max_concurrent_executions,
keep_waiting_pipelines, StartWaitingWorkflows), end to end on real Redis and the embedded default.

What a user depends on: never more than the limit of one config's workflows run at once; a
workflow over the limit is BUFFERED and starts, in arrival order, when a running one ends (in any
status); without keep_waiting_pipelines it is CANCELED with the reason; a waiting workflow that
is canceled leaves the queue and never takes a slot; other configs and unlimited workflows are
not held up; StartWaitingWorkflows with purge_queue refuses the waiting ones.
"""

from __future__ import annotations

import threading

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.decisions.concurrency import LimitState
from stabilize_redis.keys import LIMIT_STATE_FIELD
from stabilize_redis.queue.messages import StartWaitingWorkflows
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]
_S = WorkflowStatus


class Gate(Task):
    """RUNNING (polled) until its workflow's id is in ``open``; then succeeds, or fails when the
    stage's context says ``fail``. Tracks how many gates of each config run at once."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.running: dict[str, set[str]] = {}
        self.peak: dict[str, int] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        wid, cfg = stage.execution.id, str(stage.context.get("cfg"))
        with self._lock:
            now = self.running.setdefault(cfg, set())
            if wid not in now:
                now.add(wid)
                self.order.append(wid)
            self.peak[cfg] = max(self.peak.get(cfg, 0), len(now))
            if wid not in self.open:
                return TaskResult.running()
            now.discard(wid)
        return TaskResult.terminal("asked to fail") if stage.context.get("fail") else TaskResult.success()


def engine(target: Target) -> tuple[Engine, Gate]:
    eng = make_engine(target)
    gate = Gate()
    eng.registry.register("gate", gate)
    return eng, gate


def limited(cfg: str, maximum: int, keep_waiting: bool = True, fail: bool = False) -> Workflow:
    wf = make_workflow(make_stage("work", "gate", context={"cfg": cfg, "fail": fail}))
    wf.pipeline_config_id, wf.is_limit_concurrent = cfg, True
    wf.max_concurrent_executions, wf.keep_waiting_pipelines = maximum, keep_waiting
    return wf


def status(eng: Engine, wf: Workflow) -> WorkflowStatus:
    return eng.store.retrieve(wf.id).status


def settle(eng: Engine, predicate: object, what: str) -> None:
    wait_until(lambda: (eng.processor.process_one(), predicate())[1], 20, what)  # type: ignore[operator]


def arrive(eng: Engine, *flows: Workflow) -> None:
    """Start ``flows`` one after the other, each once the one before has its answer (RUNNING or
    BUFFERED), so they reach their limit in this order."""
    for wf in flows:
        eng.start(wf)
        settle(eng, lambda wf=wf: status(eng, wf) in (_S.RUNNING, _S.BUFFERED), f"{wf.id} to be answered")


def limit_state(eng: Engine, cfg: str) -> LimitState:
    from stabilize_redis.decisions.concurrency import limit_id

    key = eng.client.backend.part(limit_id(cfg)).limit(cfg)
    return LimitState.decode(eng.client.backend.client.hget(key, LIMIT_STATE_FIELD))


def test_over_the_limit_workflows_wait_buffered_and_start_in_arrival_order(target: Target) -> None:
    eng, gate = engine(target)
    flows = [limited("deploy", 2, fail=(i == 0)) for i in range(5)]
    arrive(eng, *flows)
    assert [status(eng, w) for w in flows] == [_S.RUNNING] * 2 + [_S.BUFFERED] * 3
    for i, wf in enumerate(flows):  # end them one by one: each end lets the next waiter in
        gate.open.add(wf.id)
        settle(eng, lambda wf=wf: status(eng, wf).is_complete, f"workflow {i} to end")
        if i + 2 < len(flows):
            settle(eng, lambda i=i: status(eng, flows[i + 2]) == _S.RUNNING, f"workflow {i + 2} to start")
    eng.processor.process_all(timeout=20)
    assert [status(eng, w) for w in flows] == [_S.TERMINAL] + [_S.SUCCEEDED] * 4  # a failed one frees its slot too
    assert gate.peak["deploy"] == 2
    assert gate.order == [w.id for w in flows]
    assert len(eng.events(flows[2].id, "workflow.buffered")) == 1
    assert limit_state(eng, "deploy") == LimitState(2, [], [])  # no slot leaked


def test_without_keep_waiting_a_workflow_over_the_limit_is_canceled_with_the_reason(target: Target) -> None:
    eng, gate = engine(target)
    first, second = limited("batch", 1, keep_waiting=False), limited("batch", 1, keep_waiting=False)
    arrive(eng, first)
    eng.start(second)
    settle(eng, lambda: status(eng, second) == _S.CANCELED, "the second to be canceled")
    done = eng.store.retrieve(second.id)
    assert done.cancellation_reason == ("over the concurrency limit of 1 for pipeline config 'batch' "
                                        "(keep_waiting_pipelines is off)")
    assert stage_named(done, "work").status == _S.CANCELED
    gate.open.add(first.id)
    eng.processor.process_all(timeout=20)
    assert status(eng, first) == _S.SUCCEEDED
    assert limit_state(eng, "batch").holders == []


def test_a_canceled_waiting_workflow_leaves_the_queue_and_other_configs_run_freely(target: Target) -> None:
    eng, gate = engine(target)
    holder, waiting, after = limited("etl", 1), limited("etl", 1), limited("etl", 1)
    other, free = limited("reports", 1), make_workflow(make_stage("work", "gate", context={"cfg": "none"}))
    arrive(eng, holder, waiting, after, other, free)
    assert [status(eng, w) for w in (holder, waiting, after, other, free)] == [
        _S.RUNNING, _S.BUFFERED, _S.BUFFERED, _S.RUNNING, _S.RUNNING]
    eng.client.cancel(waiting.id, user="ops", reason="not needed")
    settle(eng, lambda: status(eng, waiting) == _S.CANCELED and limit_state(eng, "etl").waiters == [after.id],
           "the waiting one to be canceled and to leave the line")
    gate.open.update({holder.id, after.id, other.id, free.id})
    eng.processor.process_all(timeout=20)
    assert [status(eng, w) for w in (holder, after, other, free)] == [_S.SUCCEEDED] * 4
    assert waiting.id not in gate.order  # it never ran
    assert limit_state(eng, "etl") == LimitState(1, [], [])


def test_start_waiting_workflows_with_purge_queue_refuses_the_waiting_ones(target: Target) -> None:
    eng, gate = engine(target)
    holder, waiting = limited("ml", 1), limited("ml", 1)
    arrive(eng, holder, waiting)
    assert status(eng, waiting) == _S.BUFFERED
    eng.queue.push(StartWaitingWorkflows(pipeline_config_id="ml", purge_queue=True))
    settle(eng, lambda: status(eng, waiting) == _S.CANCELED, "the waiting one to be purged")
    gate.open.add(holder.id)
    eng.processor.process_all(timeout=20)
    assert status(eng, holder) == _S.SUCCEEDED


def test_a_slot_granted_to_a_workflow_that_left_redis_goes_back_to_the_limit(target: Target) -> None:
    eng, gate = engine(target)
    holder, gone, last = limited("ops", 1), limited("ops", 1), limited("ops", 1)
    arrive(eng, holder, gone, last)
    eng.store.delete(gone.id)  # deleted while BUFFERED: the slot it is granted finds nobody
    gate.open.update({holder.id, last.id})
    eng.processor.process_all(timeout=20)
    assert status(eng, last) == _S.SUCCEEDED
    assert limit_state(eng, "ops") == LimitState(1, [], [])
    assert eng.queue.dlq_size() == 0
