"""A real Redis Cluster on loopback for the tests: ``redis-server`` processes in cluster mode
joined by ``redis-cli --cluster create``.

Three masters, each with one replica (six processes): the replicas are what a failover test
promotes (``CLUSTER FAILOVER`` on a replica), and one session-wide cluster keeps the directory
fast - starting a second cluster only for the failover test would cost as much as all of it.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tests.conftest import start_private_redis

START_TIMEOUT_S = 30.0
NODE_TIMEOUT_MS = 2000  # a master unreachable this long is failed over to its replica
BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000 (the cluster bus)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too. ``free_port`` does not
    fit: the kernel's ephemeral ports go past 55535, where the bus port would not exist."""
    for _ in range(1000):
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class LocalCluster:
    """A running cluster: its node processes by port, the working directory, the URL."""

    workdir: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return sorted(self.procs)

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def info(self, port: int) -> dict[str, str]:
        raw = self.node(port).execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)

    def roles(self) -> dict[int, str]:
        """Port -> 'master' or 'slave', as each node reports itself."""
        return {p: self.node(p).info("replication")["role"] for p in self.ports if self.procs[p].poll() is None}

    def masters(self) -> list[int]:
        return sorted(p for p, role in self.roles().items() if role == "master")

    def replica_of(self, master: int) -> int:
        for port, role in self.roles().items():
            if role == "slave" and int(self.node(port).info("replication")["master_port"]) == master:
                return port
        raise RuntimeError(f"no replica of 127.0.0.1:{master}")

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` and knows every node."""
        try:
            return all(self.info(p).get("cluster_state") == "ok"
                       and int(self.info(p).get("cluster_known_nodes", 0)) == len(self.procs)
                       for p in self.ports if self.procs[p].poll() is None)
        except redis.RedisError:
            return False

    def start_node(self, port: int) -> subprocess.Popen[bytes]:
        """Start (or restart: the node's config file keeps its identity) the node on ``port``."""
        return start_private_redis(port, [
            "--cluster-enabled", "yes", "--cluster-config-file", f"{self.workdir}/nodes-{port}.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", "0",
            "--appendonly", "no", "--save", ""], workdir=self.workdir)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its replica takes over after the node timeout)."""
        self.procs[port].kill()
        self.procs[port].wait()

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins (as a replica, once its replica took over)."""
        self.procs[port] = self.start_node(port)

    def replicas_in_sync(self) -> bool:
        """Every live replica's link to its master is up (its first full sync is done)."""
        try:
            return all(self.node(p).info("replication").get("master_link_status") == "up"
                       for p, role in self.roles().items() if role == "slave")
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(masters: int = 3, replicas: int = 1) -> LocalCluster:
    """Start ``masters * (1 + replicas)`` nodes on free loopback ports, create the cluster and
    wait (with a deadline) until every node reports ``cluster_state:ok`` and every replica has
    finished its first sync."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed; the cluster tests need it")
    cluster = LocalCluster(tempfile.mkdtemp(prefix="stz-cluster-"))
    try:
        for _ in range(masters * (1 + replicas)):
            port = cluster_port()
            cluster.procs[port] = cluster.start_node(port)
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in cluster.ports],
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S)
        wait_for(cluster.healthy, START_TIMEOUT_S, "cluster_state:ok on every node")
        wait_for(lambda: len(cluster.masters()) == masters, START_TIMEOUT_S, f"{masters} masters")
        wait_for(cluster.replicas_in_sync, START_TIMEOUT_S, "every replica linked to its master")
        return cluster
    except BaseException:
        cluster.stop()
        raise
