"""Resharding mid-run: the slots of some of the namespace's partitions move to another master
(CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of every key, SETSLOT NODE) while worker threads
run workflows. Clients meet ASK, MOVED and TRYAGAIN (a script whose keys are split between the
two nodes for a moment) and go on: every workflow succeeds, every transition once."""

from __future__ import annotations

from collections import Counter

from redis.cluster import key_slot

from stabilize_redis import WorkflowStatus
from tests.cluster.nodes import LocalCluster, wait_for
from tests.cluster.test_failover import Slow, _owner
from tests.integration.support import make_engine, make_stage, make_workflow


def _node_id(cluster: LocalCluster, port: int) -> str:
    return cluster.node(port).execute_command("CLUSTER", "MYID").decode()


def migrate_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> int:
    """Move ``slot`` from master ``source`` to master ``target`` as redis-cli's reshard does;
    returns how many keys moved."""
    src, dst = cluster.node(source), cluster.node(target)
    src_id, dst_id = _node_id(cluster, source), _node_id(cluster, target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
    for port in cluster.masters():
        cluster.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved


def test_workflows_ride_out_their_partitions_moving_to_another_master(
        redis_cluster: LocalCluster, cluster_target: tuple[str, str]) -> None:
    eng = make_engine(cluster_target)
    eng.registry.register("t", Slow())
    keys = eng.store.backend.keys
    source = _owner(redis_cluster, keys.partition(0).ready)
    target = next(p for p in redis_cluster.masters() if p != source)
    moving = [p for p in keys.all_partitions() if _owner(redis_cluster, p.ready) == source]
    workflows = [make_workflow(*[make_stage(f"s{i}", requires=[f"s{i - 1}"] if i else []) for i in range(6)])
                 for _ in range(60)]
    assert any(keys.for_workflow(wf.id) in moving for wf in workflows)
    with eng.threaded(concurrency=4):
        for wf in workflows:
            eng.client.submit(wf)
        wait_for(lambda: sum(eng.client.status(wf.id) == "SUCCEEDED" for wf in workflows) >= 5, 30,
                 "5 finished workflows")
        moved = sum(migrate_slot(redis_cluster, key_slot(p.ready.encode()), source, target) for p in moving)
        assert moved > 0
        assert any(eng.client.status(wf.id) != "SUCCEEDED" for wf in workflows if keys.for_workflow(wf.id) in moving), \
            "workflows of the moved partitions were still running"
        results = [eng.client.wait(wf.id, timeout=60) for wf in workflows]
    wait_for(redis_cluster.healthy, 30, "cluster_state:ok on every node")
    assert all(_owner(redis_cluster, p.ready) == target for p in moving)

    assert [r.status for r in results] == [WorkflowStatus.SUCCEEDED] * len(workflows)
    for wf in workflows:
        events = eng.events(wf.id)
        stage_ids = Counter(s.id for s in wf.stages)
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.started") == stage_ids
        assert Counter(e["entity_id"] for e in events if e["event_type"] == "stage.completed") == stage_ids
        assert [e["event_type"] for e in events].count("workflow.completed") == 1
    counts = eng.client.queue.counts()
    assert counts["dead"] == 0 and counts["ready"] == 0
