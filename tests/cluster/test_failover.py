"""A failover mid-run: while worker threads run workflows, the replica of the master owning
some of the namespace's partitions takes over (``CLUSTER FAILOVER``). The engine rides it out
like a Redis restart: every workflow succeeds and every transition happens exactly once."""

from __future__ import annotations

from collections import Counter

from redis.cluster import key_slot

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from tests.cluster.nodes import LocalCluster, wait_for
from tests.integration.support import make_engine, make_stage, make_workflow


class Slow(Task):
    """Succeeds after a short pause, so a run of workflows spans the failover."""

    def execute(self, stage: StageExecution) -> TaskResult:
        import time

        time.sleep(0.03)
        return TaskResult.success(outputs={f"{stage.ref_id}_out": 1})


def _owner(cluster: LocalCluster, key: str) -> int:
    """Port of the master serving ``key``'s slot, as the cluster says now."""
    slot = key_slot(key.encode())
    for start, end, master, *_ in cluster.node(cluster.masters()[0]).execute_command("CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise AssertionError(f"slot {slot} is not served")


def test_workflows_ride_out_a_master_failover_and_run_every_transition_once(
        redis_cluster: LocalCluster, cluster_target: tuple[str, str]) -> None:
    eng = make_engine(cluster_target)
    eng.registry.register("t", Slow())
    keys = eng.store.backend.keys
    old_master = _owner(redis_cluster, keys.partition(0).ready)
    replica = redis_cluster.replica_of(old_master)
    workflows = [make_workflow(*[make_stage(f"s{i}", requires=[f"s{i - 1}"] if i else []) for i in range(6)])
                 for _ in range(60)]
    on_failed_over = [wf for wf in workflows if _owner(redis_cluster, keys.for_workflow(wf.id).ready) == old_master]
    assert on_failed_over, "some workflows live on the master that fails over"
    with eng.threaded(concurrency=4):
        for wf in workflows:
            eng.client.submit(wf)
        wait_for(lambda: sum(eng.client.status(wf.id) == "SUCCEEDED" for wf in workflows) >= 5, 30,
                 "5 finished workflows")
        redis_cluster.node(replica).execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: _owner(redis_cluster, keys.partition(0).ready) == replica, 30, "the replica to take over")
        assert any(eng.client.status(wf.id) != "SUCCEEDED" for wf in on_failed_over), \
            "the failover happened mid-run, with workflows of the failed-over master still running"
        results = [eng.client.wait(wf.id, timeout=60) for wf in workflows]
    wait_for(redis_cluster.healthy, 30, "cluster_state:ok on every node")

    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(workflows)
    for wf in workflows:
        events = eng.events(wf.id)
        stage_ids = Counter(s.id for s in wf.stages)
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.started") == stage_ids
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.completed") == stage_ids
        assert [e["event_type"] for e in events].count("workflow.completed") == 1
    counts = eng.client.queue.counts()
    assert counts["dead"] == 0 and counts["ready"] == 0


def test_workflows_ride_out_a_master_killed_mid_run(redis_cluster: LocalCluster,
                                                     cluster_target: tuple[str, str]) -> None:
    # An unplanned failover: the master is SIGKILLed, its replica is promoted after the node
    # timeout. Replication is asynchronous, so a commit the dead master acknowledged may be
    # lost with it - as a unit, since every key of a commit lives in one slot: the message it
    # acked is then delivered again and the transition happens once in what survives.
    eng = make_engine(cluster_target)
    eng.registry.register("t", Slow())
    keys = eng.store.backend.keys
    victim = _owner(redis_cluster, keys.partition(0).ready)
    replica = redis_cluster.replica_of(victim)
    workflows = [make_workflow(*[make_stage(f"s{i}", requires=[f"s{i - 1}"] if i else []) for i in range(6)])
                 for _ in range(60)]
    on_victim = [wf for wf in workflows if _owner(redis_cluster, keys.for_workflow(wf.id).ready) == victim]
    assert on_victim, "some workflows live on the master that is killed"
    try:
        with eng.threaded(concurrency=4):
            for wf in workflows:
                eng.client.submit(wf)
            wait_for(lambda: sum(eng.client.status(wf.id) == "SUCCEEDED" for wf in workflows) >= 5, 30,
                     "5 finished workflows")
            redis_cluster.kill(victim)
            wait_for(lambda: replica in redis_cluster.masters(), 30, "the replica to be promoted")
            results = [eng.client.wait(wf.id, timeout=60) for wf in workflows]
    finally:
        if redis_cluster.procs[victim].poll() is not None:
            redis_cluster.restart(victim)
        wait_for(lambda: redis_cluster.healthy() and redis_cluster.replicas_in_sync(), 30,
                 "the killed node back as a replica")

    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(workflows)
    for wf in workflows:
        events = eng.events(wf.id)
        stage_ids = Counter(s.id for s in wf.stages)
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.completed") == stage_ids
        assert [e["event_type"] for e in events].count("workflow.completed") == 1
    counts = eng.client.queue.counts()
    assert counts["dead"] == 0 and counts["ready"] == 0
