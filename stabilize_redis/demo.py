"""``stabilize-redis demo``: a fan-out/fan-in workflow with a transient failure that is retried
and a final stage that reads its upstreams' outputs. Embedded by default; set
STABILIZE_REDIS_URL to run it against a Redis server."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from stabilize_redis.client import connect
from stabilize_redis.config import EngineConfig
from stabilize_redis.errors import TransientError
from stabilize_redis.models import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize_redis.queue.processor import QueueProcessor
from stabilize_redis.tasks import Task, TaskRegistry, TaskResult


class FetchTask(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"source": stage.context["url"], "pixels": 4096})


class ResizeTask(Task):
    """Fails transiently on its first try when the stage asks for it, then succeeds."""

    def execute(self, stage: StageExecution) -> TaskResult:
        tries = int(stage.context.get("tries", 0)) + 1
        if stage.context.get("flaky") and tries == 1:
            raise TransientError("thumbnail service busy", retry_after=0.3, context_update={"tries": tries})
        size = stage.context["size"]
        return TaskResult.success(outputs={"thumbnails": [f"{stage.context['source']}@{size}"],
                                           f"tries_{size}": tries})


class PublishTask(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        thumbs = sorted(stage.context.get("thumbnails", []))
        return TaskResult.success(outputs={"published": thumbs, "count": len(thumbs)})


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    reg.register("fetch", FetchTask)
    reg.register("resize", ResizeTask)
    reg.register("publish", PublishTask)
    return reg


def _stage(ref: str, impl: str, name: str, requires: set[str] | None = None, **context: object) -> StageExecution:
    return StageExecution(
        ref_id=ref, type=impl, name=name, context=dict(context),
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(name=name, implementing_class=impl, stage_start=True, stage_end=True)],
    )


def build_workflow() -> Workflow:
    sizes = ["small", "medium", "large"]
    stages = [_stage("fetch", "fetch", "Fetch image", url="https://example.invalid/cat.png")]
    for size in sizes:
        stages.append(_stage(f"resize_{size}", "resize", f"Resize {size}", {"fetch"}, size=size,
                             flaky=(size == "medium")))
    stages.append(_stage("publish", "publish", "Publish", {f"resize_{s}" for s in sizes}))
    return Workflow.create(application="demo", name="thumbnails", stages=stages)


def main() -> int:
    url = os.environ.get("STABILIZE_REDIS_URL") or None
    namespace = os.environ.get("STABILIZE_NAMESPACE") or f"demo{uuid.uuid4().hex[:8]}"
    client = connect(url, namespace)
    print(f"stabilize-redis demo on {client.backend.target.describe()}")
    processor = None
    if url is None or os.environ.get("STABILIZE_DEMO_INPROCESS", "1") == "1":
        processor = QueueProcessor(client.queue, task_registry=registry(), concurrency=4,
                                   engine_config=EngineConfig(task_backoff_min_ms=200))
        processor.start()
    wf = build_workflow()
    refs = {s.id: s.ref_id for s in wf.stages}
    for s in wf.stages:
        for t in s.tasks:
            refs[t.id] = f"{s.ref_id}/{t.name}"
    client.submit(wf)
    print(f"submitted workflow {wf.id}: fetch -> resize x3 (one flaky) -> publish")
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            events = client.events(wf.id)
            for e in events[seen:]:
                kind = str(e["event_type"])
                entity = refs.get(str(e["entity_id"]), "workflow")
                extra = ""
                data: dict[str, Any] = e.get("data") or {}  # type: ignore[assignment]
                if kind == "task.retried":
                    extra = f" (attempt {data.get('attempt')}: {data.get('error')})"
                elif kind == "stage.completed":  # events carry no outputs: the stage record has them
                    outputs = client.get(wf.id).stage_by_id(str(e["entity_id"])).outputs
                    extra = f" -> {json.dumps(outputs)}"
                print(f"  {kind:<18} {entity}{extra}")
            seen = len(events)
            if any(str(e["event_type"]) in ("workflow.completed", "workflow.failed", "workflow.canceled")
                   for e in events):
                break
            time.sleep(0.05)
        result = client.wait(wf.id, timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if processor is not None:
            processor.stop()
    publish = next(s for s in result.stages if s.ref_id == "publish")
    print(f"workflow {result.status.name}; published: {publish.outputs.get('published')}")
    return 0 if result.status == WorkflowStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
