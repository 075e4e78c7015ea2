"""Helpers of the Redis outage, maxmemory and consumer-hygiene tests: a private redis-server
that can be killed, filled and restarted on the same port; worker processes whose log is kept
in a file and read line by line; and the consumers of a namespace's groups.

Nothing here touches the shared Redis: every test owns its server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow
from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.keys import CONSUMER_GROUP, NamespaceKeys
from tests.conftest import free_port, start_private_redis
from tests.integration.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.processes.app:registry"


class PrivateRedis:
    """A redis-server of this test on a fixed port: ``start()`` (again after ``kill()``: an
    empty server on the same port), ``kill()`` (SIGKILL: an outage)."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.extra = list(extra)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.proc = start_private_redis(self.port, self.extra, tempfile.mkdtemp(prefix="stz-outage-"))
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@contextmanager
def owned(server: PrivateRedis) -> Iterator[PrivateRedis]:
    """``server`` for one test (the body of its fixture): this process's backends are forgotten
    before and after (none keeps a connection to another test's server), and it is killed at
    the end."""
    forget_backends()
    try:
        yield server
    finally:
        forget_backends()
        server.kill()


FILL_BYTES = 10_000_000
HEADROOM_BYTES = 3_000_000


def fill(client: redis.Redis, namespace: str) -> int:
    """Make a private Redis (``--maxmemory-policy noeviction``) refuse writes: store
    ``FILL_BYTES`` in ``<namespace>:fill:N`` keys, then set ``maxmemory`` to what was used
    before plus ``HEADROOM_BYTES``, so Redis stays several MB over it (client buffers shrinking
    later cannot bring it back under) and frees up when ``free`` deletes the keys. Returns how
    many keys were written."""
    before = int(client.info("memory")["used_memory"])
    count = FILL_BYTES // 100_000
    for n in range(count):
        client.set(f"{namespace}:fill:{n}", b"x" * 100_000)
    client.config_set("maxmemory", before + HEADROOM_BYTES)
    try:
        client.set(f"{namespace}:fill:probe", b"x")
    except redis.exceptions.OutOfMemoryError:
        return count
    raise AssertionError("Redis still accepts writes after filling it")


def free(client: redis.Redis, namespace: str, count: int) -> None:
    """Delete the keys ``fill`` wrote (DEL is allowed at maxmemory)."""
    client.delete(*[f"{namespace}:fill:{n}" for n in range(count)])


class WorkerProcess:
    """``stabilize-redis worker`` on ``url``/``namespace`` with the tasks of tests/processes/app.py,
    its output appended to ``log``."""

    def __init__(self, url: str, namespace: str, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        environ = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_")}
        environ.update({"STZ_TEST_URL": url, "STZ_TEST_NS": namespace, "PYTHONPATH": str(ROOT), **(env or {})})
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "worker", "--app", APP, "--url", url, "--namespace", namespace,
                 "--concurrency", "4", "--log-level", "INFO", *args],
                cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def wait_for_line(self, *fragments: str, after: int = 0, timeout: float = 30.0) -> str:
        """The first line (from line number ``after``) containing every fragment; fails after
        ``timeout`` or when the worker exits first."""

        def found() -> str | None:
            for line in self.lines()[after:]:
                if all(f in line for f in fragments):
                    return line
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n" + "\n".join(
                self.lines()[-40:])
            return None

        return str(wait_until(found, timeout, f"a worker log line with {fragments}"))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and the exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def consumers(client: redis.Redis, namespace: str, partitions: int = 16) -> dict[str, int]:
    """Every consumer of the namespace's groups -> entries pending to it (over all partitions)."""
    out: dict[str, int] = {}
    for part in NamespaceKeys(namespace, partitions).all_partitions():
        try:
            rows = client.xinfo_consumers(part.ready, CONSUMER_GROUP)
        except redis.ResponseError:  # no stream or group yet
            continue
        for row in rows:
            name = row["name"].decode()
            out[name] = out.get(name, 0) + int(row["pending"])
    return out


def work_stage(ref: str, requires: tuple[str, ...] = (), work_s: float = 0.02) -> StageExecution:
    """A stage running the app's ``work`` task for ``work_s`` seconds."""
    return StageExecution(
        ref_id=ref, type="work", name=ref, requisite_stage_ref_ids=set(requires), context={"work_s": work_s},
        tasks=[TaskExecution.create(name=ref, implementing_class="work", stage_start=True, stage_end=True)])


def chain(n: int, work_s: float = 0.02, name: str = "chain") -> Workflow:
    stages = [work_stage("s0", work_s=work_s)]
    stages += [work_stage(f"s{i}", (f"s{i - 1}",), work_s) for i in range(1, n)]
    return Workflow.create(application="outage-test", name=name, stages=stages)
