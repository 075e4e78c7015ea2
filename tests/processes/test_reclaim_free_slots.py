"""A dead worker's entry goes to a worker with a free handler slot, not to a busy one.

Two CLI workers with one handler thread each run the blocking stages ``a`` and ``b`` of one
workflow. The worker running ``b`` is killed with SIGKILL. The survivor is busy with ``a``, so it
must leave ``b``'s entry alone: claiming it would park it behind ``a`` while the survivor's
heartbeat keeps it from everyone else. A third, idle worker started later must re-run ``b``
while ``a`` is still blocked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.keys import CONSUMER_GROUP
from tests.processes import worker_pool
from tests.processes.reclaim_app import log_key, release_key

APP = "tests.processes.reclaim_app:registry"
VISIBILITY_S = 2.0
# A worker reclaims every half visibility timeout, on its heartbeat tick (a third of it), so at
# most ~1.33 s apart. Once b's entry has been idle this long the busy survivor has had its
# reclaim passes over it; were it to claim entries without a free slot it would own it by then.
STALE_S = 2 * VISIBILITY_S
RERUN_DEADLINE_S = 10.0  # the fixed worker re-runs b ~3 s after it starts

Record = tuple[str, int, str]  # (stage ref, pid, "start" | "done")


def _hold(ref: str) -> StageExecution:
    return StageExecution(ref_id=ref, type="hold", name=ref, context={}, tasks=[
        TaskExecution.create(name=ref, implementing_class="hold", stage_start=True, stage_end=True)])


def _owner_and_idle_ms(entry: dict[str, bytes | str | int]) -> tuple[str, int]:
    """(consumer name, ms since last delivered or heartbeated) of an XPENDING entry."""
    consumer = entry["consumer"]
    return (consumer.decode() if isinstance(consumer, bytes) else str(consumer)), int(entry["time_since_delivered"])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_dead_workers_entry_is_rerun_by_an_idle_worker_while_the_busy_one_is_blocked(
        real_target: tuple[str, str]) -> None:
    url, ns = real_target
    client = connect(url, ns)
    raw = redis.Redis.from_url(url)
    wf = Workflow.create(application="reclaim-test", name="two-holds", stages=[_hold("a"), _hold("b")])
    ready = client.backend.keys.for_workflow(wf.id).ready

    def records() -> list[Record]:
        return [(r, p, e) for r, p, e, _ in (json.loads(x) for x in raw.lrange(log_key(ns, wf.id), 0, -1))]

    def ran(ref: str, event: str) -> list[int]:
        return [p for r, p, e in records() if r == ref and e == event]

    procs = [worker_pool.start_worker(url, ns, APP, visibility=VISIBILITY_S, concurrency=1) for _ in range(2)]
    try:
        client.submit(wf)
        wait_for(lambda: bool(ran("a", "start")) and bool(ran("b", "start")), 15, "a and b to start")
        [pid_a], [pid_b] = ran("a", "start"), ran("b", "start")
        assert pid_a != pid_b and {pid_a, pid_b} == {p.pid for p in procs}
        victim = next(p for p in procs if p.pid == pid_b)
        busy = next(p for p in procs if p.pid == pid_a)
        [entry] = [e for e in raw.xpending_range(ready, CONSUMER_GROUP, "-", "+", 10)
                   if f"-{pid_b}-" in _owner_and_idle_ms(e)[0]]
        victim.send_signal(signal.SIGKILL)
        victim.wait()

        def stale_or_taken() -> bool:
            [now] = raw.xpending_range(ready, CONSUMER_GROUP, entry["message_id"], entry["message_id"], 1)
            owner, idle_ms = _owner_and_idle_ms(now)
            return owner != _owner_and_idle_ms(entry)[0] or idle_ms >= STALE_S * 1000

        wait_for(stale_or_taken, 3 * STALE_S, "b's entry to go stale or be claimed")
        idle = worker_pool.start_worker(url, ns, APP, visibility=VISIBILITY_S, concurrency=1)
        procs.append(idle)

        wait_for(lambda: idle.pid in ran("b", "start"), RERUN_DEADLINE_S,
                 "the idle worker to re-run b (a busy worker holding b's entry keeps it from the idle one)")
        assert ran("a", "done") == [] and busy.poll() is None  # a never released, still blocked

        raw.set(release_key(ns, wf.id, "a"), 1)
        raw.set(release_key(ns, wf.id, "b"), 1)
        result = client.wait(wf.id, timeout=20)
    finally:
        for ref in ("a", "b"):
            raw.set(release_key(ns, wf.id, ref), 1)  # let blocked tasks end so workers stop at once
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    assert result.status == WorkflowStatus.SUCCEEDED
    assert ran("a", "start") == [pid_a] and ran("a", "done") == [pid_a]
    assert ran("b", "start") == [pid_b, idle.pid] and ran("b", "done") == [idle.pid]
    completed = [str(e["entity_id"]) for e in client.events(wf.id) if e["event_type"] == "stage.completed"]
    assert sorted(completed) == sorted(s.id for s in wf.stages)
