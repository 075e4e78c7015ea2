"""CLI worker processes for the multi-process tests: each serves a test app module's registry
in the test's own namespace (``STZ_TEST_URL``/``STZ_TEST_NS`` tell the app where to record)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, ns: str, app: str = "tests.processes.app:registry", visibility: float = 5.0,
                 concurrency: int = 4) -> subprocess.Popen[bytes]:
    """One ``stabilize-redis worker`` process serving ``app`` (``module:attribute``)."""
    env = {**os.environ, "STZ_TEST_URL": url, "STZ_TEST_NS": ns, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--app", app, "--url", url, "--namespace", ns,
         "--concurrency", str(concurrency), "--visibility-timeout", str(visibility), "--log-level", "WARNING"],
        cwd=ROOT, env=env)


@contextmanager
def workers(url: str, ns: str, app: str = "tests.processes.app:registry", count: int = 2
            ) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` workers serving ``app`` for the duration of the block; stopped (SIGTERM, then
    SIGKILL after 20 s) after it."""
    procs = [start_worker(url, ns, app) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
