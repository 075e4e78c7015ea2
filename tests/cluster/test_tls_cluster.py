"""``rediss+cluster://`` against a local TLS cluster (three masters with ``tls-cluster yes``, a
throw-away CA made with ``openssl``): workers and the client verify every node with
``ssl_ca_certs`` and run workflows; a node certificate from another CA is refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from stabilize_redis import Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.connection import delete_namespace
from stabilize_redis.backend.registry import forget_backends
from tests.cluster.nodes import START_TIMEOUT_S, cluster_port, wait_for
from tests.integration.support import make_engine, make_stage, make_workflow
from tests.security.test_tls import make_ca, make_server_cert


@dataclass
class TlsCluster:
    directory: Path
    ca: Path
    other_ca: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, ca: Path) -> str:
        nodes = ",".join(f"127.0.0.1:{p}" for p in sorted(self.procs))
        return f"rediss+cluster://{nodes}/?ssl_ca_certs={ca}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=5)

    def state_ok(self) -> bool:
        try:
            return all(b"cluster_state:ok" in self.node(p).execute_command("CLUSTER", "INFO") for p in self.procs)
        except redis.RedisError:
            return False


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsCluster]:
    directory = Path(tempfile.mkdtemp(prefix="stz-tls-cluster-"))
    cluster = TlsCluster(directory, make_ca(directory, "ca"), make_ca(directory, "other"))
    cert, key = make_server_cert(directory, "ca")
    tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cluster.ca)]
    try:
        for _ in range(3):
            port = cluster_port()
            cluster.procs[port] = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port), *tls,
                 "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", f"{directory}/nodes-{port}.conf",
                 "--save", "", "--appendonly", "no", "--dir", str(directory)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: all(_pings(cluster, p) for p in cluster.procs), START_TIMEOUT_S, "the TLS nodes")
        subprocess.run(["redis-cli", "--tls", "--cacert", str(cluster.ca), "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in sorted(cluster.procs)], "--cluster-yes"],
                       check=True, capture_output=True, timeout=START_TIMEOUT_S)
        wait_for(cluster.state_ok, START_TIMEOUT_S, "cluster_state:ok on every TLS node")
        yield cluster
    finally:
        for proc in cluster.procs.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _pings(cluster: TlsCluster, port: int) -> bool:
    try:
        return bool(cluster.node(port).ping())
    except redis.RedisError:
        return False


class Ok(Task):
    def execute(self, stage):  # type: ignore[no-untyped-def]
        return TaskResult.success(outputs={f"{stage.ref_id}_out": 1})


def test_workflows_run_on_a_tls_cluster_verified_with_the_ca(tls_cluster: TlsCluster, namespace: str) -> None:
    url = tls_cluster.url(tls_cluster.ca)
    forget_backends()
    try:
        eng = make_engine((url, namespace))
        eng.registry.register("t", Ok())
        assert eng.store.backend.cluster
        wfs = [make_workflow(make_stage("a"), make_stage("b", requires=["a"])) for _ in range(8)]
        with eng.threaded(concurrency=4):
            for wf in wfs:
                eng.client.submit(wf)
            assert [eng.client.wait(wf.id, timeout=30).status for wf in wfs] == [WorkflowStatus.SUCCEEDED] * 8
    finally:
        forget_backends()
        delete_namespace(url, namespace)


def test_a_tls_cluster_whose_certificates_another_ca_signed_is_refused(tls_cluster: TlsCluster,
                                                                        namespace: str) -> None:
    forget_backends()
    with pytest.raises((redis.RedisError, redis.exceptions.RedisClusterException), match="certificate verify failed"):
        make_engine((tls_cluster.url(tls_cluster.other_ca), namespace))
    forget_backends()
