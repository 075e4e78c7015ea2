"""Shared helpers of the integration tests: building workflows, an engine over one namespace,
and waiting on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis import (
    Client,
    EngineConfig,
    Orchestrator,
    QueueProcessor,
    RedisQueue,
    RedisWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    connect,
)

FAST = EngineConfig(
    task_backoff_min_ms=10,
    task_backoff_max_ms=50,
    handler_retry_delay_s=0.05,
    stage_wait_retry_s=0.05,
)
"""Engine timings that keep retries, polls and waits in the tens of milliseconds."""


def fast(**overrides: Any) -> EngineConfig:
    """FAST with some fields changed."""
    values = {**FAST.__dict__, **overrides}
    return EngineConfig(**values)


def make_stage(
    ref_id: str,
    task: str | None = "t",
    requires: Iterable[str] = (),
    context: dict[str, Any] | None = None,
    **fields: Any,
) -> StageExecution:
    """A stage with one task implemented by ``task`` (None: no task) after ``requires``."""
    tasks = [] if task is None else [
        TaskExecution.create(name=f"{ref_id} task", implementing_class=task, stage_start=True, stage_end=True)
    ]
    return StageExecution(
        ref_id=ref_id, type=ref_id, name=ref_id.title(), tasks=tasks,
        requisite_stage_ref_ids=set(requires), context=dict(context or {}), **fields,
    )


def make_workflow(*stages: StageExecution, name: str = "test workflow") -> Workflow:
    return Workflow.create(application="itest", name=name, stages=list(stages))


@dataclass
class Engine:
    """Store, queue, registry, processor and client over one namespace."""

    url: str | None
    namespace: str
    store: RedisWorkflowStore
    queue: RedisQueue
    registry: TaskRegistry
    processor: QueueProcessor
    client: Client
    started: list[QueueProcessor] = field(default_factory=list)

    def start(self, wf: Workflow) -> Workflow:
        Orchestrator(self.queue, store=self.store).start(wf)
        return wf

    def run(self, wf: Workflow, timeout: float = 20.0) -> Workflow:
        """Start ``wf`` and process messages synchronously until none is left."""
        self.start(wf)
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(wf.id)

    def new_processor(self, config: EngineConfig | None = None, **kw: Any) -> QueueProcessor:
        return QueueProcessor(self.queue, store=self.store, task_registry=self.registry,
                              engine_config=config or FAST, **kw)

    @contextmanager
    def threaded(self, concurrency: int = 8) -> Iterator[QueueProcessor]:
        """A background processor with ``concurrency`` handler threads for the block."""
        proc = self.new_processor(concurrency=concurrency)
        proc.start()
        try:
            yield proc
        finally:
            proc.stop(timeout=10)

    def events(self, wf_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        events = self.store.events(wf_id)
        return [e for e in events if event_type is None or e["event_type"] == event_type]


def make_engine(target: tuple[str | None, str], config: EngineConfig | None = None, **kw: Any) -> Engine:
    url, ns = target
    store = RedisWorkflowStore(url, namespace=ns)
    queue = RedisQueue(url, namespace=ns)
    registry = TaskRegistry()
    processor = QueueProcessor(queue, store=store, task_registry=registry, engine_config=config or FAST, **kw)
    return Engine(url, ns, store, queue, registry, processor, connect(url, ns))


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stage_named(wf: Workflow, ref_id: str) -> StageExecution:
    stage = wf.stage_by_ref_id(ref_id)
    assert stage is not None, f"no stage {ref_id!r} in workflow {wf.id}"
    return stage


def count_by_entity(events: list[dict[str, Any]], event_type: str) -> dict[str, int]:
    """How many ``event_type`` events each entity id has."""
    out: dict[str, int] = {}
    for e in events:
        if e["event_type"] == event_type:
            out[e["entity_id"]] = out.get(e["entity_id"], 0) + 1
    return out


def ms(value: int | None) -> int:
    """A timestamp that must be set (start/end times are None until reached)."""
    assert value is not None, "timestamp not set"
    return value
