"""Cluster URLs: ``redis+cluster://`` and ``rediss+cluster://`` build redis-py's cluster
client with every node given as a startup node; bad ones fail with an error that names what is
wrong and never shows the password."""

from __future__ import annotations

import json

import pytest
from redis.cluster import RedisCluster

import stabilize_redis
from stabilize_redis import RedisQueue, RedisWorkflowStore
from stabilize_redis.backend.connection import Target, connect_redis, parse_cluster_url
from tests.cluster.nodes import LocalCluster
from tests.integration.support import make_stage, make_workflow
from workers.cli import main as cli_main


def test_a_cluster_url_names_every_startup_node_and_the_credentials() -> None:
    spec = parse_cluster_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?socket_timeout=2")
    assert spec.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert spec.options == {"username": "app", "password": "s3cret", "socket_timeout": 2.0}


def test_a_tls_cluster_url_takes_the_rediss_query_options() -> None:
    spec = parse_cluster_url("rediss+cluster://:pw@h1:7000,h2:7000?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required")
    assert spec.options == {"password": "pw", "ssl": True, "ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}


@pytest.mark.parametrize(("url", "complaint"), [
    ("redis+cluster://user:hunter2@/", "host:port"),
    ("redis+cluster://user:hunter2@h1:7000,h2/", "got 'h2'"),
    ("redis+cluster://user:hunter2@h1:notaport/", "host:port"),
    ("redis+cluster://user:hunter2@h1:7000,,h2:7000/", "got ''"),
    ("redis+cluster://user:hunter2@h1:7000/3", "database 0 only"),
    ("redis+cluster://user:hunter2@h1:7000/?ssl_ca_certs=/ca.pem", r"use a rediss\+cluster:// URL"),
])
def test_a_bad_cluster_url_is_refused_naming_the_problem_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        connect_redis(Target(url, "ns"))
    assert "hunter2" not in str(caught.value) and "user:***@" in str(caught.value)


def test_a_cluster_target_is_described_without_its_password() -> None:
    target = Target("redis+cluster://app:hunter2@h1:7000,h2:7000/", "ns")
    assert target.cluster
    assert "hunter2" not in target.describe() and "hunter2" not in repr(target)
    assert not Target("redis://h1:6379/0", "ns").cluster


def test_connect_store_and_queue_take_a_cluster_url(redis_cluster: LocalCluster, cluster_target: tuple[str, str]) -> None:
    url, ns = cluster_target
    client = stabilize_redis.connect(url, ns)
    store, queue = RedisWorkflowStore(url, namespace=ns), RedisQueue(url, namespace=ns)
    assert isinstance(store.backend.client, RedisCluster) and queue.backend is store.backend
    wf = make_workflow(make_stage("a"))
    client.submit(wf)
    assert store.retrieve(wf.id).id == wf.id
    assert queue.size() == 1  # the StartWorkflow message, in the workflow's partition


def test_a_single_startup_node_finds_the_whole_cluster(redis_cluster: LocalCluster, namespace: str) -> None:
    one = f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    client = connect_redis(Target(one, namespace))
    assert len(client.get_primaries()) == 3


def test_the_status_command_reports_a_cluster_namespace(cluster_target: tuple[str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, ns = cluster_target
    stabilize_redis.connect(url, ns).submit(make_workflow(make_stage("a")))
    capsys.readouterr()
    assert cli_main(["status", "--url", url, "--namespace", ns]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["key_layout"] == 2 and report["partitions"] == 16 and len(report["rows"]) == 16
    assert report["totals"]["ready"] == 1
