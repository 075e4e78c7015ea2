"""Helpers of the security tests: the ``stabilize-redis`` CLI and worker processes run with a
given Redis URL in their environment (never on a command line unless the test is about that),
and workflows of the task registry in ``tests/processes/app.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from stabilize_redis import StageExecution, TaskExecution, Workflow

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.processes.app:registry"


def cli_env(url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process on ``url``/``namespace``: the test's Redis and
    PostgreSQL settings replaced (``extra`` adds STABILIZE_POSTGRES_DSN etc.), and the task app
    of ``tests/processes/app.py`` pointed at the same URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_")}
    env.update({"STABILIZE_REDIS_URL": url, "STABILIZE_NAMESPACE": namespace,
                "STZ_TEST_URL": url, "STZ_TEST_NS": namespace, "PYTHONPATH": str(ROOT), **extra})
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``stabilize-redis ARGS`` to completion, stdout and stderr captured."""
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``stabilize-redis worker --app tests.processes.app:registry ARGS``, output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--app", APP, "--concurrency", "4", *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then wait for the exit code (SIGKILL after ``timeout``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def stage(ref: str, task: str = "work", requires: tuple[str, ...] = (), **context: object) -> StageExecution:
    return StageExecution(
        ref_id=ref, type=task, name=ref, requisite_stage_ref_ids=set(requires), context=dict(context),
        tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True, stage_end=True)])


def diamond(name: str = "diamond") -> Workflow:
    """a -> (b, c) -> d, every task the app's ``work``."""
    return Workflow.create(application="security", name=name, stages=[
        stage("a"), stage("b", requires=("a",)), stage("c", requires=("a",)), stage("d", requires=("b", "c"))])
