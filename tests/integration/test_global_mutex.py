"""Global mutex (``mutex_scope="global"``), end to end on real Redis and the embedded default.

What a user depends on: stages of different workflows sharing a global mutex_key never run at
the same time and take turns in the order they asked; a holder that fails, or is canceled,
gives the lock back; a waiting stage that is canceled leaves the line; the task sees its fence,
which grows with every grant; a setting the engine cannot honour is refused naming it.
"""

from __future__ import annotations

import threading

import pytest

from stabilize_redis import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize_redis.decisions.global_mutex import GlobalMutexState
from stabilize_redis.keys import GLOBAL_MUTEX_STATE_FIELD, global_mutex_routing_id
from stabilize_redis.validation import WorkflowValidationError
from tests.integration.support import Engine, make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]
_S = WorkflowStatus


class Gate(Task):
    """RUNNING (polled) until its workflow is in ``open``; then succeeds (or fails when its
    context says so). Records how many run at once, their order, and the fence each saw."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.now: set[str] = set()
        self.peak = 0
        self.order: list[str] = []
        self.fences: dict[str, int] = {}
        self._lock = threading.Lock()

    def execute(self, stage: StageExecution) -> TaskResult:
        wid = stage.execution.id
        with self._lock:
            if wid not in self.now:
                self.now.add(wid)
                self.order.append(wid)
                self.fences[wid] = stage.context["_global_mutex"]["fence"]
            self.peak = max(self.peak, len(self.now))
            if wid not in self.open:
                return TaskResult.running()
            self.now.discard(wid)
        return TaskResult.terminal("asked to fail") if stage.context.get("fail") else TaskResult.success()


def engine(target: Target) -> tuple[Engine, Gate]:
    eng = make_engine(target)
    gate = Gate()
    eng.registry.register("gate", gate)
    eng.registry.register("plain", lambda stage: TaskResult.success())
    return eng, gate


def deploy(fail: bool = False) -> Workflow:
    return make_workflow(make_stage("build", "plain"),
                         make_stage("deploy", "gate", ["build"], context={"fail": fail}, mutex_key="prod",
                                    mutex_scope="global"))


def status(eng: Engine, wf: Workflow, ref: str = "deploy") -> WorkflowStatus:
    return stage_named(eng.store.retrieve(wf.id), ref).status


def settle(eng: Engine, predicate: object, what: str) -> None:
    wait_until(lambda: (eng.processor.process_one(), predicate())[1], 20, what)  # type: ignore[operator]


def lock(eng: Engine) -> GlobalMutexState:
    backend = eng.client.backend
    key = backend.part(global_mutex_routing_id("prod")).global_mutex("prod")
    return GlobalMutexState.decode(backend.client.hget(key, GLOBAL_MUTEX_STATE_FIELD))


def arrive(eng: Engine, gate: Gate, *flows: Workflow) -> None:
    """Start ``flows`` one after the other, each once its deploy stage runs or waits for the lock."""
    for wf in flows:
        eng.start(wf)
        settle(eng, lambda wf=wf: wf.id in gate.now or any(w.workflow_id == wf.id for w in lock(eng).waiters),
               f"{wf.id}'s deploy to run or wait")


def test_stages_of_different_workflows_sharing_a_global_mutex_never_overlap(target: Target) -> None:
    eng, gate = engine(target)
    flows = [deploy(fail=(i == 1)) for i in range(4)]
    arrive(eng, gate, *flows)
    assert [status(eng, w) for w in flows] == [_S.RUNNING] + [_S.NOT_STARTED] * 3
    assert [w.workflow_id for w in lock(eng).waiters] == [w.id for w in flows[1:]]
    for i, wf in enumerate(flows):
        gate.open.add(wf.id)
        settle(eng, lambda wf=wf: eng.store.retrieve(wf.id).status.is_complete, f"workflow {i} to end")
    eng.processor.process_all(timeout=20)  # the last release
    assert [eng.store.retrieve(w.id).status for w in flows] == [_S.SUCCEEDED, _S.TERMINAL, _S.SUCCEEDED,
                                                                _S.SUCCEEDED]  # a failed holder gives it back
    assert gate.peak == 1
    assert gate.order == [w.id for w in flows]
    assert [gate.fences[w.id] for w in flows] == [1, 2, 3, 4]
    assert lock(eng) == GlobalMutexState(None, 4, [], 4)
    assert all("_global_mutex" not in stage_named(eng.store.retrieve(w.id), "deploy").context for w in flows)


def test_a_canceled_holder_gives_the_lock_back_and_a_canceled_waiter_leaves_the_line(target: Target) -> None:
    eng, gate = engine(target)
    holder, waiting, last = deploy(), deploy(), deploy()
    arrive(eng, gate, holder, waiting, last)
    eng.client.cancel(waiting.id, user="ops", reason="not this one")
    settle(eng, lambda: [w.workflow_id for w in lock(eng).waiters] == [last.id], "the canceled waiter to leave")
    eng.client.cancel(holder.id, user="ops", reason="abort")
    settle(eng, lambda: last.id in gate.now, "the lock to pass to the last one")
    gate.open.add(last.id)
    eng.processor.process_all(timeout=20)
    assert [eng.store.retrieve(w.id).status for w in (holder, waiting, last)] == [_S.CANCELED, _S.CANCELED,
                                                                                  _S.SUCCEEDED]
    assert waiting.id not in gate.order
    assert lock(eng).holder is None and lock(eng).waiters == []


@pytest.mark.parametrize(("fields", "error"), [
    ({"mutex_scope": "global"}, "mutex_scope: mutex_scope is 'workflow' or 'global', and 'global' needs a mutex_key"),
    ({"mutex_scope": "everywhere", "mutex_key": "k"}, "mutex_scope: mutex_scope is 'workflow' or 'global'"),
])
def test_a_mutex_scope_the_engine_cannot_honour_is_refused_naming_it(target: Target, fields: dict[str, str],
                                                                   error: str) -> None:
    eng, _ = engine(target)
    wf = make_workflow(make_stage("deploy", "plain", **fields))
    with pytest.raises(WorkflowValidationError, match=f"stage 'deploy': {error}"):
        eng.client.submit(wf)


def test_a_grant_to_a_workflow_that_left_redis_goes_back_to_the_lock(target: Target) -> None:
    eng, gate = engine(target)
    holder, gone, last = deploy(), deploy(), deploy()
    arrive(eng, gate, holder, gone, last)
    eng.store.delete(gone.id)  # deleted while it waits in line: its grant finds nobody
    gate.open.update({holder.id, last.id})
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(last.id).status == _S.SUCCEEDED
    assert lock(eng).holder is None and lock(eng).waiters == [] and lock(eng).fence == 3
    assert eng.queue.dlq_size() == 0


def test_after_its_record_is_lost_the_recovered_holder_keeps_the_lock_and_fences_keep_growing(target: Target) -> None:
    from stabilize_redis.durability.recovery_plan import plan_from_hash
    from stabilize_redis.queue.messages import GlobalMutexAcquire

    eng, gate = engine(target)
    holder = deploy()
    arrive(eng, gate, holder)
    backend = eng.client.backend
    backend.client.delete(backend.part(global_mutex_routing_id("prod")).global_mutex("prod"))  # as a restore loses it
    raw = backend.client.hgetall(backend.part(holder.id).workflow(holder.id))
    for ask in (m for m in plan_from_hash(raw) if isinstance(m, GlobalMutexAcquire)):
        eng.queue.push(ask)  # what the recovery pass pushes
    settle(eng, lambda: lock(eng).holder is not None, "the holder to re-register")
    newcomer = deploy()
    arrive(eng, gate, newcomer)
    assert status(eng, newcomer) == _S.NOT_STARTED and holder.id in gate.now and newcomer.id not in gate.now
    assert stage_named(eng.store.retrieve(holder.id), "deploy").context["_global_mutex"]["fence"] == 2
    gate.open.update({holder.id, newcomer.id})
    eng.processor.process_all(timeout=20)
    assert [eng.store.retrieve(w.id).status for w in (holder, newcomer)] == [_S.SUCCEEDED, _S.SUCCEEDED]
    assert gate.peak == 1 and gate.fences[newcomer.id] == 3
