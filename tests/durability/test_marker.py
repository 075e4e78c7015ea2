"""Workers notice a namespace that lost its Redis data: they refuse to start (exit code 3,
saying to run restore), a running worker stops, and after a restore they run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.backend.connection import delete_namespace
from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST, NamespaceGuard
from stabilize_redis.durability.restore import restore_namespace
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.keys import NamespaceKeys
from tests.durability.support import checkpointer
from tests.integration.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _workflow() -> Workflow:
    stage = StageExecution(ref_id="a", type="work", name="a", context={"work_s": 0.01}, tasks=[
        TaskExecution.create(name="a", implementing_class="work", stage_start=True, stage_end=True)])
    return Workflow.create(application="marker-test", name="one", stages=[stage])


def _worker(url: str, ns: str, dsn: str, schema: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STZ_TEST_URL": url, "STZ_TEST_NS": ns, "PYTHONPATH": str(ROOT),
           "STABILIZE_MARKER_CHECK_INTERVAL": "0.2"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--app", "tests.processes.app:registry",
             "--url", url, "--namespace", ns, "--dsn", dsn, "--schema", schema, "--log-level", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _registered(dsn: str, schema: str, ns: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT 1 FROM {}.namespaces WHERE namespace = %s")
                           .format(sql.Identifier(schema)), (ns,)).fetchone()
    return row is not None


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.mark.slow
def test_worker_refuses_to_start_on_a_lost_namespace_until_it_is_restored(
        real_target: tuple[str, str], snapshot_store: SnapshotStore, pg_dsn: str, pg_schema: str,
        tmp_path: Path) -> None:
    url, ns = real_target
    client = connect(url, ns, dsn="")
    wf = _workflow()
    client.submit(wf)
    checkpointer(client.backend, snapshot_store).run_once(interval=0.0, all_partitions=True)
    delete_namespace(url, ns)
    log = tmp_path / "worker.log"

    refused = _worker(url, ns, pg_dsn, pg_schema, log)
    assert refused.wait(60) == EXIT_NAMESPACE_LOST
    text = log.read_text()
    assert "refusing to start" in text and "stabilize-redis restore" in text
    assert not redis.Redis.from_url(url).exists(NamespaceKeys(ns, 0).meta), "a refusing worker creates nothing"

    report = restore_namespace(redis.Redis.from_url(url), snapshot_store)
    assert report.restored == 1
    worker = _worker(url, ns, pg_dsn, pg_schema, log)
    try:
        assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
    finally:
        assert _stop(worker) == 0


@pytest.mark.slow
def test_running_worker_stops_when_its_namespace_data_vanishes(
        real_target: tuple[str, str], snapshot_store: SnapshotStore, pg_dsn: str, pg_schema: str,
        tmp_path: Path) -> None:
    url, ns = real_target
    client = connect(url, ns, dsn="")
    log = tmp_path / "worker.log"
    worker = _worker(url, ns, pg_dsn, pg_schema, log)
    try:
        wf = _workflow()
        client.submit(wf)
        assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        wait_until(lambda: _registered(pg_dsn, pg_schema, ns), 30, "the checkpointer to register the namespace")

        delete_namespace(url, ns)

        assert worker.wait(60) == EXIT_NAMESPACE_LOST
        assert "stopping:" in log.read_text()
    finally:
        _stop(worker)


def test_marker_recreated_by_a_client_after_the_loss_is_still_noticed(
        real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    url, ns = real_target
    client = connect(url, ns, dsn="")
    client.submit(_workflow())
    checkpointer(client.backend, snapshot_store).run_once(interval=0.0, all_partitions=True)
    raw = redis.Redis.from_url(url)
    guard = NamespaceGuard(raw, ns, snapshot_store, tolerance_ms=0)
    assert not guard.check().lost

    delete_namespace(url, ns)
    meta = NamespaceKeys(ns, 0).meta
    raw.hset(meta, mapping={"partitions": client.backend.keys.partitions, "created_at": 2**42})  # a late client
    assert guard.check().lost

    restore_namespace(raw, snapshot_store)
    assert not guard.check().lost
