"""Durable submit: ``replicas:N`` returns only once N replicas hold the workflow, so a failover
to a replica right after ``submit`` returns keeps it; an unconfirmed wait raises and says so."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis

import stabilize_redis
from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.durable_submit import Durability, SubmitNotDurable
from tests.conftest import free_port, start_private_redis
from tests.integration.support import make_stage, make_workflow, wait_until


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[int, subprocess.Popen[bytes], int, subprocess.Popen[bytes]]]:
    p_port, r_port = free_port(), free_port()
    primary = start_private_redis(p_port)
    replica = start_private_redis(r_port, ["--replicaof", "127.0.0.1", str(p_port)])
    try:
        link = redis.Redis(port=r_port)
        wait_until(lambda: link.info("replication").get("master_link_status") == "up", 10,
                   "replica linked to its primary")
        forget_backends()
        yield p_port, primary, r_port, replica
    finally:
        forget_backends()
        for proc in (primary, replica):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()


def _workflow() -> stabilize_redis.Workflow:
    return make_workflow(make_stage("only", "noop"), name="durable submit")


def test_replicated_submit_survives_failover_to_the_replica(primary_and_replica, namespace: str) -> None:
    p_port, primary, r_port, _ = primary_and_replica
    client = stabilize_redis.connect(f"redis://127.0.0.1:{p_port}/0", namespace, dsn="")
    ids = [client.submit(_workflow(), durability="replicas:1") for _ in range(20)]
    primary.kill()  # SIGKILL right after the last submit returned
    primary.wait()
    promoted = redis.Redis(port=r_port)
    promoted.replicaof("NO", "ONE")
    forget_backends()
    survivor = stabilize_redis.connect(f"redis://127.0.0.1:{r_port}/0", namespace, dsn="")
    assert [survivor.get(i).id for i in ids] == ids


def test_unconfirmed_replication_raises_but_the_workflow_is_stored(primary_and_replica, namespace: str) -> None:
    p_port, _, _, replica = primary_and_replica
    client = stabilize_redis.connect(f"redis://127.0.0.1:{p_port}/0", namespace, dsn="")
    os.kill(replica.pid, signal.SIGSTOP)  # the replica cannot acknowledge anything now
    try:
        wf = _workflow()
        with pytest.raises(SubmitNotDurable, match="0 of 1 replicas"):
            client.submit(wf, durability="replicas:1", durability_timeout=0.3)
        assert client.get(wf.id).id == wf.id
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    # Resubmitting writes nothing new and now gets the confirmation.
    assert client.submit(wf, durability="replicas:1") == wf.id


def test_replicated_submit_on_the_embedded_default_is_refused(namespace: str) -> None:
    client = stabilize_redis.connect(None, namespace, dsn="")
    with pytest.raises(ValueError, match="needs a real Redis"):
        client.submit(_workflow(), durability="replicas:1")


@pytest.mark.parametrize("value", ["replicas", "replicas:0", "replicas:x", "disk", "checkpoint:2"])
def test_unknown_durability_settings_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="expected 'memory', 'replicas:N'"):
        Durability.parse(value)


def test_durability_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILIZE_SUBMIT_DURABILITY", "replicas:2")
    monkeypatch.setenv("STABILIZE_SUBMIT_DURABILITY_TIMEOUT", "0.5")
    assert Durability.parse() == Durability("replicas", 2, 0.5)
