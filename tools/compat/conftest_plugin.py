"""Pytest plugin standing in for stabilize's ``tests/conftest.py``, built on stabilize_redis.

Loaded with ``-p tools.compat.conftest_plugin`` (and ``--noconftest``); importing it installs
the import aliases of ``tools.compat.shim``, so ``from tests.conftest import setup_stabilize``
in stabilize's tests imports this module.

What stabilize's conftest provides, and what it is here:

* ``backend`` — parametrised ``"sqlite"`` and ``"postgres"`` as there (test ids unchanged);
  ``sqlite`` (an in-memory database there) runs on the embedded fakeredis, ``postgres`` on the
  real Redis (``STABILIZE_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).
* ``repository`` / ``queue`` — a ``RedisWorkflowStore`` and a ``RedisQueue`` on one namespace
  unique to the test; its keys are removed afterwards (and only its keys).
* ``file_db_path``, ``file_repository`` / ``file_queue`` — stabilize's file-backed SQLite for
  cross-thread tests; here always the real Redis (for ``postgres`` the same namespace as
  ``repository``, as there; for ``sqlite`` a second namespace).
* ``setup_stabilize(repository, queue, extra_tasks=None)`` — ``(processor, runner,
  task_registry)``: a ``TaskRegistry`` with ``success``/``fail``/``counter`` plus
  ``extra_tasks``, a ``QueueProcessor`` with its built-in handlers (stabilize registers its
  handlers one by one; here they come with the processor) and an ``Orchestrator(queue)``.
  Processors it made are stopped when the test ends.
* ``thread_pool``, ``timing_barrier``, ``stress_test_config`` — as there.

Nothing here changes engine behaviour: only public constructors are called.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stabilize_redis import (
    Orchestrator,
    QueueProcessor,
    RedisQueue,
    RedisWorkflowStore,
    StageExecution,
    Task,
    TaskRegistry,
    TaskResult,
)
from stabilize_redis.backend.connection import delete_namespace, reset_embedded
from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.support import withdraw_message_type
from tools.compat import shim

shim.install()

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: stabilize's backend names -> where they run here (None: the embedded fakeredis).
BACKENDS = ("sqlite", "postgres")


def redis_url() -> str:
    """The real Redis the ``postgres`` parametrisation and the file fixtures use."""
    return os.environ.get("STABILIZE_TEST_REDIS_URL") or DEFAULT_REDIS_URL


# -- stabilize's shared test tasks (same names and results as in its conftest) ----------------


class SuccessTask(Task):
    """Always succeeds with ``{"success": True}``."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"success": True})


class FailTask(Task):
    """Always fails TERMINAL."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.terminal("Task failed intentionally")


class CounterTask(Task):
    """Counts its executions in the class attribute ``counter``."""

    counter: int = 0

    def execute(self, stage: StageExecution) -> TaskResult:
        CounterTask.counter += 1
        return TaskResult.success(outputs={"count": CounterTask.counter})


# -- namespaces --------------------------------------------------------------------------------


class _Namespaces:
    """The namespaces one test opened, removed at its end."""

    def __init__(self) -> None:
        self.opened: list[tuple[str | None, str]] = []

    def open(self, url: str | None, suffix: str = "") -> str:
        namespace = f"stzc{uuid.uuid4().hex[:12]}{suffix}"
        self.opened.append((url, namespace))
        return namespace

    def close(self) -> None:
        forget_backends()
        for url, namespace in self.opened:
            if url is None:
                reset_embedded(namespace)
            else:
                delete_namespace(url, namespace)


_processors: list[QueueProcessor] = []


@pytest.fixture(autouse=True)
def _compat_isolation() -> Iterator[_Namespaces]:
    """Per test: fresh backend cache, namespaces removed, processors from setup_stabilize
    stopped, and message types a test accepted forgotten."""
    namespaces = _Namespaces()
    forget_backends()
    yield namespaces
    while _processors:
        _processors.pop().stop(wait=True, timeout=5.0)
    withdraw_message_type()
    namespaces.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """stabilize's backend parametrisation: ``sqlite`` -> fakeredis, ``postgres`` -> Redis."""
    return str(request.param)


def _url_for(backend: str) -> str | None:
    return None if backend == "sqlite" else redis_url()


@pytest.fixture
def _store_target(backend: str, _compat_isolation: _Namespaces) -> tuple[str | None, str]:
    url = _url_for(backend)
    return url, _compat_isolation.open(url)


@pytest.fixture
def repository(_store_target: tuple[str | None, str]) -> RedisWorkflowStore:
    """The workflow store of this test's namespace."""
    url, namespace = _store_target
    return RedisWorkflowStore(url=url, namespace=namespace)


@pytest.fixture
def queue(_store_target: tuple[str | None, str], repository: RedisWorkflowStore) -> RedisQueue:
    """The queue of the same namespace as ``repository``."""
    url, namespace = _store_target
    return RedisQueue(url=url, namespace=namespace)


@pytest.fixture
def file_db_path(tmp_path: Path) -> Path:
    """A path, as stabilize's fixture gives (nothing is written there by these fixtures)."""
    return tmp_path / "test.db"


@pytest.fixture
def _file_target(
    backend: str, _compat_isolation: _Namespaces, request: pytest.FixtureRequest
) -> tuple[str, str]:
    if backend == "postgres":
        url, namespace = request.getfixturevalue("_store_target")
        return str(url), namespace
    url = redis_url()
    return url, _compat_isolation.open(url, suffix="f")


@pytest.fixture
def file_repository(_file_target: tuple[str, str], file_db_path: Path) -> RedisWorkflowStore:
    """A store on the real Redis (stabilize: file-based SQLite, shared across threads)."""
    url, namespace = _file_target
    return RedisWorkflowStore(url=url, namespace=namespace)


@pytest.fixture
def file_queue(_file_target: tuple[str, str], file_db_path: Path) -> RedisQueue:
    """The queue of ``file_repository``'s namespace."""
    url, namespace = _file_target
    return RedisQueue(url=url, namespace=namespace)


@pytest.fixture
def thread_pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=20)
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def timing_barrier() -> threading.Barrier:
    return threading.Barrier(2)


@pytest.fixture
def stress_test_config() -> dict[str, Any]:
    return {"num_workflows": 100, "num_threads": 10, "timeout_seconds": 30}


def setup_stabilize(
    repository: RedisWorkflowStore,
    queue: RedisQueue,
    extra_tasks: dict[str, type] | None = None,
) -> tuple[QueueProcessor, Orchestrator, TaskRegistry]:
    """``(processor, runner, task_registry)`` as stabilize's helper returns them.

    The registry holds ``success``, ``fail``, ``counter`` and ``extra_tasks``; the processor
    runs the engine's built-in handlers over ``repository``'s namespace; the runner is an
    ``Orchestrator(queue)`` (it only enqueues StartWorkflow, like stabilize's).
    """
    registry = TaskRegistry()
    registry.register("success", SuccessTask)
    registry.register("fail", FailTask)
    registry.register("counter", CounterTask)
    for name, task_class in (extra_tasks or {}).items():
        registry.register(name, task_class)
    processor = QueueProcessor(queue, store=repository, task_registry=registry)
    _processors.append(processor)
    return processor, Orchestrator(queue), registry


__all__ = ["CounterTask", "FailTask", "SuccessTask", "redis_url", "setup_stabilize"]
