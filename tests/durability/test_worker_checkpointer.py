"""Worker processes run the checkpointer when a DSN is configured (one active per partition,
shared safely by several workers), say once that they run without snapshots otherwise, and the
standalone ``stabilize-redis checkpointer`` does the same job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stabilize_redis import StageExecution, TaskExecution, Workflow, connect
from stabilize_redis.durability.snapshots import SnapshotStore
from tests.durability.support import dirty_count, versions
from tests.integration.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _workflow(i: int) -> Workflow:
    stages = [StageExecution(ref_id=r, type="work", name=r, context={"work_s": 0.005},
                             requisite_stage_ref_ids=set(req),
                             tasks=[TaskExecution.create(name=r, implementing_class="work", stage_start=True,
                                                         stage_end=True)])
              for r, req in (("a", ()), ("b", ("a",)), ("c", ("a",)))]
    return Workflow.create(application="worker-ckpt", name=f"w{i}", stages=stages)


def _cli(*args: str, url: str, ns: str, extra_env: dict[str, str] | None = None,
         log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_POSTGRES")}
    env.update({"STZ_TEST_URL": url, "STZ_TEST_NS": ns, "PYTHONPATH": str(ROOT), **(extra_env or {})})
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_workers_checkpoint_when_a_dsn_is_set(real_target: tuple[str, str], pg_dsn: str, pg_schema: str,
                                              snapshot_store: SnapshotStore, tmp_path: Path) -> None:
    url, ns = real_target
    log = tmp_path / "workers.log"
    workers = _cli("worker", "--app", "tests.processes.app:registry", "--url", url, "--namespace", ns,
                   "--processes", "2", "--log-level", "INFO", "--schema", pg_schema, url=url, ns=ns,
                   extra_env={"STABILIZE_POSTGRES_DSN": pg_dsn}, log=log)
    try:
        client = connect(url, ns, dsn="")
        ids = [client.submit(_workflow(i)) for i in range(30)]
        for wid in ids:
            assert client.wait(wid, timeout=60).status.name == "SUCCEEDED"
        backend = client.backend
        wait_until(lambda: dirty_count(backend) == 0, timeout=20, what="the workers' checkpointer to drain")
        wait_until(lambda: len(snapshot_store.versions(ids)) == len(ids), timeout=10, what="all snapshots")
        stored = snapshot_store.versions(ids)
        assert all(stored[w] == versions(backend, w)[0] for w in ids)

        def holders() -> list[bytes | None]:
            return [backend.client.get(p.checkpoint_lease) for p in backend.keys.all_partitions()]

        # each partition has exactly one active checkpointer, and the two workers share them
        wait_until(lambda: None not in holders() and len(set(holders())) == 2, timeout=15,
                   what="the two workers' checkpointers to share the partitions")
        counts = sorted(holders().count(h) for h in set(holders()))
        assert counts == [backend.keys.partitions // 2] * 2
        assert snapshot_store.namespace_partitions() == backend.keys.partitions
    finally:
        _stop(workers)
    text = log.read_text()
    assert text.count("checkpointer on ") == 2, text[-3000:]
    assert "running without snapshots" not in text


@pytest.mark.slow
def test_without_a_dsn_workers_say_so_once(real_target: tuple[str, str], tmp_path: Path) -> None:
    url, ns = real_target
    log = tmp_path / "worker.log"
    worker = _cli("worker", "--app", "tests.processes.app:registry", "--url", url, "--namespace", ns,
                  "--log-level", "INFO", url=url, ns=ns, log=log)
    try:
        client = connect(url, ns, dsn="")
        ids = [client.submit(_workflow(i)) for i in range(3)]
        for wid in ids:
            client.wait(wid, timeout=60)
    finally:
        _stop(worker)
    assert log.read_text().count("running without snapshots") == 1


@pytest.mark.slow
def test_standalone_checkpointer(real_target: tuple[str, str], pg_dsn: str, pg_schema: str,
                                 snapshot_store: SnapshotStore, tmp_path: Path) -> None:
    url, ns = real_target
    worker = _cli("worker", "--app", "tests.processes.app:registry", "--url", url, "--namespace", ns,
                  "--no-checkpointer", "--dsn", pg_dsn, url=url, ns=ns)
    try:
        client = connect(url, ns, dsn="")
        ids = [client.submit(_workflow(i)) for i in range(5)]
        for wid in ids:
            client.wait(wid, timeout=60)
        assert dirty_count(client.backend) == 5, "the worker ran no checkpointer"
        once = subprocess.run([sys.executable, "-m", "workers.cli", "checkpointer", "--once", "--url", url,
                               "--namespace", ns, "--dsn", pg_dsn, "--schema", pg_schema],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert once.returncode == 0, once.stderr
        assert '"read": 5' in once.stdout
        assert dirty_count(client.backend) == 0
        assert set(snapshot_store.versions(ids)) == set(ids)

        more = [client.submit(_workflow(i)) for i in range(5, 8)]
        for wid in more:
            client.wait(wid, timeout=60)
        log = tmp_path / "ckpt.log"
        standalone = _cli("checkpointer", "--url", url, "--namespace", ns, "--dsn", pg_dsn, "--schema", pg_schema,
                          url=url, ns=ns, log=log)
        try:
            wait_until(lambda: dirty_count(client.backend) == 0, timeout=20, what="the standalone checkpointer")
        finally:
            _stop(standalone)
        assert standalone.returncode == 0, log.read_text()[-2000:]
        assert set(snapshot_store.versions(more)) == set(more)
    finally:
        _stop(worker)
