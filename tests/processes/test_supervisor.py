"""The supervisor never exits 0 after failures: workers that keep crashing make it give up
with EXIT_GAVE_UP, and an ``--app`` that names no TaskRegistry stops it at once with
EXIT_USAGE (restarting cannot fix either). Its exit code 0 is kept for a clean stop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.processes.outage_support import ROOT, PrivateRedis, owned
from workers.supervisor import EXIT_GAVE_UP, EXIT_USAGE


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with owned(PrivateRedis().start()) as redis_server:
        yield redis_server


def _supervise(app: str, url: str, namespace: str) -> subprocess.CompletedProcess[str]:
    """``supervise`` of 2 workers of ``app`` with a fast restart policy, run to its end."""
    code = (
        "import sys\n"
        "from workers.process import WorkerSettings\n"
        "from workers.supervisor import RestartPolicy, supervise\n"
        f"settings = WorkerSettings(app={app!r}, url={url!r}, namespace={namespace!r})\n"
        "policy = RestartPolicy(max_crashes=3, backoff_initial_s=0.05, backoff_cap_s=0.2)\n"
        "sys.exit(supervise(settings, 2, policy))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          check=False)


def test_supervisor_gives_up_with_a_non_zero_code_when_workers_keep_crashing(
        server: PrivateRedis, namespace: str) -> None:
    done = _supervise("tests.processes.crash_app:registry", server.url, namespace)
    assert done.returncode == EXIT_GAVE_UP, done.stderr[-3000:]
    assert "3 crashes in a row; giving up" in done.stderr


def test_supervised_workers_with_a_bad_app_stop_the_supervisor_with_a_usage_error(
        server: PrivateRedis, namespace: str) -> None:
    done = _supervise("tests.processes.no_such_module:registry", server.url, namespace)
    assert done.returncode == EXIT_USAGE, done.stderr[-3000:]
    assert "cannot import 'tests.processes.no_such_module'" in done.stderr
    assert "starting a replacement" not in done.stderr
