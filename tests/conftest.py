"""Shared fixtures: real Redis (the shared server, or a private one the suite starts), the
embedded default, and a unique namespace per test whose keys are removed afterwards.

A missing Redis is a failure, never a skip: set STABILIZE_TEST_REDIS_URL to point elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from stabilize_redis.backend.connection import delete_namespace, reset_embedded
from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.support import withdraw_message_type

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_private_redis(port: int, extra: list[str] | None = None, workdir: str | None = None) -> subprocess.Popen[bytes]:
    """Start a redis-server on 127.0.0.1:port and wait until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; the integration tests need a real Redis")
    workdir = workdir or tempfile.mkdtemp(prefix="stz-redis-")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"private redis-server on port {port} did not start")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: STABILIZE_TEST_REDIS_URL, else 127.0.0.1:6379, else a private server."""
    url = os.environ.get("STABILIZE_TEST_REDIS_URL") or DEFAULT_URL
    if _answers(url):
        yield url
        return
    port = free_port()
    proc = start_private_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["redis", "fakeredis"])
def target(request: pytest.FixtureRequest, namespace: str) -> Iterator[tuple[str | None, str]]:
    """(url, namespace) on real Redis and on the embedded fakeredis default."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        forget_backends()
        yield url, namespace
        forget_backends()
        delete_namespace(url, namespace)
    else:
        forget_backends()
        yield None, namespace
        forget_backends()
        reset_embedded(namespace)


@pytest.fixture
def real_target(redis_url: str, namespace: str) -> Iterator[tuple[str, str]]:
    """(url, namespace) on real Redis only."""
    forget_backends()
    yield redis_url, namespace
    forget_backends()
    delete_namespace(redis_url, namespace)


@pytest.fixture(autouse=True)
def _no_accepted_message_types() -> Iterator[None]:
    """A handler a test registers for a type no built-in handler executes makes that type
    pushable in this process; forget it after the test so no other test depends on the order."""
    yield
    withdraw_message_type()
