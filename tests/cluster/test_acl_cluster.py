"""The engine's minimal ACL rule on a cluster: with ``cluster=True`` (the two commands redis-py's
cluster client needs) set on every node, the core cases run and no node refused a command."""

from __future__ import annotations

import pytest
import redis

from stabilize_redis.acl import acl_rules
from tests.cluster import scenarios
from tests.cluster.nodes import LocalCluster
from tests.integration.support import make_engine


def _acl_user(cluster: LocalCluster, namespace: str, cluster_commands: bool) -> str:
    user = f"u{namespace}"
    for port in cluster.ports:
        node = cluster.node(port)
        node.execute_command("ACL", "LOG", "RESET")
        node.execute_command("ACL", "SETUSER", user, *acl_rules(namespace, "pw", cluster=cluster_commands))
    return "redis+cluster://" + f"{user}:pw@" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports) + "/"


def _refusals(cluster: LocalCluster) -> list[bytes]:
    return [entry[b"object"] for port in cluster.ports for entry in cluster.node(port).execute_command("ACL", "LOG")]


def test_the_core_cases_run_under_the_cluster_acl_rule_with_nothing_refused(
        redis_cluster: LocalCluster, cluster_target: tuple[str, str]) -> None:
    _, ns = cluster_target
    url = _acl_user(redis_cluster, ns, cluster_commands=True)
    try:
        eng = make_engine((url, ns))
        tasks = scenarios.register(eng)
        with eng.threaded(concurrency=4):
            for run in scenarios.ALL.values():
                run(eng, tasks)
        assert _refusals(redis_cluster) == []
    finally:
        for port in redis_cluster.ports:
            redis_cluster.node(port).execute_command("ACL", "DELUSER", f"u{ns}")


def test_without_the_cluster_commands_a_cluster_client_cannot_start(
        redis_cluster: LocalCluster, cluster_target: tuple[str, str]) -> None:
    _, ns = cluster_target
    url = _acl_user(redis_cluster, ns, cluster_commands=False)
    try:
        with pytest.raises((redis.RedisError, redis.exceptions.RedisClusterException)):
            make_engine((url, ns))
        assert b"cluster|slots" in _refusals(redis_cluster)
    finally:
        for port in redis_cluster.ports:
            redis_cluster.node(port).execute_command("ACL", "DELUSER", f"u{ns}")
