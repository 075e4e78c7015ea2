"""CLI worker processes for the multi-process tests: each serves a test app module's registry
in the test's own namespace (``STZ_TEST_URL``/``STZ_TEST_NS`` tell the app where to record)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop worker processes: SIGTERM, then SIGKILL those still running after 20 s (a process
    already dead, say SIGKILLed by the test, is left as it is)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@contextmanager
def workers(url: str, ns: str, app: str = "tests.processes.app:registry", count: int = 2, visibility: float = 5.0,
            concurrency: int = 4) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` workers serving ``app`` for the duration of the block, stopped after it
    (``stop``)."""
    procs = [start_worker(url, ns, app, visibility, concurrency) for _ in range(count)]
    try:
        yield procs
    finally:
        stop(procs)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
