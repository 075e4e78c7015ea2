"""Joins released by upstreams that complete at the same moment start exactly once, with many
workers (threads in one process, and separate processes) on real Redis."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from stabilize_redis import (
    JoinType,
    QueueProcessor,
    RedisQueue,
    RedisWorkflowStore,
    Workflow,
    WorkflowStatus,
    connect,
)
from tests.integration.support import FAST, count_by_entity, make_stage, make_workflow, ms, stage_named
from tests.integration.workers import exec_key, registry_for, run_worker

RealTarget = tuple[str, str]
WORKFLOWS = 50


def fan_in(upstreams: int, join_type: JoinType = JoinType.AND, threshold: int = 0) -> Workflow:
    ups = [make_stage(f"u{i}", "count") for i in range(upstreams)]
    join = make_stage("join", "count", requires={s.ref_id for s in ups}, join_type=join_type,
                      join_threshold=threshold)
    return make_workflow(*ups, join, name=f"fan-in {upstreams} {join_type.name}")


@contextmanager
def thread_processors(target: RealTarget, processors: int = 3, concurrency: int = 8) -> Iterator[list[QueueProcessor]]:
    """Several QueueProcessors (separate consumers) in background mode, each started from its
    own thread."""
    url, ns = target
    store, queue = RedisWorkflowStore(url, namespace=ns), RedisQueue(url, namespace=ns)
    registry = registry_for(url, ns)
    procs = [QueueProcessor(queue, store=store, task_registry=registry, engine_config=FAST,
                            concurrency=concurrency) for _ in range(processors)]
    starters = [threading.Thread(target=p.start) for p in procs]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    try:
        assert all(p.is_running for p in procs)
        yield procs
    finally:
        for p in procs:
            p.stop(timeout=10)


def submit_and_wait(target: RealTarget, workflows: list[Workflow], timeout: float = 60) -> list[Workflow]:
    url, ns = target
    client = connect(url, ns)
    for wf in workflows:
        client.submit(wf)
    return [client.wait(wf.id, timeout=timeout) for wf in workflows]


def assert_each_stage_ran_once(target: RealTarget, results: list[Workflow]) -> None:
    url, ns = target
    client = connect(url, ns)
    counters = redis.Redis.from_url(url)
    for wf in results:
        assert wf.status == WorkflowStatus.SUCCEEDED, (wf.id, [(s.ref_id, s.status) for s in wf.stages])
        join = stage_named(wf, "join")
        events = client.events(wf.id)
        started = count_by_entity(events, "stage.started")
        assert started == {s.id: 1 for s in wf.stages}, f"workflow {wf.id}: stage.started counts {started}"
        assert count_by_entity(events, "stage.completed")[join.id] == 1
        assert count_by_entity(events, "workflow.completed") == {wf.id: 1}
        runs = {s.ref_id: int(counters.get(exec_key(ns, wf.id, s.ref_id)) or 0) for s in wf.stages}
        assert runs == dict.fromkeys(runs, 1), f"workflow {wf.id}: executions {runs}"


@pytest.mark.parametrize("upstreams", [2, 8])
def test_and_join_starts_once_with_three_threaded_processors(real_target: RealTarget, upstreams: int) -> None:
    workflows = [fan_in(upstreams) for _ in range(WORKFLOWS)]
    with thread_processors(real_target):
        results = submit_and_wait(real_target, workflows)

    assert_each_stage_ran_once(real_target, results)
    for wf in results:
        join = stage_named(wf, "join")
        # The join saw every upstream's output (lists merged in topological order).
        assert join.context["branches"] == [f"u{i}" for i in range(upstreams)]
        assert ms(join.start_time) >= max(ms(stage_named(wf, f"u{i}").end_time) for i in range(upstreams))


@pytest.mark.parametrize(("join_type", "threshold"), [(JoinType.N_OF_M, 2), (JoinType.DISCRIMINATOR, 0)],
                         ids=["n_of_m_2_of_3", "discriminator"])
def test_partial_joins_start_once_with_three_threaded_processors(real_target: RealTarget, join_type: JoinType,
                                                                 threshold: int) -> None:
    workflows = [fan_in(3, join_type, threshold) for _ in range(WORKFLOWS)]
    with thread_processors(real_target):
        results = submit_and_wait(real_target, workflows)

    assert_each_stage_ran_once(real_target, results)
    need = threshold or 1
    for wf in results:
        join = stage_named(wf, "join")
        ends = sorted(ms(stage_named(wf, f"u{i}").end_time) for i in range(3))
        # It started once enough upstreams had finished.
        assert ms(join.start_time) >= ends[need - 1]


def test_and_join_starts_once_with_three_worker_processes(real_target: RealTarget) -> None:
    url, ns = real_target
    ready_key, stop_key = f"{ns}:test:ready", f"{ns}:test:stop"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(url, ns, ready_key, stop_key, 8), daemon=True) for _ in range(3)]
    for p in procs:
        p.start()
    control = redis.Redis.from_url(url)
    try:
        pids = set()
        for _ in procs:
            reply = control.blpop([ready_key], timeout=60)
            assert reply is not None, "a worker process did not start"
            pids.add(int(reply[1]))
        assert len(pids) == 3
        workflows = [fan_in(2) for _ in range(WORKFLOWS)] + [fan_in(8) for _ in range(WORKFLOWS // 5)]
        results = submit_and_wait(real_target, workflows, timeout=90)
    finally:
        control.rpush(stop_key, *["stop"] * len(procs))
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)

    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert_each_stage_ran_once(real_target, results)
